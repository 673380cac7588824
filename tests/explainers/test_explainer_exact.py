"""TreeSHAP and LinearSHAP on real trained pipelines: additivity, agreement with shap and with enumeration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from explainer_helpers import (
    ADULT_COLUMNS,
    NUMERIC,
    POSITIVE,
    Adult,
    attributions,
    enumerated_shapley,
)
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import explainers
from explainers import AdditivityError, LinearExplainer, TreeExplainer, column_groups
from explainers.base import dense, import_shap

TREE_CASES = [
    ("gb_pipeline", "log_odds"),
    ("gb_pipeline", "probability"),
    ("hgb_pipeline", "log_odds"),
    ("hgb_pipeline", "probability"),
    ("rf_pipeline", "probability"),
    ("et_pipeline", "probability"),
]


def _model_output(pipeline: Any, rows: pd.DataFrame, space: str, positive: Any = POSITIVE) -> np.ndarray:
    """The model's own output through scikit-learn's full pipeline on raw rows."""
    index = list(pipeline.classes_).index(positive)
    if space == "probability":
        return pipeline.predict_proba(rows)[:, index]
    margin = pipeline.decision_function(rows)
    return margin if index == 1 else -margin


@pytest.mark.parametrize(("model", "space"), TREE_CASES)
def test_tree_additivity_against_the_model(
    request: pytest.FixtureRequest, adult: Adult, model: str, space: str
) -> None:
    pipeline = request.getfixturevalue(model)
    explainer = TreeExplainer(pipeline, output_space=space, positive_class=POSITIVE).fit(adult.background)
    result = explainer.explain(adult.rows)
    assert len(result) == len(adult.rows)
    totals = np.array([e.base_value + sum(e.attributions.values()) for e in result])
    outputs = np.array([e.output for e in result])
    np.testing.assert_allclose(outputs, _model_output(pipeline, adult.rows, space), rtol=1e-12, atol=0)
    np.testing.assert_allclose(totals, outputs, rtol=0, atol=1e-6)
    errors = np.array([e.additivity_error for e in result])
    np.testing.assert_allclose(errors, np.abs(totals - outputs), rtol=1e-6, atol=1e-12)
    assert all(list(e.attributions) == ADULT_COLUMNS for e in result)  # every raw feature, input order
    assert {e.output_space for e in result} == {space}
    # The base value is the mean model output over the background - the baseline the person is told about.
    assert explainer.base_value_ == pytest.approx(_model_output(pipeline, adult.background, space).mean(), abs=1e-9)


def test_linear_additivity_against_the_model(adult: Adult, lr_pipeline: Pipeline) -> None:
    explainer = LinearExplainer(lr_pipeline, positive_class=POSITIVE).fit(adult.background)
    result = explainer.explain(adult.rows)
    outputs = np.array([e.output for e in result])
    totals = np.array([e.base_value + sum(e.attributions.values()) for e in result])
    np.testing.assert_allclose(outputs, lr_pipeline.decision_function(adult.rows), rtol=1e-12, atol=0)
    np.testing.assert_allclose(totals, outputs, rtol=0, atol=1e-6)
    assert {e.method for e in result} == {"linear_shap_interventional"}


def _sum_columns_by_name(phi: np.ndarray, names: np.ndarray) -> dict[str, np.ndarray]:
    """Sum transformed-column attributions per raw feature by reading scikit-learn's output names.

    Independent of explainers.grouping on purpose: names look like "cat__workclass_Private" or
    "num__age"; the raw feature is the longest raw name the part after "__" equals or starts with + "_".
    """
    sums = {f: np.zeros(phi.shape[0]) for f in ADULT_COLUMNS}
    for j, name in enumerate(names):
        rest = str(name).split("__", 1)[1]
        feature = max((f for f in ADULT_COLUMNS if rest == f or rest.startswith(f + "_")), key=len)
        sums[feature] += phi[:, j]
    return sums


@pytest.mark.parametrize("space", ["log_odds", "probability"])
def test_tree_matches_shap_called_directly_when_every_feature_is_one_column(
    adult: Adult, numeric_gb: GradientBoostingClassifier, space: str
) -> None:
    """With one column per raw feature the grouped players are shap's players: the same numbers."""
    shap = import_shap()
    forest = RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0).fit(adult.train[NUMERIC], adult.y)
    cases = [(numeric_gb, space)] + ([(forest, "probability")] if space == "probability" else [])
    background, rows = adult.background[NUMERIC], adult.rows[NUMERIC]
    for estimator, output_space in cases:
        is_forest = isinstance(estimator, RandomForestClassifier)
        direct = shap.TreeExplainer(
            estimator,
            data=background.to_numpy(dtype=float),
            feature_perturbation="interventional",
            model_output="raw" if (is_forest or output_space == "log_odds") else "probability",
        )
        phi = np.asarray(direct.shap_values(rows.to_numpy(dtype=float)))
        base = np.asarray(direct.expected_value, dtype=float).ravel()
        if is_forest:
            phi, base = phi[:, :, 1], base[1:]
        explainer = TreeExplainer(estimator, output_space=output_space).fit(background)
        assert explainer.method_name.startswith("tree_shap_interventional_grouped")
        # shap accumulates in float32 (relative differences ~1e-7); ours match enumeration to 1e-12
        # (test_explainer_grouped.py), so the agreement asked of shap here is shap's precision.
        np.testing.assert_allclose(attributions(explainer.explain(rows), NUMERIC), phi, rtol=1e-5, atol=1e-7)
        assert explainer.base_value_ == pytest.approx(float(base[0]), rel=1e-6)


