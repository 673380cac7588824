"""Exact interventional TreeSHAP for tree ensembles, with each raw feature as one player.

The baseline is the background set (transformed by the model's own preprocessing), so the base value
is the mean model output over those rows - the baseline the person is told about.

Players are the *raw* features: a categorical feature one-hot encoded into k columns is one player,
its k columns taken together from the person or from a background row (explainers._grouped_tree walks
the trees with grouped features, compiled with numba). This is the Shapley value of the raw feature;
the sum of the Shapley values of its columns (what shap gives per column) is additive too, but it is
a different number (the columns of one feature are treated as separate players that can be mixed).

Methods recorded (``RawExplanation.method``) and what the number is:

- ``tree_shap_interventional_grouped``: the exact interventional Shapley value of each raw feature,
  in the raw margin (log-odds) of gradient boosting (GradientBoosting, HistGradientBoosting, LightGBM;
  binary) or in the probability of a forest / single tree (RandomForest, ExtraTrees, DecisionTree;
  which is what their trees average). Checked against brute-force enumeration of all coalitions.
- ``tree_shap_interventional_grouped_rescaled``: boosting explained in ``"probability"``. The exact
  grouped values of the margin are rescaled per background row r by
  (p(x) - p(r)) / (m(x) - m(r)) and averaged: additive to the probability exactly, but an
  approximation of the Shapley value of the probability game (the logistic link is not additive).
- ``tree_shap_interventional_column_sum`` (+ ``_rescaled``): models whose trees are not flattened here
  (XGBoost, LightGBM with categorical splits, HistGradientBoosting with its own categorical
  preprocessing): shap's TreeExplainer per transformed column, summed per raw feature. Additive, but
  the sum of the column values, not the raw feature's Shapley value.

A forest's log-odds is not a sum over its trees, so ``"log_odds"`` is refused for forests.
Attributions point toward `positive_class` (default: the second of two classes in ``classes_``).

Gradient-boosted regressors (LightGBM's LGBMRegressor, XGBoost's XGBRegressor, identity-link objectives)
are explained in ``"value"``: the model's own prediction, in its units, which is the sum of its leaves -
so the same exact interventional TreeSHAP, with no link to rescale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from explainers import _grouped_tree
from explainers.base import ExactExplainer, import_shap
from explainers.grouping import _is, split_pipeline

__all__ = ["TreeExplainer"]

_BOOSTED = (
    "sklearn.ensemble.GradientBoostingClassifier",
    "sklearn.ensemble.HistGradientBoostingClassifier",
    "xgboost.XGBClassifier",
    "lightgbm.LGBMClassifier",
)
_REGRESSORS = (
    "xgboost.XGBRegressor",
    "lightgbm.LGBMRegressor",
)
_FORESTS = (
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.ensemble.ExtraTreesClassifier",
    "sklearn.tree.DecisionTreeClassifier",
)


def _kind(estimator: Any) -> str | None:
    """Return "boosted", "forest", "regressor" or None; never imports xgboost or lightgbm (only sees them if
    loaded)."""
    if any(_is(estimator, dotted) for dotted in _BOOSTED):
        return "boosted"
    if any(_is(estimator, dotted) for dotted in _REGRESSORS):
        return "regressor"
    if any(_is(estimator, dotted) for dotted in _FORESTS):
        return "forest"
    return None


def _verified_link(margin: np.ndarray, probability: np.ndarray) -> Any:
    """The logistic function if it turns these margins into exactly these probabilities (scikit-learn's
    binary boosting predicts so), else None: the model's probability is then predicted, not derived."""
    return expit if margin.size and np.array_equal(expit(margin), probability) else None


