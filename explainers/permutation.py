"""Model-agnostic SHAP for anything that gives a probability: shap's Permutation explainer on raw features.

The model is a plain callable ``f(raw_dataframe) -> probability of the positive class`` or any
classifier with ``predict_proba`` (a Pipeline included). Players are the *raw* features, so no
grouping is needed: a categorical feature is masked as one unit. Categorical (string, boolean,
category-dtype) columns are encoded as integer codes for shap's Independent masker and decoded back to
their original values and dtypes before every model call; categories first seen in the explained rows
are added per call, never to the fitted state.

Output space: probability only. The baseline is the background set (at most `background_size` rows,
sampled with `random_state`); the base value is the mean model output over it.

Permutation SHAP with antithetic permutations is additive by construction: every forward pass over a
permutation telescopes to f(x) - f(background). The explanation reports the error it measures against
a separate call of the model on the row. The attributions themselves are estimates whose accuracy grows
with `max_evals` (model evaluations per row, each over all background rows).

Determinism: shap draws permutations from numpy's *global* random state. Each row is explained after
seeding it with `random_state`, so a row's explanation does not depend on the other rows in the call;
the caller's global random state is saved and restored, and a lock serialises these sections between
threads of this process (code outside this library that uses the global state concurrently can still
interleave with it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from explainers.base import (
    BaseExplainer,
    RawExplanation,
    Rows,
    as_frame,
    import_shap,
    python_scalar,
    resolve_positive_class,
    sample_rows,
    select_columns,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PermutationExplainer"]

_GLOBAL_RANDOM_STATE = threading.Lock()


class PermutationExplainer(BaseExplainer):
    """Explain any probability model with shap's Permutation explainer over an Independent masker."""

    name = "permutation"
    method = "permutation_shap"
    exact = False

    def __init__(
        self,
        model: Any,
        *,
        output_space: str = "probability",
        positive_class: Any = None,
        max_evals: int = 500,
        background_size: int | None = 100,
        random_state: int = 0,
    ) -> None:
        self.model = model
        self.output_space = output_space
        self.positive_class = positive_class
        self.max_evals = max_evals
        self.background_size = background_size
        self.random_state = random_state

    @classmethod
    def why_unsupported(cls, model: Any) -> str | None:
        """Return why the model cannot be called for probabilities, or None when it can."""
        if hasattr(model, "predict_proba") or callable(model):
            return None
        return f"{type(model).__name__} has no predict_proba and is not callable"

    @classmethod
    def output_spaces_for(cls, model: Any) -> tuple[str, ...]:
        """Return ("probability",): the model is only ever asked for probabilities."""
        return ("probability",)

    def fit(self, background_raw: pd.DataFrame) -> PermutationExplainer:
        """Sample and encode the background; resolve the positive class."""
        import pandas as pd

        self._check_model()
        shap = import_shap()
        self._is_estimator = hasattr(self.model, "predict_proba")
        fitted = getattr(self.model, "feature_names_in_", None) if self._is_estimator else None
        names = [str(n) for n in fitted] if fitted is not None else [str(c) for c in background_raw.columns]
        background = sample_rows(select_columns(background_raw, names), self.background_size, self.random_state)
        if len(background) == 0:
            raise ValueError("the background data has no rows")
        if self.max_evals < 2 * len(names) + 1:
            raise ValueError(f"max_evals={self.max_evals} is below 2 * n_features + 1 = {2 * len(names) + 1}")
        if self._is_estimator:
            self.positive_class_, self.class_index_ = resolve_positive_class(self.model, self.positive_class)
        else:
            self.positive_class_, self.class_index_ = python_scalar(self.positive_class), None
        self._labels = list(background.columns)  # the model gets the caller's own column labels back
        self.dtypes_ = background.dtypes.copy()
        self.categories_: dict[str, pd.Index] = {}
        for name, label in zip(names, background.columns, strict=True):
            column = background[label]
            if _is_numeric(column):
                continue
            _, uniques = pd.factorize(column.astype(object), use_na_sentinel=False)
            self.categories_[name] = pd.Index(np.asarray(uniques, dtype=object), dtype=object)
        self.feature_names_ = names
        self.background_codes_, _ = self._encode(background)
        self.background_size_ = len(background)
        self.shap_version_ = str(shap.__version__)
        self._masker = shap.maskers.Independent(self.background_codes_, max_samples=len(self.background_codes_))
        self.base_value_ = float(np.mean(self._predict(background)))
        return self

    def explain(self, rows_raw: Rows) -> list[RawExplanation]:
        """Explain each row with a freshly seeded permutation sequence; report the measured additivity error."""
        shap = import_shap()
        self._check_fitted()
        rows = as_frame(rows_raw, self.feature_names_)
        if len(rows) == 0:
            return []
        codes, tables = self._encode(rows)
        f = self._model_function(tables)
        n, m = codes.shape
        values = np.zeros((n, m), dtype=np.float64)
        bases = np.zeros(n, dtype=np.float64)
        with _GLOBAL_RANDOM_STATE:
            saved = np.random.get_state()
            try:
                explainer = shap.PermutationExplainer(
                    f, self._masker, feature_names=self.feature_names_, seed=self.random_state
                )
                for i in range(n):
                    np.random.seed(self.random_state)
                    result = explainer(codes[i : i + 1], max_evals=self.max_evals, silent=True)
                    values[i] = np.asarray(result.values, dtype=np.float64).reshape(m)
                    bases[i] = float(np.asarray(result.base_values, dtype=np.float64).ravel()[0])
            finally:
                np.random.set_state(saved)
        output = np.asarray(f(codes), dtype=np.float64)
        error = np.abs(bases + values.sum(axis=1) - output)
        return self._package(values, bases, output, error)

    # -- encoding ----------------------------------------------------------------------------------

    def _encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Return (float code matrix, per-column decode tables incl. categories new in these rows)."""
        import pandas as pd

        codes = np.empty((len(frame), len(self.feature_names_)), dtype=np.float64)
        tables: list[np.ndarray | None] = []
        for j, name in enumerate(self.feature_names_):
            column = frame.iloc[:, j]
            known = self.categories_.get(name)
            if known is None:
                codes[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
                tables.append(None)
                continue
            raw = column.to_numpy(dtype=object)
            index = known.get_indexer(raw)
            if (index < 0).any():
                known = known.append(pd.Index(raw[index < 0], dtype=object).unique())
                index = known.get_indexer(raw)
            codes[:, j] = index
            tables.append(np.asarray(known, dtype=object))
        return codes, tables

    def _decode(self, codes: np.ndarray, tables: list[np.ndarray | None]) -> pd.DataFrame:
        import pandas as pd

        data = {}
        for j, label in enumerate(self._labels):
            table = tables[j]
            data[label] = codes[:, j] if table is None else table[codes[:, j].astype(np.intp)]
        frame = pd.DataFrame(data)
        changed = {label: t for label, t in self.dtypes_.items() if frame[label].dtype != t}
        return frame.astype(changed) if changed else frame

    def _predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self._is_estimator:
            return np.asarray(self.model.predict_proba(frame), dtype=np.float64)[:, self.class_index_]
        out = np.asarray(self.model(frame), dtype=np.float64)
        if out.ndim != 1 or len(out) != len(frame):
            raise ValueError(
                f"the model callable must return one probability per row (shape ({len(frame)},)), got {out.shape}"
            )
        return out

    def _model_function(self, tables: list[np.ndarray | None]) -> Callable[[np.ndarray], np.ndarray]:
        def f(codes: np.ndarray) -> np.ndarray:
            return self._predict(self._decode(codes, tables))

        return f


def _is_numeric(column: pd.Series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return bool(is_numeric_dtype(column.dtype) and not is_bool_dtype(column.dtype))