def test_linear_matches_shap_called_directly(adult: Adult, lr_pipeline: Pipeline) -> None:
    shap = import_shap()
    pre, estimator = lr_pipeline[:-1], lr_pipeline[-1]
    background = dense(pre.transform(adult.background))
    direct = shap.LinearExplainer(estimator, shap.maskers.Independent(background, max_samples=len(background)))
    phi = np.asarray(direct.shap_values(dense(pre.transform(adult.rows))))
    expected = _sum_columns_by_name(phi, pre.get_feature_names_out())
    ours = attributions(LinearExplainer(lr_pipeline).fit(adult.background).explain(adult.rows), ADULT_COLUMNS)
    for j, feature in enumerate(ADULT_COLUMNS):
        np.testing.assert_allclose(ours[:, j], expected[feature], rtol=1e-9, atol=1e-12, err_msg=feature)


def test_one_hot_feature_is_one_player_not_the_sum_of_its_columns(adult: Adult, gb_pipeline: Pipeline) -> None:
    """Grouped values differ from shap's per-column sums (same total, other split between features)."""
    shap = import_shap()
    pre, estimator = gb_pipeline[:-1], gb_pipeline[-1]
    direct = shap.TreeExplainer(
        estimator, data=dense(pre.transform(adult.background)), feature_perturbation="interventional"
    )
    phi = np.asarray(direct.shap_values(dense(pre.transform(adult.rows))))
    columns = column_groups(pre, ADULT_COLUMNS)["occupation"]
    categories = pre[0].named_transformers_["cat"].categories_[list(pre[0].transformers_[0][2]).index("occupation")]
    assert len(columns) == len(categories) > 10  # k categories (incl. missing) -> k columns -> one player
    result = TreeExplainer(gb_pipeline, output_space="log_odds").fit(adult.background).explain(adult.rows)
    grouped = np.array([e.attributions["occupation"] for e in result])
    summed = phi[:, columns].sum(axis=1)
    assert np.abs(grouped - summed).max() > 1e-3  # the column sum is a different number
    np.testing.assert_allclose(  # ... but both are additive: the totals agree
        attributions(result, ADULT_COLUMNS).sum(axis=1), phi.sum(axis=1), rtol=0, atol=1e-6  # shap: float32
    )