class TreeExplainer(ExactExplainer):
    """Explain tree ensembles exactly (interventional TreeSHAP against the background set)."""

    name = "tree"
    method = "tree_shap_interventional"

    def __init__(
        self,
        model: Any,
        *,
        output_space: str = "probability",
        positive_class: Any = None,
        background_size: int | None = None,
        random_state: int = 0,
        tolerance: float = 1e-6,
        players: str = "raw",
    ) -> None:
        super().__init__(
            model,
            output_space=output_space,
            positive_class=positive_class,
            background_size=background_size,
            random_state=random_state,
            tolerance=tolerance,
        )
        #: "raw": each raw feature is one player (exact, the default); "columns": shap per transformed
        #: column, summed per raw feature (the former method, kept as a baseline and a fallback).
        self.players = players

    @classmethod
    def why_unsupported(cls, model: Any) -> str | None:
        """Return why TreeSHAP cannot explain `model`, or None when it can."""
        preprocessor, estimator = split_pipeline(model)
        kind = _kind(estimator)
        if kind is None:
            return f"{type(estimator).__name__} is not a supported tree ensemble classifier"
        if kind == "regressor":
            if getattr(estimator, "n_features_in_", None) is None:
                return f"{type(estimator).__name__} is not fitted"
            return cls._why_preprocessing_unsupported(preprocessor)
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            return f"{type(estimator).__name__} is not fitted"
        if kind == "boosted" and len(classes) != 2:
            return f"{type(estimator).__name__} with {len(classes)} classes: only binary boosting is supported"
        categorical = getattr(estimator, "is_categorical_", None)
        if categorical is not None and np.any(categorical):
            return "HistGradientBoosting with native categorical splits cannot be explained interventionally"
        return cls._why_preprocessing_unsupported(preprocessor)

    @classmethod
    def output_spaces_for(cls, model: Any) -> tuple[str, ...]:
        """Return ("log_odds", "probability") for boosting, ("probability",) for forests, ("value",) for
        boosted regressors."""
        _, estimator = split_pipeline(model)
        kind = _kind(estimator)
        return {"forest": ("probability",), "regressor": ("value",)}.get(kind or "", ("log_odds", "probability"))

    @classmethod
    def _output_space_hint(cls, output_space: str) -> str:
        if output_space == "log_odds":
            return "a forest averages probabilities, so explain it in 'probability'"
        return super()._output_space_hint(output_space)

    def _build(self, estimator: Any, background: np.ndarray) -> tuple[Any, float]:
        self._kind = _kind(estimator)
        # By class, not module name: a subclass (the gateway's XGBClassifier with labelled classes) counts.
        self._model_type = ("xgboost" if _is(estimator, "xgboost.XGBModel")
                            else "lightgbm" if _is(estimator, "lightgbm.LGBMModel")
                            else type(estimator).__module__.split(".")[0])
        margin = self._kind == "boosted" and self.output_space == "log_odds"
        self._rescaled = self._kind == "boosted" and not margin
        # Boosting explains the margin/probability of classes_[1]; turn it toward the positive class.
        self._flip = self._kind == "boosted" and self.class_index_ == 0
        if self.players not in ("raw", "columns"):
            raise ValueError(f"players must be 'raw' or 'columns', got {self.players!r}")
        self.grouped_ = self.players == "raw" and _grouped_tree.why_not_flattenable(estimator) is None
        suffix = "_rescaled" if self._rescaled else ""
        if self.grouped_:
            self.method_ = f"{self.method}_grouped{suffix}"
            forest_class = self.class_index_ if self.class_index_ is not None else 1
            self.trees_, _ = _grouped_tree.flatten(estimator, forest_class if self._kind == "forest" else 1)
            self.background_classes_ = _grouped_tree.background_classes(self.trees_, background)
            if self._rescaled:
                self._background_margin = self._margin(background)
                self._background_probability = self._probability1(background)
                self._link = _verified_link(self._background_margin, self._background_probability)
            return None, float(np.mean(self._model_output(background)))
        self.method_ = f"{self.method}_column_sum{suffix}"
        shap = import_shap()
        explainer = shap.TreeExplainer(
            estimator,
            data=background,
            feature_perturbation="interventional",
            model_output="raw" if (margin or self._kind in ("forest", "regressor")) else "probability",
        )
        expected = np.asarray(explainer.expected_value, dtype=np.float64).ravel()
        if self._kind == "regressor":
            return explainer, float(expected[0])
        if self._kind == "forest":
            return explainer, float(expected[self.class_index_])
        base = float(expected[0])
        if self._flip:
            base = -base if margin else 1.0 - base
        return explainer, base

    def _raw_values(self, transformed: np.ndarray, margins: np.ndarray | None = None) -> np.ndarray:
        if not self.grouped_:
            return super()._raw_values(transformed, margins)
        scale = None
        if self._rescaled:
            # At most one predict (each validates its input): the margin given by the caller who scored with it
            # (the tree values' sums are still the explainer's own, checked against the output), and the
            # probability from the margin by the model's own link when that was verified on the background
            # (bit for bit), else a second predict.
            margin = margins if margins is not None else self._margin(transformed)
            p = (self._link(margin) if self._link is not None else self._probability1(transformed))[:, None]
            dm = margin[:, None] - self._background_margin[None, :]
            dp = p - self._background_probability[None, :]
            # equal margins: the pair's values sum to 0; any finite factor keeps additivity - use the slope
            scale = np.repeat(p * (1.0 - p), dm.shape[1], axis=1)
            np.divide(dp, dm, out=scale, where=dm != 0.0)
        values = _grouped_tree.grouped_values(
            self.trees_, transformed, self.background_transformed_, self.sources_, len(self.feature_names_), scale,
            self.background_classes_,
        )
        return -values if self._flip else values

    def _output_rounding(self, output: np.ndarray) -> np.ndarray:
        # XGBoost predicts in float32: its margin is the exact sum of its leaves rounded at each of its
        # additions; allow 4 units in the last place of a float32 of the output's size (about 2e-6 at 5).
        if self._model_type != "xgboost":
            return super()._output_rounding(output)
        ulps = 4.0
        if self._kind == "regressor":
            # A regressor's value (tens, thousands) is rounded at each of its trees' additions by up to half a
            # unit in the last place: allow that bound, half a unit per tree (4 units did for margins near 1).
            ulps = max(ulps, 0.5 * (self._estimator.get_booster().num_boosted_rounds() + 1))
        return ulps * np.spacing(np.abs(output).astype(np.float32)).astype(np.float64)

    def _null_players(self, transformed: np.ndarray) -> np.ndarray:
        if not self.grouped_:
            return super()._null_players(transformed)
        return _grouped_tree.null_players(
            self.trees_, transformed, self.background_transformed_, self.sources_, len(self.feature_names_)
        )

    def _shap_values(self, transformed: np.ndarray) -> np.ndarray:
        values = np.asarray(self.shap_explainer_.shap_values(transformed, check_additivity=False))
        if self._kind == "forest":
            return values[:, :, self.class_index_]
        return -values if self._flip else values

    def _margin(self, transformed: np.ndarray) -> np.ndarray:
        """Return the raw margin of classes_[1]."""
        x = self._estimator_input(transformed)
        estimator = self._estimator
        if self._model_type == "xgboost":
            margin = estimator.predict(x, output_margin=True)
        elif self._model_type == "lightgbm":
            margin = estimator.predict(x, raw_score=True)
        else:
            margin = estimator.decision_function(x)
        return np.asarray(margin, dtype=np.float64).ravel()

    def _probability1(self, transformed: np.ndarray) -> np.ndarray:
        """Return the probability of classes_[1]."""
        return np.asarray(self._estimator.predict_proba(self._estimator_input(transformed)), dtype=np.float64)[:, 1]

    def _model_output(self, transformed: np.ndarray) -> np.ndarray:
        x = self._estimator_input(transformed)
        estimator = self._estimator
        if self._kind == "regressor":
            return np.asarray(estimator.predict(x), dtype=np.float64).ravel()
        if self._kind == "forest" or self.output_space == "probability":
            return np.asarray(estimator.predict_proba(x), dtype=np.float64)[:, self.class_index_]
        margin = self._margin(transformed)
        return -margin if self._flip else margin
