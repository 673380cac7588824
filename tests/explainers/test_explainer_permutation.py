"""The model-agnostic explainer on opaque callables and unsupported estimators, with string categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from explainer_helpers import (
    ADULT_COLUMNS,
    CATEGORICAL,
    NUMERIC,
    POSITIVE,
    Adult,
    attributions,
    enumerated_shapley,
)
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline

from explainers import PermutationExplainer, TreeExplainer, make_explainer


class RecordingModel:
    """An opaque model: a plain callable over raw frames that records what it was given."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.frames: list[pd.DataFrame] = []

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        self.frames.append(frame)
        return self.pipeline.predict_proba(frame)[:, 1]


@pytest.fixture
def opaque(gb_pipeline: Pipeline) -> RecordingModel:
    return RecordingModel(gb_pipeline)


def test_opaque_callable_is_explained_additively_in_probability(adult: Adult, opaque: RecordingModel) -> None:
    explainer = make_explainer(opaque, random_state=3, max_evals=200)
    assert isinstance(explainer, PermutationExplainer)
    explainer.fit(adult.background)
    rows = adult.rows.iloc[:2]
    result = explainer.explain(rows)
    np.testing.assert_allclose([e.output for e in result], opaque.pipeline.predict_proba(rows)[:, 1], rtol=1e-12)
    for e in result:
        assert e.additivity_error < 1e-9  # antithetic permutations telescope to f(x) - E f(background)
        assert e.base_value + sum(e.attributions.values()) == pytest.approx(e.output, abs=1e-9)
        assert list(e.attributions) == ADULT_COLUMNS
        assert (e.method, e.output_space, e.background_size, e.random_state) == (
            "permutation_shap_estimate",
            "probability",
            100,
            3,
        )
    assert explainer.base_value_ == pytest.approx(opaque.pipeline.predict_proba(adult.background)[:, 1].mean())


def test_categories_reach_the_model_decoded(adult: Adult, opaque: RecordingModel) -> None:
    explainer = PermutationExplainer(opaque, max_evals=100).fit(adult.background)
    row = adult.rows.iloc[[0]].copy()
    row["workclass"] = "Martian"  # unseen in the background: added for this call only
    [explanation] = explainer.explain(row)
    assert explanation.additivity_error < 1e-9
    seen = pd.concat(opaque.frames[1:], ignore_index=True)  # frames[0] is fit's background call
    assert list(seen.columns) == ADULT_COLUMNS
    assert (seen.dtypes == adult.background.dtypes).all()  # original dtypes, strings stay strings
    allowed = set(adult.background["workclass"].dropna()) | {"Martian"}
    assert set(seen["workclass"].dropna()) <= allowed and "Martian" in set(seen["workclass"])
    for name in CATEGORICAL:
        assert set(seen[name].dropna()) <= set(adult.background[name].dropna()) | set(row[name].dropna())
    assert "Martian" not in set(explainer.categories_["workclass"])  # fitted state untouched


def test_same_seed_same_explanation_other_seed_other_sample(adult: Adult, gb_pipeline: Pipeline) -> None:
    rows = adult.rows.iloc[:2]
    first = PermutationExplainer(gb_pipeline, max_evals=120, random_state=5).fit(adult.background).explain(rows)
    again = PermutationExplainer(gb_pipeline, max_evals=120, random_state=5).fit(adult.background).explain(rows)
    assert first == again
    alone = PermutationExplainer(gb_pipeline, max_evals=120, random_state=5).fit(adult.background)
    assert alone.explain(rows.iloc[[1]])[0] == first[1]  # a row's explanation does not depend on the batch
    other = PermutationExplainer(gb_pipeline, max_evals=120, random_state=6).fit(adult.background).explain(rows)
    assert attributions(other, ADULT_COLUMNS).tolist() != attributions(first, ADULT_COLUMNS).tolist()


