"""A compiled, numpy-only copy of a fitted preprocessing, for the per-decision hot path.

scikit-learn's `ColumnTransformer.transform` on a one-row DataFrame costs about 5 ms, ten times the
TreeSHAP call it feeds. For the common column-wise steps (one-hot and ordinal encoders, scalers,
numeric/constant imputers, passthrough and drop, nested pipelines) this module builds an equivalent
function from the fitted attributes, using the fitted encoder itself as the oracle for its
category -> column mapping (so `drop`, infrequent categories and missing values behave exactly as in
scikit-learn). The explainer uses it only after checking that it reproduces scikit-learn's output
bit for bit on the background data, and any value it is not sure about (an unseen category with
`handle_unknown="error"` or `"warn"`, `pd.NA`, an unhashable value) makes it give up on that call so
scikit-learn transforms the rows instead.

`compile_variants` transforms many variants of one row (the recourse search's candidates: the person's row
with one or two features changed) by transforming each distinct changed value once: every compiled step
but a FunctionTransformer's own function computes each output column from one input column.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from explainers.exceptions import UnsupportedTransformerError
from explainers.grouping import _column_indices, _is, _one_hot_sources, transformed_sources

Op = Callable[[np.ndarray], np.ndarray]


class NotCompilable(Exception):
    """The preprocessing contains a step this module does not reproduce."""


class GiveUp(Exception):
    """These rows hold a value the compiled transform is not sure about; use scikit-learn."""


_FALLBACK = object()


def compile_transform(preprocessor: Any) -> Op:
    """Return a function mapping a 2-D object array of raw values to the transformed float64 matrix."""
    op = _compile(preprocessor)

    def transform(values: np.ndarray) -> np.ndarray:
        try:
            out = op(values)
        except (GiveUp, TypeError, ValueError) as exc:  # TypeError/ValueError: a value we cannot convert
            raise GiveUp(str(exc)) from exc
        return np.asarray(out, dtype=np.float64)

    return transform


def compile_variants(preprocessor: Any) -> VariantTransform | None:
    """Return the variant transform of a fitted preprocessing, or None when a step may mix columns."""
    if not _column_wise(preprocessor):
        return None
    try:
        sources = transformed_sources(preprocessor)
    except (UnsupportedTransformerError, ValueError):  # not traced to its inputs: rows are transformed whole
        return None
    return VariantTransform(compile_transform(preprocessor), sources)


class VariantTransform:
    """Transform variants of one row, each with a few columns changed, as `compile_transform` transforms them.

    A variant's transformed row is the base row's, except the output columns of each changed input column,
    which are computed from that column alone: so one small matrix holds every column's candidate values at
    once (row k: each column's k-th value, or the base's), and each variant takes its changed columns'
    outputs from the row of its value: the same numbers as transforming every variant, computed on as many
    rows as the longest column's values. Those rows hold the variants' raw values, so this gives up
    (`GiveUp`) when transforming the variants would (and on a value no variant takes)."""

    def __init__(self, transform: Op, sources: np.ndarray) -> None:
        self._transform = transform
        self._outputs = {int(j): np.flatnonzero(sources == j) for j in np.unique(sources)}
        self._dropped = np.zeros(0, dtype=np.intp)

    def __call__(self, base: np.ndarray, size: int,
                 changes: Sequence[tuple[int, Sequence[Any], np.ndarray, np.ndarray]]) -> np.ndarray:
        """The transformed rows: `size` copies of `base` (raw values) where, for each (column, values, rows, codes)
        of `changes` (one entry per column), row ``rows[i]`` takes ``values[codes[i]]`` in that column."""
        raw = np.empty((1 + max((len(values) for _, values, _, _ in changes), default=0), len(base)), dtype=object)
        raw[:] = base
        for j, values, _, _ in changes:
            for k, value in enumerate(values, start=1):
                raw[k, j] = value
        small = self._transform(raw)
        out = np.repeat(small[:1], size, axis=0)
        for j, _, rows, codes in changes:
            columns = self._outputs.get(j, self._dropped)
            out[rows[:, None], columns] = small[(codes + 1)[:, None], columns]
        return out


def _column_wise(step: Any) -> bool:
    """Whether every output column of the compiled `step` is computed from one input column only."""
    if _is(step, "sklearn.pipeline.Pipeline"):
        return all(_column_wise(sub) for _, sub in step.steps)
    if _is(step, "sklearn.compose.ColumnTransformer"):
        return all(_column_wise(transformer) for _, transformer, _ in step.transformers_)
    if _is(step, "sklearn.preprocessing.FunctionTransformer"):
        return step.func is None
    return True  # encoders, scalers, imputers, passthrough, drop: column by column


def _compile(step: Any) -> Op:
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return _identity
    if _is(step, "sklearn.pipeline.Pipeline"):
        ops = [_compile(sub) for _, sub in step.steps]
        return _chain(ops)
    if _is(step, "sklearn.compose.ColumnTransformer"):
        return _column_transformer(step)
    if _is(step, "sklearn.preprocessing.OneHotEncoder"):
        return _one_hot(step)
    if _is(step, "sklearn.preprocessing.OrdinalEncoder"):
        return _ordinal(step)
    if _is(step, "sklearn.preprocessing.StandardScaler"):
        return _standard_scaler(step)
    if _is(step, "sklearn.preprocessing.MinMaxScaler"):
        return _min_max_scaler(step)
    if _is(step, "sklearn.impute.SimpleImputer"):
        return _simple_imputer(step)
    if _is(step, "sklearn.preprocessing.FunctionTransformer"):
        return _function(step)
    raise NotCompilable(type(step).__name__)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _chain(ops: Sequence[Op]) -> Op:
    def run(x: np.ndarray) -> np.ndarray:
        for op in ops:
            x = op(x)
        return x

    return run


def _float(x: np.ndarray) -> np.ndarray:
    # An object value numpy cannot convert (a string, pd.NA) raises TypeError/ValueError -> GiveUp.
    return x if x.dtype == np.float64 else x.astype(np.float64)


def _column_transformer(ct: Any) -> Op:
    n_in = int(ct.n_features_in_)
    slices = ct.output_indices_
    width = max((s.stop for s in slices.values()), default=0)
    branches: list[tuple[np.ndarray, slice, Op]] = []
    for name, transformer, columns in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        idx = _column_indices(ct, columns, n_in, name)
        if len(idx) == 0:
            continue
        branches.append((idx, slices[name], _compile(transformer)))

    def run(x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], width), dtype=np.float64)
        for idx, block, op in branches:
            out[:, block] = _float(np.asarray(op(x[:, idx])))
        return out

    return run


def _probe_frame(encoder: Any, column: int, values: Sequence[Any]) -> Any:
    """Return encoder input whose `column` runs through `values`, other columns fixed at a known category."""
    import pandas as pd

    n = len(values)
    data = {}
    names = getattr(encoder, "feature_names_in_", None)
    for j, cats in enumerate(encoder.categories_):
        if j == column:
            col = np.empty(n, dtype=cats.dtype if cats.dtype != object else object)
            col[:] = values
        else:
            col = np.repeat(cats[:1], n)
        data[str(names[j]) if names is not None else j] = col
    frame = pd.DataFrame(data)
    return frame if names is not None else frame.to_numpy()


def _is_missing(v: Any) -> bool:
    # NaN only: scikit-learn keeps None apart from NaN, so an unseen None is left to scikit-learn.
    return isinstance(v, (float, np.floating)) and bool(np.isnan(v))


def _unknown_value(cats: np.ndarray) -> Any:
    if cats.dtype == object:
        if not all(isinstance(c, str) or c is None or _is_missing(c) for c in cats):
            raise NotCompilable("mixed-type categories")
        return "\x00explainers-unseen-category\x00"
    finite = cats[~np.isnan(cats.astype(np.float64))]
    return (finite.max() + 1) if len(finite) else 0


class _Lookup:
    """Map raw category values to codes exactly as one fitted encoder column does."""

    def __init__(self, table: dict[Any, Any], missing: Any, unknown: Any) -> None:
        self.table = table
        self.missing = missing  # code of a missing value, or _FALLBACK
        self.unknown = unknown  # code of an unseen value, or _FALLBACK

    def code(self, v: Any) -> Any:
        code = self.table.get(v, _FALLBACK)
        if code is _FALLBACK:
            if v is None:
                raise GiveUp("None is not a fitted category")
            code = self.missing if _is_missing(v) else self.unknown
            if code is _FALLBACK:
                raise GiveUp(f"value {v!r} is unseen or ambiguous")
        return code


def _codes(lookup: _Lookup, column: list[Any]) -> list[Any]:
    """`lookup.code` of every value of one column: one dict look-up each, the fallbacks only where needed
    (column by column: the recourse search transforms hundreds of rows per decision)."""
    get = lookup.table.get
    codes = [get(v, _FALLBACK) for v in column]
    if _FALLBACK in codes:  # identity first: codes are ints (an int never equals this sentinel)
        codes = [lookup.code(v) if c is _FALLBACK else c for c, v in zip(codes, column, strict=True)]
    return codes


def _encoder_lookups(encoder: Any, read: Callable[[np.ndarray, int], np.ndarray]) -> list[_Lookup]:
    """Probe a fitted encoder column by column; `read(output, column)` returns each probe row's code."""
    lookups = []
    for j, cats in enumerate(encoder.categories_):
        values = list(cats)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                codes = read(_dense(encoder.transform(_probe_frame(encoder, j, values))), j)
            except (ValueError, TypeError, Warning) as exc:  # it refused its own categories: do not compile
                raise NotCompilable(f"probe of column {j} failed: {exc}") from exc
        table: dict[Any, Any] = {}
        missing: Any = _FALLBACK
        for v, code in zip(values, codes.tolist(), strict=True):
            if _is_missing(v):
                missing = code
            else:
                table[v] = code  # includes None when None itself is a fitted category
        unknown: Any = _FALLBACK
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                unknown = read(_dense(encoder.transform(_probe_frame(encoder, j, [_unknown_value(cats)]))), j)[0]
            except NotCompilable:
                raise
            except (ValueError, TypeError, Warning):  # an error or a warning: scikit-learn must see those rows
                unknown = _FALLBACK
        lookups.append(_Lookup(table, missing, unknown))
    return lookups


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def _one_hot(encoder: Any) -> Op:
    sources = _one_hot_sources(encoder, np.arange(len(encoder.categories_)), "one-hot")
    width = len(sources)
    offsets = np.searchsorted(sources, np.arange(len(encoder.categories_)))
    counts = np.bincount(sources, minlength=len(encoder.categories_))

    def read(out: np.ndarray, j: int) -> np.ndarray:
        block = out[:, offsets[j] : offsets[j] + counts[j]]
        if ((block != 0) & (block != 1)).any() or (block.sum(axis=1) > 1).any():
            raise NotCompilable("one-hot block is not 0/1 with at most one hot column")
        hot = np.where(block.any(axis=1), block.argmax(axis=1), -1)
        return np.where(hot >= 0, hot + offsets[j], -1)

    lookups = _encoder_lookups(encoder, read)

    def run(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], width), dtype=np.float64)
        columns = [_codes(lookup, column) for lookup, column in zip(lookups, x.T.tolist(), strict=False)]
        codes = np.array(columns, dtype=np.intp).reshape(len(columns), x.shape[0])
        hot = codes >= 0  # every column's hot cells set in one assignment (a call per column costs more)
        out[np.broadcast_to(np.arange(x.shape[0]), codes.shape)[hot], codes[hot]] = 1.0
        return out

    return run


