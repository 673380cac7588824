"""Raw features as players: grouped TreeSHAP and LinearSHAP equal brute-force enumeration of all coalitions.

Models with 8 raw features (6 one-hot encoded categoricals, 2 numbers) on UCI Adult; enumeration of the
2^8 coalitions with every background row, each categorical's columns swapped together (the raw value is
swapped before encoding).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from explainer_helpers import Adult
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from explainers import LinearExplainer, TreeExplainer

CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "sex"]
NUMERIC = ["age", "hours-per-week"]
FEATURES = ["age", "workclass", "education", "marital-status", "occupation", "relationship", "sex", "hours-per-week"]
TOLERANCE = 1e-9


def enumerated_shapley(f: Any, x: pd.DataFrame, background: pd.DataFrame) -> np.ndarray:
    """Exact Shapley values of the raw features by enumerating all 2^m coalitions, in one model call.

    v(S) = mean over background rows z of f(x_S, z_rest): the raw value is swapped, so the encoded
    columns of a feature move together.
    """
    names = list(x.columns)
    m, n = len(names), len(background)
    coalitions = [c for size in range(m + 1) for c in itertools.combinations(range(m), size)]
    frames = []
    for coalition in coalitions:
        frame = background.copy()
        for j in coalition:
            frame[names[j]] = x[names[j]].iloc[0]
        frames.append(frame)
    outputs = np.asarray(f(pd.concat(frames, ignore_index=True)), dtype=np.float64).reshape(len(coalitions), n)
    value = dict(zip(coalitions, outputs.mean(axis=1).tolist(), strict=True))
    phi = np.zeros(m)
    for j in range(m):
        for coalition, v in value.items():
            if j not in coalition:
                weight = math.factorial(len(coalition)) * math.factorial(m - len(coalition) - 1) / math.factorial(m)
                phi[j] += weight * (value[tuple(sorted((*coalition, j)))] - v)
    return phi


def _pipeline(adult: Adult, clf: Any, scale: bool = False) -> Pipeline:
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
            ("num", StandardScaler() if scale else "passthrough", NUMERIC),
        ]
    )
    return Pipeline([("pre", pre), ("clf", clf)]).fit(adult.train[FEATURES], adult.y)


def _lightgbm() -> Any:
    lightgbm = pytest.importorskip("lightgbm")
    return lightgbm.LGBMClassifier(n_estimators=25, num_leaves=8, min_child_samples=10, verbose=-1, random_state=0)


CASES = {
    "gradient_boosting": (lambda: GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0), "log_odds"),
    "hist_gradient_boosting": (
        lambda: HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=8, random_state=0),
        "log_odds",
    ),
    "random_forest": (lambda: RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0), "probability"),
    "extra_trees": (lambda: ExtraTreesClassifier(n_estimators=8, max_depth=6, random_state=0), "probability"),
    "decision_tree": (lambda: DecisionTreeClassifier(max_depth=6, random_state=0), "probability"),
    "lightgbm": (_lightgbm, "log_odds"),
}


def _output(pipeline: Pipeline, space: str) -> Any:
    if space == "probability":
        return lambda frame: pipeline.predict_proba(frame)[:, 1]
    if type(pipeline[-1]).__module__.startswith("lightgbm"):
        return lambda frame: pipeline.predict(frame, raw_score=True)
    return lambda frame: pipeline.decision_function(frame)


@pytest.mark.parametrize("case", sorted(CASES))
def test_grouped_tree_shap_equals_enumeration(adult: Adult, case: str) -> None:
    make, space = CASES[case]
    pipeline = _pipeline(adult, make())
    background = adult.background[FEATURES].iloc[:25]
    explainer = TreeExplainer(pipeline, output_space=space).fit(background)
    assert explainer.method_name == "tree_shap_interventional_grouped"
    f = _output(pipeline, space)
    rows = adult.rows[FEATURES].iloc[:4]
    for i, explanation in enumerate(explainer.explain(rows)):
        exact = enumerated_shapley(f, rows.iloc[[i]], background)
        ours = np.array([explanation.attributions[name] for name in FEATURES])
        np.testing.assert_allclose(ours, exact, rtol=0, atol=TOLERANCE, err_msg=f"{case} row {i}")
        for name in explanation.null_features:  # a null player is exactly zero
            assert explanation.attributions[name] == 0.0


def test_grouped_values_differ_from_column_sums_on_a_real_model(adult: Adult) -> None:
    """The point of grouping: shap's per-column sums are not the raw features' Shapley values."""
    from explainers.base import dense, import_shap

    pipeline = _pipeline(adult, GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0))
    background = adult.background[FEATURES].iloc[:25]
    rows = adult.rows[FEATURES].iloc[:4]
    pre = pipeline[:-1]
    shap = import_shap()
    direct = shap.TreeExplainer(pipeline[-1], data=dense(pre.transform(background)),
                                feature_perturbation="interventional")
    phi = np.asarray(direct.shap_values(dense(pre.transform(rows))))
    names = [str(n) for n in pre.get_feature_names_out()]
    worst = 0.0
    for i in range(len(rows)):
        exact = enumerated_shapley(pipeline.decision_function, rows.iloc[[i]], background)
        for j, feature in enumerate(FEATURES):
            columns = [k for k, n in enumerate(names) if n.split("__", 1)[1].startswith(feature)]
            worst = max(worst, abs(phi[i, columns].sum() - exact[j]))
    assert worst > 1e-3


def test_linear_shap_of_raw_features_equals_enumeration(adult: Adult) -> None:
    pipeline = _pipeline(adult, LogisticRegression(max_iter=2000), scale=True)
    background = adult.background[FEATURES].iloc[:25]
    explainer = LinearExplainer(pipeline).fit(background)
    rows = adult.rows[FEATURES].iloc[:4]
    for i, explanation in enumerate(explainer.explain(rows)):
        exact = enumerated_shapley(pipeline.decision_function, rows.iloc[[i]], background)
        ours = np.array([explanation.attributions[name] for name in FEATURES])
        np.testing.assert_allclose(ours, exact, rtol=0, atol=TOLERANCE)


def test_probability_of_boosting_is_rescaled_and_says_so(adult: Adult) -> None:
    """Boosting in probability: additive, labelled `_rescaled`, and not the probability game's Shapley value."""
    pipeline = _pipeline(adult, GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0))
    background = adult.background[FEATURES].iloc[:25]
    explainer = TreeExplainer(pipeline, output_space="probability").fit(background)
    assert explainer.method_name == "tree_shap_interventional_grouped_rescaled"
    rows = adult.rows[FEATURES].iloc[:4]
    gaps = []
    for i, explanation in enumerate(explainer.explain(rows)):
        assert explanation.additivity_error < 1e-9
        exact = enumerated_shapley(lambda frame: pipeline.predict_proba(frame)[:, 1], rows.iloc[[i]], background)
        gaps.append(np.abs(np.array([explanation.attributions[n] for n in FEATURES]) - exact).max())
    assert max(gaps) > 1e-6  # an approximation of the probability game, hence the name


