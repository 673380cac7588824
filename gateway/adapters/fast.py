"""A verified fast path for scoring fitted scikit-learn pipelines one row at a time.

scikit-learn validates a one-row DataFrame column by column (about 1 ms per categorical column with
1.9), which makes `Pipeline.predict_proba` on one application cost 10-20 ms. The explainers library
compiles a fitted preprocessing into numpy operations (`explainers._transform`); here the whole
model - compiled preprocessing, then the final estimator's `predict_proba` - is used only if it gives
exactly the pipeline's probabilities on the model's background data and on a row built from its
schema. Any value the compiled transform is not sure about makes that call fall back to the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier

from explainers import GiveUp, Variants, compile_transform, compile_variants
from gateway.adapters.base import NativeModel

try:  # scikit-learn's own loop over the fitted trees (what decision_function runs after validating its input)
    from sklearn.ensemble._gradient_boosting import predict_stages
except ImportError:  # pragma: no cover - another scikit-learn layout: the public route serves
    predict_stages = None

# A DummyClassifier init whose predict_proba does not depend on the row (not "stratified", which draws).
_CONSTANT_INIT = {"prior", "most_frequent", "uniform", "constant"}


class FastScorer:
    """Score raw records with a compiled preprocessing and the final estimator."""

    def __init__(self, native: NativeModel, names: Sequence[str], numeric: set[str], *, link: bool = False,
                 stages: bool = False) -> None:
        self._names = list(names)
        # Binary gradient boosting: the margin by `decision_function`, the probability by the logistic link
        # (what its predict_proba does), so that the margin is at hand for the explainer. Kept only if the
        # probabilities come out exactly as the pipeline's (`verified_fast_scorer`).
        self.link = link
        # `stages` (with `link`): the margin straight from the trees, as decision_function computes it after its
        # input checks (about 1 ms a call with scikit-learn 1.9, for rows the compiled transform already made
        # finite floats): the init estimator's constant raw prediction plus every stage's scaled tree output.
        self.stages = stages and link
        if self.stages:
            estimator = native.estimator
            self._init_raw = np.asarray(estimator._raw_predict_init(
                np.zeros((1, estimator.n_features_in_), dtype=np.float32)), dtype=np.float64)
        self._numeric = numeric
        self._transform = compile_transform(native.preprocessor)
        self._variants = compile_variants(native.preprocessor)
        self._position = {name: j for j, name in enumerate(self._names)}
        self._estimator = native.estimator
        classes = list(native.estimator.classes_)
        self._index = classes.index(native.positive_class)
        self._estimator_names = getattr(native.estimator, "feature_names_in_", None)

    def values(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        names, numeric = self._names, self._numeric
        values = np.empty((len(records), len(names)), dtype=object)
        for j, name in enumerate(names):  # column by column: the recourse search scores hundreds of rows
            values[:, j] = [float(r[name]) for r in records] if name in numeric else [r[name] for r in records]
        return values

    def score(self, records: Sequence[dict[str, Any]]) -> np.ndarray | None:
        """Return the positive-class probabilities, or None when the pipeline must do it."""
        found = self.score_margins(records)
        return None if found is None else found[0]

    def score_margins(self, records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The positive-class probabilities and (`link`) the raw margins of classes_[1]; None: use the pipeline."""
        try:
            transformed = self._transform(self.values(records))
        except GiveUp:
            return None
        return self._estimate(transformed)

    def score_variants(self, variants: Variants) -> tuple[np.ndarray, np.ndarray | None] | None:
        """`score_margins` of the variants' rows, bit for bit, without building them: the recourse search scores
        hundreds of variants of one row, which differ from it in one or two features."""
        if self._variants is None:
            return self.score_margins(variants.rows())
        changes = []
        for name, (values, rows, codes) in variants.changes.items():
            j = self._position.get(name)
            if j is not None:  # a feature the model does not take changes nothing (as `values` ignores it)
                changes.append((j, [float(v) for v in values] if name in self._numeric else values, rows, codes))
        try:
            transformed = self._variants(self.values([variants.base])[0], variants.size, changes)
        except GiveUp:
            return None
        return self._estimate(transformed)

    def _estimate(self, transformed: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The final estimator's probabilities (and margins) of transformed rows; None: use the pipeline."""
        if self._estimator_names is not None:
            transformed = pd.DataFrame(transformed, columns=self._estimator_names)
        if self.stages:
            rows = np.ascontiguousarray(transformed, dtype=np.float32)  # decision_function's own conversion
            if not np.isfinite(rows).all():
                return None
            raw = np.repeat(self._init_raw, len(rows), axis=0)
            predict_stages(self._estimator.estimators_, rows, self._estimator.learning_rate, raw)
            margins = raw.reshape(-1)
            p1 = expit(margins)
            return (p1 if self._index == 1 else 1 - p1), margins
        if self.link:
            margins = np.asarray(self._estimator.decision_function(transformed), dtype=np.float64).reshape(-1)
            p1 = expit(margins)
            return (p1 if self._index == 1 else 1 - p1), margins
        return np.asarray(self._estimator.predict_proba(transformed)[:, self._index], dtype=float), None


def verified_fast_scorer(native: NativeModel | None, names: Sequence[str], numeric: set[str],
                         check: pd.DataFrame, expected: np.ndarray) -> FastScorer | None:
    """Build a FastScorer and keep it only if it reproduces `expected` (the pipeline's scores) exactly."""
    if native is None or native.preprocessor is None:
        return None
    estimator = native.estimator
    routes = [(False, False)]  # (link, stages), the fastest first
    if isinstance(estimator, GradientBoostingClassifier) and len(estimator.classes_) == 2:
        routes = [(True, False), *routes]
        init = getattr(estimator, "init_", None)
        if predict_stages is not None and (
                init == "zero" or (isinstance(init, DummyClassifier) and init.strategy in _CONSTANT_INIT)):
            routes = [(True, True), *routes]
    for link, stages in routes:
        try:
            scorer = FastScorer(native, names, numeric, link=link, stages=stages)
            got = scorer.score(check.to_dict("records"))
        except Exception:  # noqa: BLE001 - a step the compiler does not know, or any other mismatch: no fast path
            continue
        if got is not None and np.array_equal(got, expected):
            return scorer
    return None
