"""Map the columns a fitted preprocessing produces back to the raw features they came from.

SHAP explains the final estimator on the *transformed* columns (one-hot columns, scaled numbers ...).
A person reads *raw* features, so each transformed column must belong to exactly one raw feature;
the raw feature's attribution is then the sum of its columns' attributions, which keeps additivity
(the sum over all raw features equals the sum over all columns).

The mapping is read from the fitted objects, never parsed from column names: `ColumnTransformer`'s
`transformers_` and `output_indices_`, `OneHotEncoder`'s `categories_`, `infrequent_categories_` and
`drop_idx_`, selectors' `get_support()`. A step that mixes several inputs into one output column
(e.g. `PolynomialFeatures`, `PCA`) cannot be mapped and raises `UnsupportedTransformerError`
naming the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from explainers.exceptions import UnsupportedTransformerError

__all__ = [
    "column_groups",
    "group_matrix",
    "raw_feature_names",
    "split_pipeline",
    "transformed_sources",
]

# Estimators that map every input column to exactly one output column, in order.
_ONE_TO_ONE = (
    "sklearn.preprocessing.StandardScaler",
    "sklearn.preprocessing.MinMaxScaler",
    "sklearn.preprocessing.MaxAbsScaler",
    "sklearn.preprocessing.RobustScaler",
    "sklearn.preprocessing.QuantileTransformer",
    "sklearn.preprocessing.PowerTransformer",
    "sklearn.preprocessing.Binarizer",
    "sklearn.preprocessing.OrdinalEncoder",
)


def _is(obj: object, dotted: str) -> bool:
    """Return whether `obj` is an instance of the class at `dotted`, without importing its module."""
    import sys

    module, _, name = dotted.rpartition(".")
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls is not None and isinstance(obj, cls)


def split_pipeline(model: Any) -> tuple[Any | None, Any]:
    """Return (preprocessing, final estimator) of a fitted Pipeline, or (None, model) for a bare model."""
    if _is(model, "sklearn.pipeline.Pipeline"):
        steps = [(name, step) for name, step in model.steps if step is not None and step != "passthrough"]
        if not steps:
            raise UnsupportedTransformerError("<pipeline>", model, "the pipeline has no final estimator")
        final = steps[-1][1]
        if len(steps) == 1:
            return None, final
        return model[:-1], final
    return None, model


def raw_feature_names(preprocessor: Any, n_features: int | None = None) -> list[str]:
    """Return the raw input feature names a fitted step expects (x0, x1 ... when fitted without names)."""
    names = getattr(preprocessor, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    n = getattr(preprocessor, "n_features_in_", n_features)
    if n is None:
        raise UnsupportedTransformerError("<input>", preprocessor, "cannot tell how many raw features it takes")
    return [f"x{i}" for i in range(int(n))]


def transformed_sources(preprocessor: Any, raw_features: Sequence[str] | None = None) -> np.ndarray:
    """Return, for each transformed column, the index of the raw feature it comes from."""
    names = _check_raw_names(preprocessor, raw_features)
    sources = _sources(preprocessor, np.arange(len(names), dtype=np.intp), _step_name(preprocessor))
    return np.asarray(sources, dtype=np.intp)


def column_groups(preprocessor: Any, raw_features: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Return {raw feature: indices of its transformed columns} for every raw feature (possibly empty)."""
    names = _check_raw_names(preprocessor, raw_features)
    sources = transformed_sources(preprocessor, names)
    groups: dict[str, list[int]] = {name: [] for name in names}
    for column, source in enumerate(sources.tolist()):
        groups[names[source]].append(column)
    return groups


def group_matrix(preprocessor: Any, raw_features: Sequence[str] | None = None) -> np.ndarray:
    """Return the (n_transformed x n_raw) 0/1 matrix G with shap_values @ G = raw attributions."""
    names = _check_raw_names(preprocessor, raw_features)
    sources = transformed_sources(preprocessor, names)
    return sources_matrix(sources, len(names))


def sources_matrix(sources: np.ndarray, n_raw: int) -> np.ndarray:
    """Return the 0/1 group matrix for a vector of per-column raw sources."""
    matrix = np.zeros((len(sources), n_raw), dtype=np.float64)
    matrix[np.arange(len(sources)), sources] = 1.0
    return matrix


def _check_raw_names(preprocessor: Any, raw_features: Sequence[str] | None) -> list[str]:
    fitted = getattr(preprocessor, "feature_names_in_", None)
    if raw_features is None:
        return raw_feature_names(preprocessor)
    names = [str(n) for n in raw_features]
    if fitted is not None and [str(n) for n in fitted] != names:
        raise ValueError(
            f"raw feature names {names} differ from the names the preprocessing was fitted on {list(fitted)}"
        )
    n_in = getattr(preprocessor, "n_features_in_", None)
    if n_in is not None and int(n_in) != len(names):
        raise ValueError(f"the preprocessing takes {n_in} raw features, {len(names)} names were given")
    return names


def _step_name(step: Any) -> str:
    return type(step).__name__