def _ordinal(encoder: Any) -> Op:
    lookups = _encoder_lookups(encoder, lambda out, j: out[:, j])

    def run(x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], len(lookups)), dtype=np.float64)
        for j, (lookup, column) in enumerate(zip(lookups, x.T.tolist(), strict=False)):
            out[:, j] = _codes(lookup, column)
        return out

    return run


def _standard_scaler(scaler: Any) -> Op:
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None

    def run(x: np.ndarray) -> np.ndarray:
        x = np.array(_float(x), dtype=np.float64, copy=True)
        if mean is not None:
            x -= mean
        if scale is not None:
            x /= scale
        return x

    return run


def _min_max_scaler(scaler: Any) -> Op:
    scale, minimum, clip, (low, high) = scaler.scale_, scaler.min_, scaler.clip, scaler.feature_range

    def run(x: np.ndarray) -> np.ndarray:
        x = np.array(_float(x), dtype=np.float64, copy=True)
        x *= scale
        x += minimum
        if clip:
            np.clip(x, low, high, out=x)
        return x

    return run


def _simple_imputer(imputer: Any) -> Op:
    if imputer.add_indicator:
        raise NotCompilable("missing indicator")
    statistics = np.asarray(imputer.statistics_)
    missing_values = imputer.missing_values
    numeric = statistics.dtype != object
    if numeric and np.isnan(statistics.astype(np.float64)).any() and not imputer.keep_empty_features:
        raise NotCompilable("all-missing columns are dropped")
    nan_marker = _is_missing(missing_values)

    def run(x: np.ndarray) -> np.ndarray:
        if numeric:
            x = np.array(_float(x), dtype=np.float64, copy=True)
            mask = np.isnan(x) if nan_marker else (x == missing_values)
            return np.where(mask, statistics, x)
        x = np.array(x, dtype=object, copy=True)
        for j in range(x.shape[1]):
            for i, v in enumerate(x[:, j].tolist()):
                if (nan_marker and _is_missing(v)) or (not nan_marker and v == missing_values):
                    x[i, j] = statistics[j]
        return x

    return run


def _function(transformer: Any) -> Op:
    if transformer.func is None:
        return (lambda x: _float(x)) if transformer.validate else _identity
    if transformer.feature_names_out != "one-to-one":
        raise NotCompilable("a FunctionTransformer that is not declared one-to-one")
    func, kwargs = transformer.func, dict(transformer.kw_args or {})

    # The function sees a float array here instead of a DataFrame; the explainer keeps this compiled
    # form only if it reproduces scikit-learn's output on the background exactly.
    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(func(_float(x), **kwargs))

    return run