def test_features_the_model_never_splits_on_are_null_players(adult: Adult) -> None:
    pipeline = _pipeline(adult, DecisionTreeClassifier(max_depth=2, random_state=0))
    background = adult.background[FEATURES].iloc[:25]
    explanation = TreeExplainer(pipeline).fit(background).explain(adult.rows[FEATURES].iloc[:1])[0]
    used = {int(f) for f in pipeline[-1].tree_.feature if f >= 0}
    names = [str(n).split("__", 1)[1] for n in pipeline[:-1].get_feature_names_out()]
    unused = [f for f in FEATURES if not any(n.startswith(f) for k, n in enumerate(names) if k in used)]
    assert unused and set(unused) <= set(explanation.null_features)
    assert all(explanation.attributions[f] == 0.0 for f in explanation.null_features)



def test_a_matrix_walked_in_parts_on_several_cores_gives_exactly_the_one_part_values(
        adult: Adult, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large matrix (a batch's chunk) is split by rows over the process's cores, the TreeSHAP walk holding no
    GIL; every row's values are the same, bit for bit, as when the whole matrix is walked in one part."""
    from explainers import _grouped_tree

    pipeline = _pipeline(adult, GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0))
    explainer = TreeExplainer(pipeline, output_space="probability").fit(adult.background[FEATURES].iloc[:25])
    rows = pd.concat([adult.rows[FEATURES]] * (1 + 300 // len(adult.rows)), ignore_index=True).iloc[:300]
    assert len(_grouped_tree._parts(len(rows))) == min(2, _grouped_tree._threads())
    assert len(_grouped_tree._parts(_grouped_tree.PARALLEL_MIN_ROWS - 1)) == 1  # a single decision: one core
    split = explainer.explain(rows)
    monkeypatch.setattr(_grouped_tree, "PARALLEL_MIN_ROWS", 10**9)  # the same matrix in one part
    assert len(_grouped_tree._parts(len(rows))) == 1
    whole = explainer.explain(rows)
    for a, b in zip(split, whole, strict=True):
        assert a.attributions == b.attributions
        assert a.additivity_error == b.additivity_error


@pytest.mark.parametrize("space", ["log_odds", "probability"])
def test_background_rows_a_tree_cannot_tell_apart_are_walked_once(adult: Adult, space: str) -> None:
    """Each tree is walked once per class of background rows taking the same side at all its splits, with the
    class's summed weight: the same values as walking every background row (rounding of the additions apart),
    for far fewer walks."""
    from explainers import _grouped_tree

    pipeline = _pipeline(adult, GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0))
    explainer = TreeExplainer(pipeline, output_space=space).fit(adult.background[FEATURES].iloc[:60])
    classes = explainer.background_classes_
    trees, background = explainer.trees_, explainer.background_transformed_
    n_trees, m = trees.roots.shape[0], background.shape[0]
    assert classes.of.shape == (n_trees, m)
    assert classes.mean_per_tree < m / 2  # the point: fewer walks than background rows
    # Every class is what its name says: all its rows take the representative's side at every split.
    sides = _grouped_tree._kernel()[2](trees.prepare(background), trees.feature, trees.threshold, trees.default_left,
                                       trees.missing)
    ends = np.append(trees.roots[1:], trees.feature.shape[0])
    for t in range(n_trees):
        nodes = slice(int(trees.roots[t]), int(ends[t]))
        for j in range(m):
            assert np.array_equal(sides[j, nodes], sides[classes.row[classes.of[t, j]], nodes])
    every_row = _grouped_tree.BackgroundClasses(
        np.arange(0, n_trees * m + 1, m), np.tile(np.arange(m), n_trees), np.arange(n_trees * m).reshape(n_trees, m))
    rows = explainer.transform(adult.rows[FEATURES].iloc[:20])
    scale = np.random.default_rng(0).uniform(0.05, 0.3, size=(rows.shape[0], m))
    grouped = _grouped_tree.grouped_values(trees, rows, background, explainer.sources_, len(FEATURES), scale, classes)
    walked = _grouped_tree.grouped_values(trees, rows, background, explainer.sources_, len(FEATURES), scale, every_row)
    np.testing.assert_allclose(grouped, walked, rtol=0, atol=1e-12)
    assert np.abs(walked).max() > 1e-3  # not a vacuous comparison