def _sources(step: Any, sources: np.ndarray, path: str) -> np.ndarray:
    """Return the raw source of each output column of `step`, given the raw source of each input column."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return sources
    if _is(step, "sklearn.pipeline.Pipeline"):
        for name, sub in step.steps:
            sources = _sources(sub, sources, f"{path}.{name}")
        return sources
    if _is(step, "sklearn.compose.ColumnTransformer"):
        return _column_transformer_sources(step, sources, path)
    if _is(step, "sklearn.preprocessing.OneHotEncoder"):
        return _one_hot_sources(step, sources, path)
    if _is(step, "sklearn.preprocessing.KBinsDiscretizer"):
        if step.encode == "ordinal":
            return _same_width(step, sources, path)
        return np.repeat(sources, np.asarray(step.n_bins_, dtype=np.intp))
    if _is(step, "sklearn.impute.SimpleImputer"):
        return _imputer_sources(step, sources, path)
    if _is(step, "sklearn.impute.MissingIndicator"):
        return sources[np.asarray(step.features_, dtype=np.intp)]
    if _is(step, "sklearn.preprocessing.FunctionTransformer"):
        if step.func is None or step.feature_names_out == "one-to-one":
            return _same_width(step, sources, path)
        raise UnsupportedTransformerError(
            path,
            step,
            "a FunctionTransformer with a function must declare feature_names_out='one-to-one' "
            "(each output column computed from the same input column only)",
        )
    if _is(step, "sklearn.feature_selection._base.SelectorMixin") and hasattr(step, "get_support"):
        return sources[np.asarray(step.get_support(indices=True), dtype=np.intp)]
    if any(_is(step, dotted) for dotted in _ONE_TO_ONE):
        return _same_width(step, sources, path)
    raise UnsupportedTransformerError(
        path, step, "only column-wise steps are supported (encoders, scalers, imputers, selectors, passthrough)"
    )


def _same_width(step: Any, sources: np.ndarray, path: str) -> np.ndarray:
    n_in = getattr(step, "n_features_in_", None)
    if n_in is not None and int(n_in) != len(sources):
        raise UnsupportedTransformerError(path, step, f"fitted on {n_in} columns but receives {len(sources)}")
    return sources


def _one_hot_sources(encoder: Any, sources: np.ndarray, path: str) -> np.ndarray:
    categories = encoder.categories_
    if len(categories) != len(sources):
        raise UnsupportedTransformerError(path, encoder, f"fitted on {len(categories)} columns, gets {len(sources)}")
    infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * len(categories)
    drop_idx = getattr(encoder, "drop_idx_", None)
    counts = []
    for i, cats in enumerate(categories):
        n = len(cats)
        if infrequent[i] is not None:
            n = n - len(infrequent[i]) + 1  # the infrequent categories share one column
        if drop_idx is not None and drop_idx[i] is not None:
            n -= 1
        counts.append(n)
    expected = len(encoder.get_feature_names_out())
    if sum(counts) != expected:
        raise UnsupportedTransformerError(
            path, encoder, f"counted {sum(counts)} output columns but the encoder reports {expected}"
        )
    return np.repeat(sources, np.asarray(counts, dtype=np.intp))


def _imputer_sources(imputer: Any, sources: np.ndarray, path: str) -> np.ndarray:
    # get_feature_names_out() tells which inputs survived (all-missing columns are dropped) and which
    # missing-indicator columns were appended; without fitted names scikit-learn calls inputs x0, x1 ...
    fitted = getattr(imputer, "feature_names_in_", None)
    names_in = [str(n) for n in fitted] if fitted is not None else [f"x{i}" for i in range(len(sources))]
    if len(names_in) != len(sources):
        raise UnsupportedTransformerError(path, imputer, f"fitted on {len(names_in)} columns, gets {len(sources)}")
    position = {name: i for i, name in enumerate(names_in)}
    prefix = "missingindicator_"
    out = []
    for name in (str(n) for n in imputer.get_feature_names_out()):
        if name in position:
            out.append(sources[position[name]])
        elif name.startswith(prefix) and name[len(prefix) :] in position:
            out.append(sources[position[name[len(prefix) :]]])
        else:
            raise UnsupportedTransformerError(path, imputer, f"unexpected output column {name!r}")
    return np.asarray(out, dtype=np.intp)


def _column_indices(ct: Any, columns: Any, n_in: int, path: str) -> np.ndarray:
    """Resolve a ColumnTransformer column specification to positional input indices."""
    names = getattr(ct, "feature_names_in_", None)
    lookup = {str(n): i for i, n in enumerate(names)} if names is not None else {}
    if isinstance(columns, slice):
        if isinstance(columns.start, str) or isinstance(columns.stop, str):
            start = lookup[columns.start] if columns.start is not None else 0
            stop = lookup[columns.stop] + 1 if columns.stop is not None else n_in  # label slices include the end
            return np.arange(start, stop, dtype=np.intp)
        return np.arange(n_in, dtype=np.intp)[columns]
    if isinstance(columns, (str, int, np.integer)):
        columns = [columns]
    columns = list(columns)
    if not columns:
        return np.zeros(0, dtype=np.intp)
    if all(isinstance(c, (bool, np.bool_)) for c in columns):
        return np.flatnonzero(np.asarray(columns, dtype=bool)).astype(np.intp)
    out = []
    for c in columns:
        if isinstance(c, str):
            if c not in lookup:
                raise UnsupportedTransformerError(path, ct, f"column {c!r} is not among the fitted input names")
            out.append(lookup[c])
        else:
            out.append(int(c) % n_in)
    return np.asarray(out, dtype=np.intp)


def _column_transformer_sources(ct: Any, sources: np.ndarray, path: str) -> np.ndarray:
    n_in = len(sources)
    slices = ct.output_indices_
    width = max((s.stop for s in slices.values()), default=0)
    out = np.full(width, -1, dtype=np.intp)
    for name, transformer, columns in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        idx = _column_indices(ct, columns, n_in, f"{path}.{name}")
        block = slices[name]
        if len(idx) == 0:
            continue
        sub = _sources(transformer, sources[idx], f"{path}.{name}")
        if len(sub) != block.stop - block.start:
            raise UnsupportedTransformerError(
                f"{path}.{name}", transformer, f"maps to {len(sub)} columns but occupies {block.stop - block.start}"
            )
        out[block] = sub
    if (out < 0).any():
        raise UnsupportedTransformerError(path, ct, "some output columns could not be traced to an input column")
    return out