def test_tree_values_are_the_exact_shapley_values(adult: Adult, numeric_gb: GradientBoostingClassifier) -> None:
    forest = RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0).fit(adult.train[NUMERIC], adult.y)
    background = adult.background[NUMERIC]
    cases = [
        (numeric_gb, "log_odds", lambda frame: numeric_gb.decision_function(frame)),
        (forest, "probability", lambda frame: forest.predict_proba(frame)[:, 1]),
    ]
    for model, space, f in cases:
        explainer = TreeExplainer(model, output_space=space).fit(background)
        assert explainer.feature_names_ == NUMERIC  # a bare classifier: raw = transformed features
        for i in range(3):
            x = adult.rows[NUMERIC].iloc[[i]]
            [explanation] = explainer.explain(x)
            np.testing.assert_allclose(
                attributions([explanation], NUMERIC)[0], enumerated_shapley(f, x, background), rtol=0, atol=1e-6
            )


def test_boosting_in_probability_is_recorded_as_rescaled(adult: Adult, gb_pipeline: Pipeline) -> None:
    margin = TreeExplainer(gb_pipeline, output_space="log_odds").fit(adult.background).explain(adult.rows[:1])
    prob = TreeExplainer(gb_pipeline, output_space="probability").fit(adult.background).explain(adult.rows[:1])
    assert margin[0].method == "tree_shap_interventional_grouped"
    assert prob[0].method == "tree_shap_interventional_grouped_rescaled"


def test_positive_class_sets_the_sign(adult: Adult, gb_pipeline: Pipeline, rf_pipeline: Pipeline) -> None:
    for pipeline, space in ((gb_pipeline, "log_odds"), (gb_pipeline, "probability"), (rf_pipeline, "probability")):
        up = TreeExplainer(pipeline, output_space=space, positive_class=POSITIVE).fit(adult.background)
        down = TreeExplainer(pipeline, output_space=space, positive_class="<=50K").fit(adult.background)
        a, b = up.explain(adult.rows[:20]), down.explain(adult.rows[:20])
        # boosting flips exactly; a forest explains each class column separately (float32 leaves)
        np.testing.assert_allclose(attributions(b, ADULT_COLUMNS), -attributions(a, ADULT_COLUMNS), atol=1e-8)
        np.testing.assert_allclose([e.output for e in b], _model_output(pipeline, adult.rows[:20], space, "<=50K"))
        assert {e.positive_class for e in b} == {"<=50K"}
        flipped = -up.base_value_ if space == "log_odds" else 1.0 - up.base_value_
        assert down.base_value_ == pytest.approx(flipped, abs=1e-8)


def test_explanations_are_deterministic_and_independent_of_the_batch(adult: Adult, hgb_pipeline: Pipeline) -> None:
    explainer = TreeExplainer(hgb_pipeline, output_space="log_odds").fit(adult.background)
    first = explainer.explain(adult.rows[:10])
    assert explainer.explain(adult.rows[:10]) == first  # frozen dataclasses compare by value
    again = TreeExplainer(hgb_pipeline, output_space="log_odds").fit(adult.background).explain(adult.rows[:10])
    assert again == first
    one_by_one = [explainer.explain(adult.rows.iloc[[i]])[0] for i in range(10)]
    np.testing.assert_allclose(
        attributions(one_by_one, ADULT_COLUMNS), attributions(first, ADULT_COLUMNS), rtol=1e-12, atol=1e-15
    )


def test_explanation_records_its_provenance(adult: Adult, gb_pipeline: Pipeline) -> None:
    explainer = TreeExplainer(gb_pipeline, background_size=40, random_state=7).fit(adult.background)
    [explanation] = explainer.explain(adult.rows[:1])
    assert explanation.explainer_version == explainers.__version__ == "1.0.0"
    assert explanation.shap_version == import_shap().__version__
    assert (explanation.background_size, explanation.random_state) == (40, 7)
    assert explanation.positive_class == POSITIVE
    other = TreeExplainer(gb_pipeline, background_size=40, random_state=8).fit(adult.background)
    assert other.base_value_ != explainer.base_value_  # a different, reproducible background sample
    with pytest.raises(AttributeError):
        explanation.output = 0.0  # type: ignore[misc]


