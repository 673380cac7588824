"""Exact interventional LinearSHAP for linear classifiers, summed back to raw features.

For a linear margin f(x) = w.x + b and an independent (interventional) background, the SHAP value of
column j is w_j (x_j - mean_j) and the base value is w.mean + b: the mean margin over the background.
The game is additive over columns, so the Shapley value of a raw feature as ONE player (all its
encoded columns taken together from the person or the background row) is exactly the sum over its
columns, sum_{c in g} w_c (x_c - mean_c): for linear models the per-column sum is already the raw
feature's Shapley value (checked against enumeration of all coalitions in the tests).

Output space: ``"log_odds"`` only - the decision-function margin, which for logistic models
(LogisticRegression, SGDClassifier(loss="log_loss")) is the log-odds of the positive class and for
other linear classifiers (LinearSVC, RidgeClassifier ...) is their signed distance. Probability is the
logistic function of that margin and is *not* additive over features, so ``"probability"`` raises
`UnsupportedOutputSpaceError` rather than silently changing the space the person is told about; use
``output_space="log_odds"``, or choose the model-agnostic ``"permutation"`` explainer to explain the
probability approximately.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explainers.base import ExactExplainer, import_shap
from explainers.grouping import split_pipeline

__all__ = ["LinearExplainer"]


class LinearExplainer(ExactExplainer):
    """Explain binary linear classifiers exactly in their margin (log-odds) space."""

    name = "linear"
    method = "linear_shap_interventional"

    def __init__(
        self,
        model: Any,
        *,
        output_space: str = "log_odds",
        positive_class: Any = None,
        background_size: int | None = None,
        random_state: int = 0,
        tolerance: float = 1e-6,
    ) -> None:
        super().__init__(
            model,
            output_space=output_space,
            positive_class=positive_class,
            background_size=background_size,
            random_state=random_state,
            tolerance=tolerance,
        )

    @classmethod
    def why_unsupported(cls, model: Any) -> str | None:
        """Return why LinearSHAP cannot explain `model`, or None when it can."""
        preprocessor, estimator = split_pipeline(model)
        name = type(estimator).__name__
        if not (hasattr(estimator, "coef_") and hasattr(estimator, "intercept_")):
            return f"{name} has no coef_/intercept_ (not a fitted linear model)"
        if not hasattr(estimator, "decision_function"):
            return f"{name} has no decision_function"
        classes = getattr(estimator, "classes_", None)
        if classes is None or len(classes) != 2:
            return f"{name} is not a fitted binary classifier"
        coef = np.asarray(estimator.coef_.toarray() if hasattr(estimator.coef_, "toarray") else estimator.coef_)
        if coef.ndim == 2 and coef.shape[0] != 1:
            return f"{name} has {coef.shape[0]} coefficient rows; only one margin is supported"
        return cls._why_preprocessing_unsupported(preprocessor)

    @classmethod
    def output_spaces_for(cls, model: Any) -> tuple[str, ...]:
        """Return ("log_odds",): a linear model is additive in its margin only."""
        return ("log_odds",)

    @classmethod
    def _output_space_hint(cls, output_space: str) -> str:
        if output_space == "probability":
            return (
                "the logistic of a linear margin is not additive over features; use output_space='log_odds' "
                "(exact) or method='permutation' (approximate, in probability)"
            )
        return super()._output_space_hint(output_space)

    def _build(self, estimator: Any, background: np.ndarray) -> tuple[Any, float]:
        shap = import_shap()
        self._sign = -1.0 if self.class_index_ == 0 else 1.0
        masker = shap.maskers.Independent(background, max_samples=len(background))  # keep every row
        explainer = shap.LinearExplainer(estimator, masker)
        base = float(np.asarray(explainer.expected_value, dtype=np.float64).ravel()[0])
        return explainer, self._sign * base

    def _shap_values(self, transformed: np.ndarray) -> np.ndarray:
        return self._sign * np.asarray(self.shap_explainer_.shap_values(transformed), dtype=np.float64)

    def _null_players(self, transformed: np.ndarray) -> np.ndarray:
        """A raw feature is null for a row when every column of it with a non-zero coefficient holds the
        row's value in every background row (a feature the model ignores is null for everyone)."""
        coef = np.asarray(self._estimator.coef_.toarray() if hasattr(self._estimator.coef_, "toarray")
                          else self._estimator.coef_, dtype=np.float64).ravel()
        used = coef != 0.0
        background = self.background_transformed_
        nulls = np.empty((transformed.shape[0], len(self.feature_names_)), dtype=bool)
        for g in range(len(self.feature_names_)):
            columns = (self.sources_ == g) & used
            nulls[:, g] = (background[None, :, columns] == transformed[:, None, columns]).all(axis=(1, 2))
        return nulls

    def _model_output(self, transformed: np.ndarray) -> np.ndarray:
        margin = self._estimator.decision_function(self._estimator_input(transformed))
        return self._sign * np.asarray(margin, dtype=np.float64).ravel()