def test_global_random_state_of_the_caller_is_left_alone(adult: Adult, numeric_gb: GradientBoostingClassifier) -> None:
    explainer = PermutationExplainer(numeric_gb, max_evals=50).fit(adult.background)
    np.random.seed(1234)
    expected = np.random.random_sample(3)
    np.random.seed(1234)
    explainer.explain(adult.rows.iloc[:2])
    np.testing.assert_array_equal(np.random.random_sample(3), expected)


def test_exact_for_a_model_with_pairwise_interactions(adult: Adult) -> None:
    """A forest of depth-2 trees averages leaf probabilities: at most pairwise interactions in the
    probability itself, where one antithetic permutation pair already gives the exact Shapley values."""
    forest = RandomForestClassifier(n_estimators=10, max_depth=2, random_state=0).fit(adult.train[NUMERIC], adult.y)
    background = adult.background[NUMERIC]
    explainer = PermutationExplainer(forest, max_evals=100).fit(background)
    tree = TreeExplainer(forest).fit(background)

    def f(frame: pd.DataFrame) -> np.ndarray:
        return forest.predict_proba(frame)[:, 1]

    for i in range(3):
        x = adult.rows[NUMERIC].iloc[[i]]
        exact = enumerated_shapley(f, x, background)
        [explanation] = explainer.explain(x)
        np.testing.assert_allclose(attributions([explanation], NUMERIC)[0], exact, rtol=0, atol=1e-9)
        np.testing.assert_allclose(attributions(tree.explain(x), NUMERIC)[0], exact, rtol=0, atol=1e-6)


def test_agrees_with_tree_shap_on_the_main_factors(adult: Adult, rf_pipeline: Pipeline) -> None:
    """Same forest, same background, probability space: TreeSHAP (exact, over one-hot columns summed)
    and Permutation (sampled, categorical features as single players) agree on what matters."""
    rows = adult.rows.iloc[:4]

    def forest(frame: pd.DataFrame) -> np.ndarray:
        return rf_pipeline.predict_proba(frame)[:, 1]

    exact = TreeExplainer(rf_pipeline, positive_class=POSITIVE).fit(adult.background).explain(rows)
    sampled = PermutationExplainer(forest, max_evals=600).fit(adult.background).explain(rows)
    for t, p in zip(exact, sampled, strict=False):
        assert t.base_value == pytest.approx(p.base_value, abs=1e-9)  # the same baseline
        assert t.output == pytest.approx(p.output, abs=1e-12)
        top = sorted(t.attributions, key=lambda f: -abs(t.attributions[f]))[:3]
        assert max(p.attributions, key=lambda f: abs(p.attributions[f])) in top
        for name in top:
            if abs(t.attributions[name]) > 0.02:
                assert np.sign(p.attributions[name]) == np.sign(t.attributions[name]), name
                assert p.attributions[name] == pytest.approx(t.attributions[name], abs=0.03), name


def test_rejects_too_few_evaluations_and_models_without_probabilities(adult: Adult) -> None:
    def fn(frame: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(frame))
    with pytest.raises(ValueError, match="max_evals=10 is below"):
        PermutationExplainer(fn, max_evals=10).fit(adult.background)
    bad = PermutationExplainer(lambda frame: np.zeros((len(frame), 2)), max_evals=100)
    with pytest.raises(ValueError, match="one probability per row"):
        bad.fit(adult.background)
    assert not PermutationExplainer.supports(object())


# -- estimates with their precision ---------------------------------------------------------------

MLP_FEATURES = ["age", "education-num", "hours-per-week", "capital-gain", "marital-status", "relationship", "sex"]


@pytest.fixture(scope="module")
def mlp(adult: Adult) -> Pipeline:
    """A small neural network on 7 raw features: no exact explainer, so it is explained by sampling."""
    from sklearn.compose import ColumnTransformer
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["marital-status", "relationship", "sex"]),
         ("num", StandardScaler(), ["age", "education-num", "hours-per-week", "capital-gain"])]
    )
    clf = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=600, random_state=0)
    return Pipeline([("pre", pre), ("clf", clf)]).fit(adult.train[MLP_FEATURES], adult.y)