def make(pipeline: Pipeline) -> Any:
    """Return the registry's explainer for a pipeline, in log-odds for linear models, else probability."""
    space = "log_odds" if LinearExplainer.supports(pipeline) else "probability"
    return explainers.make_explainer(pipeline, output_space=space, positive_class=POSITIVE)


def test_compiled_transform_reproduces_scikit_learn(request: pytest.FixtureRequest, adult: Adult) -> None:
    rows = pd.concat([adult.rows, adult.train.iloc[:1500]], ignore_index=True)
    unseen = adult.rows.iloc[:5].copy()
    unseen["workclass"] = "Martian"
    unseen["native-country"] = "Atlantis"
    unseen.loc[unseen.index[0], "occupation"] = np.nan
    for model in ("gb_pipeline", "hgb_pipeline", "rf_pipeline", "et_pipeline", "lr_pipeline"):
        pipeline = request.getfixturevalue(model)
        explainer = make(pipeline).fit(adult.background)
        assert explainer.fast_transform_, model
        for frame in (rows, unseen, adult.rows.iloc[[3]]):
            if model == "et_pipeline" and frame is unseen:
                # drop="if_binary" with handle_unknown="ignore": scikit-learn warns about unseen
                # categories, so the compiled transform hands such rows to scikit-learn, warning and all.
                with pytest.warns(UserWarning, match="Found unknown categories"):
                    expected = dense(pipeline[:-1].transform(frame))
                with pytest.warns(UserWarning, match="Found unknown categories"):
                    np.testing.assert_array_equal(explainer.transform(frame), expected, err_msg=model)
                continue
            expected = dense(pipeline[:-1].transform(frame))
            np.testing.assert_array_equal(explainer.transform(frame), expected, err_msg=model)


def test_unknown_category_with_handle_unknown_error_is_left_to_scikit_learn(adult: Adult) -> None:
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="error"), ["workclass", "race"])], remainder="drop")
    pipeline = Pipeline([("pre", pre), ("clf", GradientBoostingClassifier(n_estimators=10, random_state=0))])
    pipeline.fit(adult.train.fillna({"workclass": "none"}), adult.y)
    explainer = TreeExplainer(pipeline).fit(adult.background.fillna({"workclass": "none"}))
    assert explainer.fast_transform_
    row = adult.rows.iloc[[0]].copy()
    row["workclass"] = "Martian"
    with pytest.raises(ValueError, match="unknown categor"):
        explainer.explain(row)


def test_additivity_beyond_tolerance_raises(adult: Adult, gb_pipeline: Pipeline) -> None:
    with pytest.raises(AdditivityError, match="exceeds the tolerance"):
        TreeExplainer(gb_pipeline, output_space="log_odds", tolerance=1e-15).fit(adult.background).explain(adult.rows)


def test_given_outputs_replace_the_second_prediction_and_still_check_additivity(adult: Adult, gb_pipeline: Pipeline
                                                                                ) -> None:
    explainer = TreeExplainer(gb_pipeline, output_space="probability", positive_class=POSITIVE).fit(adult.background)
    rows = adult.rows.iloc[:20]
    scores = _model_output(gb_pipeline, rows, "probability")
    assert explainer.explain(rows, outputs=scores) == explainer.explain(rows)
    shifted = scores.copy()
    shifted[3] += 1e-3  # a score the explained model did not produce: refused, naming the row
    with pytest.raises(AdditivityError, match="row 3"):
        explainer.explain(rows, outputs=shifted)
    with pytest.raises(ValueError, match="2 outputs given for 20 rows"):
        explainer.explain(rows, outputs=scores[:2])
