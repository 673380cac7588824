"""Behaviour shared by adapters that hold a fitted scikit-learn classifier or Pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gateway.adapters.base import AdapterError, NativeModel


class SklearnClassifierAdapter:
    """Score with predict_proba and report the probability of the manifest's positive class."""

    kind = "sklearn"

    def __init__(self, model: Any, *, positive_class: Any, feature_names: list[str]) -> None:
        # positive_class None: a regression model, scored by its predicted value (a regression policy).
        self.regression = positive_class is None
        if self.regression:
            if not hasattr(model, "predict") or hasattr(model, "predict_proba"):
                raise AdapterError(f"{type(model).__name__} is not a regressor: a regression policy needs a model "
                                   "that predicts a value (and no class probabilities)")
            classes: list[Any] = []
            matches = [0]
        else:
            if not hasattr(model, "predict_proba"):
                raise AdapterError(f"{type(model).__name__} has no predict_proba: the gateway needs a probabilistic "
                                   "classifier (or a regression policy for a regressor)")
            classes = list(getattr(model, "classes_", []))
            matches = [i for i, c in enumerate(classes) if c == positive_class or str(c) == str(positive_class)]
            if len(matches) != 1:
                raise AdapterError(f"positive_class {positive_class!r} is not one of the model's classes {classes}")
        expected = getattr(model, "feature_names_in_", None)
        if expected is not None:
            missing = sorted(set(expected) - set(feature_names))
            extra = sorted(set(feature_names) - set(expected))
            if missing or extra:
                raise AdapterError(
                    f"the manifest's features do not match the model's: missing {missing}, not used by the model {extra}"
                )
        self._model = model
        self._index = matches[0]
        self._classes = classes
        self.positive_class = classes[self._index] if classes else None
        self.feature_names = list(feature_names)

    @property
    def classes(self) -> list[Any]:
        return list(self._classes)

    def probabilities(self, rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(self._model.predict_proba(rows[self.feature_names]), dtype=float)

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        if self.regression:
            return np.asarray(self._model.predict(rows[self.feature_names]), dtype=float).ravel()
        proba = self._model.predict_proba(rows[self.feature_names])
        return np.asarray(proba[:, self._index], dtype=float)

    def describe(self) -> dict[str, Any]:
        steps = getattr(self._model, "steps", None)
        estimator = steps[-1][1] if steps else self._model
        return {
            "kind": self.kind,
            "estimator": f"{type(estimator).__module__}.{type(estimator).__name__}",
            "pipeline": [name for name, _ in steps] if steps else None,
            "classes": [str(c) for c in self._classes],
            "positive_class": str(self.positive_class) if self.positive_class is not None else None,
        }

    def native(self) -> NativeModel:
        steps = getattr(self._model, "steps", None)
        if steps:
            preprocessor = self._model[:-1] if len(steps) > 1 else None
            estimator = steps[-1][1]
        else:
            preprocessor, estimator = None, self._model
        return NativeModel(self._model, preprocessor, estimator, self.positive_class)
