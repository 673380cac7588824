"""The registry picks the right explainer; every explainer passes the same conformance checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from explainer_helpers import ADULT_COLUMNS, CATEGORICAL, NUMERIC, POSITIVE, Adult
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler

import explainers
from explainers import (
    EXPLAINERS,
    LinearExplainer,
    NotFittedError,
    PermutationExplainer,
    RawExplanation,
    TreeExplainer,
    UnknownExplainerError,
    UnsupportedModelError,
    UnsupportedOutputSpaceError,
    make_explainer,
)


@pytest.fixture(scope="module")
def knn_pipeline(adult: Adult) -> Pipeline:
    """A model no exact explainer supports."""
    pre = ColumnTransformer([("num", StandardScaler(), NUMERIC)])
    return Pipeline([("pre", pre), ("clf", KNeighborsClassifier(n_neighbors=15))]).fit(adult.train, adult.y)


@pytest.fixture(scope="module")
def poly_pipeline(adult: Adult) -> Pipeline:
    """A tree model behind preprocessing that mixes columns (cannot be grouped back)."""
    pre = ColumnTransformer([("poly", PolynomialFeatures(degree=2), ["age", "hours-per-week"])])
    clf = GradientBoostingClassifier(n_estimators=10, random_state=0)
    return Pipeline([("pre", pre), ("clf", clf)]).fit(adult.train, adult.y)


@pytest.fixture(scope="module")
def sgd_pipeline(adult: Adult) -> Pipeline:
    """A linear classifier other than LogisticRegression."""
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL), ("num", StandardScaler(), NUMERIC)]
    )
    clf = SGDClassifier(loss="log_loss", random_state=0, max_iter=50, tol=1e-3)
    return Pipeline([("pre", pre), ("clf", clf)]).fit(adult.train, adult.y)


def _opaque(pipeline: Pipeline) -> Any:
    def score(frame: Any) -> np.ndarray:
        return pipeline.predict_proba(frame)[:, 1]

    return score


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gb_pipeline", TreeExplainer),
        ("hgb_pipeline", TreeExplainer),
        ("rf_pipeline", TreeExplainer),
        ("et_pipeline", TreeExplainer),
        ("numeric_gb", TreeExplainer),
        ("lr_pipeline", LinearExplainer),
        ("sgd_pipeline", LinearExplainer),
        ("knn_pipeline", PermutationExplainer),
        ("poly_pipeline", PermutationExplainer),
    ],
)
def test_each_kind_of_model_gets_its_explainer(request: pytest.FixtureRequest, model: str, expected: type) -> None:
    fitted = request.getfixturevalue(model)
    space = "log_odds" if expected is LinearExplainer else "probability"
    explainer = make_explainer(fitted, output_space=space, random_state=4, positive_class=POSITIVE)
    assert type(explainer) is expected
    assert (explainer.model, explainer.output_space, explainer.random_state) == (fitted, space, 4)
    if expected is PermutationExplainer:
        assert explainer.max_evals == 500


def test_a_plain_callable_gets_the_model_agnostic_explainer(adult: Adult, gb_pipeline: Pipeline) -> None:
    explainer = make_explainer(_opaque(gb_pipeline), max_evals=64)
    assert isinstance(explainer, PermutationExplainer) and explainer.max_evals == 64


def test_no_fallback_names_the_known_explainers_and_why(knn_pipeline: Pipeline, poly_pipeline: Pipeline) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        make_explainer(knn_pipeline, fallback=False)
    message = str(info.value)
    assert "known explainers: tree, linear, permutation" in message
    assert "KNeighborsClassifier is not a supported tree ensemble" in message
    assert "the model-agnostic fallback is disabled" in message
    assert info.value.known == ("tree", "linear", "permutation")
    with pytest.raises(UnsupportedModelError, match=r"'Pipeline\.pre\.poly' \(PolynomialFeatures\)"):
        make_explainer(poly_pipeline, fallback=False)
    with pytest.raises(UnsupportedModelError, match="is not callable"):
        make_explainer(object())


def test_output_space_is_never_switched_silently(adult: Adult, lr_pipeline: Pipeline, rf_pipeline: Pipeline) -> None:
    with pytest.raises(UnsupportedOutputSpaceError, match="not additive"):
        make_explainer(lr_pipeline, output_space="probability")
    with pytest.raises(UnsupportedOutputSpaceError, match="forest averages probabilities"):
        make_explainer(rf_pipeline, output_space="log_odds")
    with pytest.raises(UnsupportedOutputSpaceError, match="output spaces are log_odds, probability, value"):
        make_explainer(lr_pipeline, output_space="logit")
    with pytest.raises(UnsupportedOutputSpaceError):
        LinearExplainer(lr_pipeline, output_space="probability").fit(adult.background)
    forced = make_explainer(lr_pipeline, output_space="probability", method="permutation")
    assert isinstance(forced, PermutationExplainer)
    # "value" (a regression model's own units) is for callables, never for a classifier's probabilities
    with pytest.raises(UnsupportedOutputSpaceError):
        make_explainer(lr_pipeline, output_space="value", method="permutation")
    assert isinstance(make_explainer(lambda frame: frame.iloc[:, 0] * 2.0, output_space="value"), PermutationExplainer)


def test_unknown_method_name_lists_the_registry(gb_pipeline: Pipeline) -> None:
    with pytest.raises(UnknownExplainerError, match="known explainers: tree, linear, permutation"):
        make_explainer(gb_pipeline, method="kernel")
    with pytest.raises(UnsupportedModelError, match="linear"):
        make_explainer(gb_pipeline, method="linear", output_space="log_odds")


def test_multiclass_boosting_is_left_to_the_fallback(adult: Adult) -> None:
    pre = ColumnTransformer([("num", "passthrough", NUMERIC)])
    y = adult.train["race"].fillna("none")
    model = Pipeline([("pre", pre), ("clf", GradientBoostingClassifier(n_estimators=3))]).fit(adult.train, y)
    assert "only binary boosting" in str(TreeExplainer.why_unsupported(model))
    assert type(make_explainer(model, positive_class="White")) is PermutationExplainer


def test_probing_never_imports_xgboost_or_lightgbm(gb_pipeline: Pipeline) -> None:
    before = {name for name in ("xgboost", "lightgbm") if name in sys.modules}
    for cls in EXPLAINERS.values():
        cls.supports(gb_pipeline)
        cls.supports(object())
    assert {name for name in ("xgboost", "lightgbm") if name in sys.modules} == before


def test_import_is_cheap_and_independent_of_the_gateway() -> None:
    code = (
        "import sys, explainers; "
        "print(sorted(m for m in ('shap', 'sklearn', 'pandas', 'flask', 'gateway', 'numba') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- conformance: every registered explainer honours the same contract -------------------------------

CONFORMANCE = [
    ("tree", "gb_pipeline", "probability"),
    ("linear", "lr_pipeline", "log_odds"),
    ("permutation", "numeric_gb", "probability"),
]


def test_conformance_covers_the_registry() -> None:
    assert sorted(name for name, _, _ in CONFORMANCE) == sorted(EXPLAINERS)


@pytest.mark.parametrize(("name", "model", "space"), CONFORMANCE)
def test_explainer_contract(request: pytest.FixtureRequest, adult: Adult, name: str, model: str, space: str) -> None:
    fitted = request.getfixturevalue(model)
    cls = EXPLAINERS[name]
    params: dict[str, Any] = {"output_space": space, "random_state": 11, "positive_class": POSITIVE}
    if name == "permutation":
        params["max_evals"] = 60
    explainer = cls(fitted, **params)
    # parameters stored unchanged; get_params/set_params round-trip; no fitted state yet
    assert {k: explainer.get_params()[k] for k in params} == params
    assert explainer.get_params()["model"] is fitted
    assert explainer.set_params(random_state=11) is explainer
    with pytest.raises(ValueError, match="invalid parameter"):
        explainer.set_params(colour="red")
    assert not [a for a in vars(explainer) if a.endswith("_") and not a.startswith("_")]
    with pytest.raises(NotFittedError):
        explainer.explain(adult.rows[:1])
    assert cls.supports(fitted)
    # fit returns self and sets trailing-underscore attributes
    assert explainer.fit(adult.background) is explainer
    features = list(fitted.feature_names_in_)
    assert explainer.feature_names_ == features
    assert explainer.positive_class_ == POSITIVE
    assert explainer.background_size_ == len(adult.background)
    # explain: one frozen RawExplanation per row, every raw feature, additive, reproducible
    rows = adult.rows[features].iloc[:3]
    result = explainer.explain(rows)
    assert len(result) == 3 and all(isinstance(e, RawExplanation) for e in result)
    assert all(dataclasses.is_dataclass(e) and type(e).__dataclass_params__.frozen for e in result)  # type: ignore[attr-defined]
    for e in result:
        assert list(e.attributions) == features
        assert e.output_space == space and e.random_state == 11 and e.explainer_version == explainers.__version__
        assert abs(e.base_value + sum(e.attributions.values()) - e.output) == pytest.approx(
            e.additivity_error, abs=1e-12
        )
        assert e.additivity_error <= (1e-6 if cls.exact else 1e-9)
    assert explainer.explain(rows) == result
    with pytest.raises(ValueError, match="lack the raw feature columns"):
        explainer.explain(rows.drop(columns=[features[0]]))
    assert repr(explainer).startswith(f"{cls.__name__}(")


def test_explain_accepts_rows_with_extra_or_reordered_columns(adult: Adult, gb_pipeline: Pipeline) -> None:
    explainer = TreeExplainer(gb_pipeline).fit(adult.background)
    rows = adult.rows.iloc[:2]
    shuffled = rows[list(reversed(ADULT_COLUMNS))].assign(extra=1)
    assert explainer.explain(shuffled) == explainer.explain(rows)


@pytest.mark.parametrize("model", ["gb_pipeline", "lr_pipeline", "numeric_gb"])
def test_records_explain_like_a_frame(request: pytest.FixtureRequest, adult: Adult, model: str) -> None:
    """A JSON-like record (feature -> raw value) gives the same explanation as a one-row DataFrame."""
    fitted = request.getfixturevalue(model)
    space = "log_odds" if model == "lr_pipeline" else "probability"
    explainer = make_explainer(fitted, output_space=space, positive_class=POSITIVE).fit(adult.background)
    rows = pd.concat([adult.rows.iloc[:3], adult.rows[adult.rows.isna().any(axis=1)].iloc[:2]])
    assert rows.isna().any(axis=None)
    records = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in rows.to_dict("records")]
    by_frame = explainer.explain(rows)
    assert explainer.explain(records) == by_frame  # None (JSON null) is missing, like NaN
    assert explainer.explain(records[2]) == explainer.explain(rows.iloc[[2]])
    with pytest.raises(ValueError, match="lack the raw feature columns"):
        explainer.explain({"age": 40})


def test_records_reach_the_model_agnostic_explainer(adult: Adult, numeric_gb: GradientBoostingClassifier) -> None:
    explainer = PermutationExplainer(numeric_gb, max_evals=40).fit(adult.background)
    record = adult.rows[NUMERIC].iloc[0].to_dict()
    assert explainer.explain(record) == explainer.explain(adult.rows.iloc[[0]])