def test_error_estimates_cover_the_exact_values_on_an_mlp(adult: Adult, mlp: Pipeline) -> None:
    """|estimate - exact| <= the stated error for >= 90 % of factors (exact by enumerating 2^7 coalitions),
    at the smallest budget (the errors are real: most factors are off by more than 1e-4)."""
    background = adult.background[MLP_FEATURES].iloc[:40]
    explainer = PermutationExplainer(mlp, max_evals=240, target_error=1.0, background_size=None).fit(background)

    def f(frame: pd.DataFrame) -> np.ndarray:
        return mlp.predict_proba(frame)[:, 1]

    covered, total, off = 0, 0, 0
    for i in range(12):
        x = adult.rows[MLP_FEATURES].iloc[[i]]
        exact = enumerated_shapley(f, x, background)
        [e] = explainer.explain(x)
        assert e.errors is not None and e.method == "permutation_shap_estimate"
        for j, name in enumerate(MLP_FEATURES):
            gap = abs(e.attributions[name] - exact[j])
            covered += gap <= e.errors[name] + 1e-12
            off += gap > 1e-4
            total += 1
    assert covered / total >= 0.9, f"{covered}/{total} covered"
    assert off / total > 0.5  # not trivially exact


def test_budget_rises_until_the_target_error_is_met(adult: Adult, mlp: Pipeline) -> None:
    background = adult.background[MLP_FEATURES].iloc[:40]
    x = adult.rows[MLP_FEATURES].iloc[[0]]
    loose = PermutationExplainer(mlp, max_evals=60, target_error=1.0).fit(background).explain(x)[0]
    tight = PermutationExplainer(mlp, max_evals=60, target_error=0.002, max_evals_cap=20000).fit(background)
    [e] = tight.explain(x)
    assert e.errors is not None and loose.errors is not None
    assert max(loose.errors.values()) > 0.002  # the starting budget is not enough ...
    assert max(e.errors.values()) <= 0.002  # ... so it was raised until it was
    assert e.errors != loose.errors
    capped = PermutationExplainer(mlp, max_evals=60, target_error=1e-9, max_evals_cap=240).fit(background)
    errors = capped.explain(x)[0].errors
    assert errors is not None and max(errors.values()) > 1e-9  # the cap stops it


def test_a_regression_value_is_explained_in_its_own_units(adult: Adult) -> None:
    """A linear regressor's interventional Shapley values are coef * (x - background mean), in its units:
    the permutation explainer in "value" space gets them exactly (no interactions) and adds up to the value."""
    from sklearn.linear_model import LinearRegression

    X = adult.train[NUMERIC].astype(float)
    target = 1000.0 * X["education-num"] + 50.0 * X["hours-per-week"] + 3.0 * X["age"]
    model = LinearRegression().fit(X, target)

    def amount(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(frame[NUMERIC].astype(float)), dtype=float)

    background = adult.background[NUMERIC].astype(float)
    explainer = make_explainer(amount, output_space="value", max_evals=200).fit(background)
    rows = adult.rows[NUMERIC].astype(float).iloc[:5]
    for (_, x), e in zip(rows.iterrows(), explainer.explain(rows), strict=True):
        assert e.output_space == "value"
        expected = model.coef_ * (x.to_numpy() - background.mean().to_numpy())
        np.testing.assert_allclose([e.attributions[n] for n in NUMERIC], expected, rtol=0, atol=1e-6)
        assert abs(e.base_value + sum(e.attributions.values()) - e.output) <= 1e-6
        assert e.output == pytest.approx(float(amount(pd.DataFrame([x]))[0]), abs=1e-9)
