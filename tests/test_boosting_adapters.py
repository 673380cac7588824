"""LightGBM and XGBoost in process: loaded from their own formats, explained exactly as shap explains them.

"Exact" is checked against shap called directly on the booster read back from the same bytes, in the
margin (log-odds) space, to 1e-6:
- ordinal encoding (one column per raw feature) or the booster alone: the gateway's attribution of each
  raw feature IS shap's value of its column (raw-feature players and column players coincide);
- one-hot encoding: shap's column values summed per raw feature equal the gateway's column-sum method,
  and the gateway's raw-feature Shapley values (the default) are additive to the booster's own margin.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import shap
import xgboost as xgb

from explainers import TreeExplainer, make_explainer
from explainers.grouping import transformed_sources
from gateway.adapters import AdapterError, UntrustedArtifactError, load_adapter
from gateway.config import SKOPS_TRUSTED_TYPES
from tests.support.adult import FEATURES, NUMERIC, POSITIVE
from tests.support.boosting import adult_booster_alone, adult_booster_pipeline, bundle

CONFIG = {"SKOPS_TRUSTED_TYPES": SKOPS_TRUSTED_TYPES}
LIBRARIES = ["lightgbm", "xgboost"]


def _direct_booster(library: str, data: bytes) -> Any:
    """The booster read back from its own bytes by its own library (what shap is called on)."""
    if library == "lightgbm":
        return lgb.Booster(model_str=data.decode())
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster


def _shap_margin(library: str, data: bytes, background: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
    explainer = shap.TreeExplainer(_direct_booster(library, data), data=background,
                                   feature_perturbation="interventional", model_output="raw")
    values = np.asarray(explainer.shap_values(rows, check_additivity=True))
    return values, float(np.asarray(explainer.expected_value).ravel()[0])


def _model_file(library: str, artifact: bytes) -> bytes:
    import io
    import zipfile

    name = "model.txt" if library == "lightgbm" else "model.json"
    return zipfile.ZipFile(io.BytesIO(artifact)).read(name)


def _matrix(explanations: list[Any], names: list[str]) -> np.ndarray:
    return np.array([[e.attributions[n] for n in names] for e in explanations])


@pytest.mark.parametrize("library", LIBRARIES)
def test_pipeline_with_one_column_per_feature_equals_shap(library: str) -> None:
    artifact, _, prep, X = adult_booster_pipeline(library, encoding="ordinal")
    adapter = load_adapter(library, artifact, positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG)
    native = adapter.native()
    background, rows = X.iloc[:100], X.iloc[1000:1050]
    explainer = make_explainer(native.pipeline, output_space="log_odds", positive_class=POSITIVE).fit(background)
    assert isinstance(explainer, TreeExplainer)
    got = explainer.explain(rows)

    transformed_bg, transformed = prep.transform(background), prep.transform(rows)
    values, base = _shap_margin(library, _model_file(library, artifact), transformed_bg, transformed)
    sources = transformed_sources(prep, FEATURES)
    assert sorted(sources) == list(range(len(FEATURES)))  # one column per raw feature
    expected = np.zeros((len(rows), len(FEATURES)))
    for column, raw in enumerate(sources):
        expected[:, raw] += values[:, column]
    names = list(explainer.feature_names_)
    np.testing.assert_allclose(_matrix(got, names), expected[:, [FEATURES.index(n) for n in names]], rtol=0, atol=1e-6)
    assert abs(got[0].base_value - base) <= 1e-6
    # and the output explained is the adapter's own score, as a margin
    scores = adapter.score(rows)
    float32 = library == "xgboost"  # XGBoost predicts in float32
    np.testing.assert_allclose(1 / (1 + np.exp(-np.array([e.output for e in got]))), scores, rtol=0,
                               atol=1e-7 if float32 else 1e-12)


@pytest.mark.parametrize("library", LIBRARIES)
def test_one_hot_pipeline_sums_shap_columns_per_raw_feature(library: str) -> None:
    artifact, _, prep, X = adult_booster_pipeline(library, encoding="onehot")
    adapter = load_adapter(library, artifact, positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG)
    pipeline = adapter.native().pipeline
    background, rows = X.iloc[:100], X.iloc[1000:1030]
    columns = make_explainer(pipeline, output_space="log_odds", positive_class=POSITIVE, players="columns").fit(background)
    values, base = _shap_margin(library, _model_file(library, artifact), prep.transform(background), prep.transform(rows))
    sources = transformed_sources(prep, FEATURES)
    expected = np.stack([values[:, sources == i].sum(axis=1) for i in range(len(FEATURES))], axis=1)
    names = list(columns.feature_names_)
    got = columns.explain(rows)
    np.testing.assert_allclose(_matrix(got, names), expected[:, [FEATURES.index(n) for n in names]], rtol=0, atol=1e-6)
    assert got[0].method.startswith("tree_shap_interventional_column_sum")

    # The default (each raw feature one player) is additive to the booster's own margin to 1e-6.
    raw = make_explainer(pipeline, output_space="log_odds", positive_class=POSITIVE).fit(background)
    explained = raw.explain(rows)
    margin = values.sum(axis=1) + base
    np.testing.assert_allclose([e.base_value + sum(e.attributions.values()) for e in explained], margin, rtol=0, atol=1e-6)
    if library == "lightgbm":
        assert explained[0].method == "tree_shap_interventional_grouped"


@pytest.mark.parametrize(("library", "fmt"), [("lightgbm", "txt"), ("xgboost", "json"), ("xgboost", "ubj")])
def test_booster_alone_equals_shap(library: str, fmt: str) -> None:
    data, model, X = adult_booster_alone(library, fmt=fmt if fmt != "txt" else "json")
    adapter = load_adapter(library, data, positive_class=1, feature_names=NUMERIC[::-1], config=CONFIG)
    rows, background = X.iloc[1000:1040], X.iloc[:100]
    np.testing.assert_allclose(adapter.score(rows), model.predict_proba(rows)[:, 1], rtol=0, atol=1e-12)
    explainer = make_explainer(adapter.native().pipeline, output_space="log_odds", positive_class=1).fit(background)
    got = explainer.explain(rows)
    values, base = _shap_margin(library, data, background.to_numpy(), rows.to_numpy())
    names = list(explainer.feature_names_)
    assert names == NUMERIC
    np.testing.assert_allclose(_matrix(got, names), values, rtol=0, atol=1e-6)
    assert abs(got[0].base_value - base) <= 1e-6


def test_lightgbm_probability_space_is_additive() -> None:
    artifact, _, _, X = adult_booster_pipeline("lightgbm", encoding="onehot")
    adapter = load_adapter("lightgbm", artifact, positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG)
    explainer = make_explainer(adapter.native().pipeline, output_space="probability",
                               positive_class=POSITIVE).fit(X.iloc[:100])
    rows = X.iloc[1000:1030]
    got = explainer.explain(rows)
    np.testing.assert_allclose([e.base_value + sum(e.attributions.values()) for e in got], adapter.score(rows),
                               rtol=0, atol=1e-6)


def test_negative_class_flips_the_attributions() -> None:
    artifact, _, _, X = adult_booster_pipeline("xgboost", encoding="ordinal")
    pos = load_adapter("xgboost", artifact, positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG)
    neg = load_adapter("xgboost", artifact, positive_class="<=50K", feature_names=FEATURES, config=CONFIG)
    rows = X.iloc[1000:1010]
    np.testing.assert_allclose(pos.score(rows) + neg.score(rows), 1.0, rtol=0, atol=1e-7)  # float32
    a = make_explainer(pos.native().pipeline, output_space="log_odds", positive_class=POSITIVE).fit(X.iloc[:50])
    b = make_explainer(neg.native().pipeline, output_space="log_odds", positive_class="<=50K").fit(X.iloc[:50])
    np.testing.assert_allclose(_matrix(a.explain(rows), FEATURES), -_matrix(b.explain(rows), FEATURES), rtol=0, atol=1e-9)


# --- refusals ---------------------------------------------------------------------------------------------

def test_a_pickle_is_not_a_booster() -> None:
    import pickle

    with pytest.raises(AdapterError, match="not a LightGBM text model"):
        load_adapter("lightgbm", pickle.dumps({"a": 1}), positive_class=1, feature_names=NUMERIC, config=CONFIG)
    with pytest.raises(AdapterError, match="not an XGBoost JSON or UBJSON model"):
        load_adapter("xgboost", pickle.dumps({"a": 1}), positive_class=1, feature_names=NUMERIC, config=CONFIG)


def test_bundle_refuses_unknown_files_and_bad_classes() -> None:
    data, _, _ = adult_booster_alone("lightgbm")
    with pytest.raises(AdapterError, match=r"files this adapter does not read: \['model.pkl'\]"):
        load_adapter("lightgbm", bundle({"model.txt": data, "model.pkl": b"x"}), positive_class=1,
                     feature_names=NUMERIC, config=CONFIG)
    with pytest.raises(AdapterError, match="classes.json names 3 classes, the booster has 2"):
        load_adapter("lightgbm", bundle({"model.txt": data, "classes.json": b'["a", "b", "c"]'}), positive_class="a",
                     feature_names=NUMERIC, config=CONFIG)
    with pytest.raises(AdapterError, match="exactly one of"):
        load_adapter("xgboost", bundle({"classes.json": b'["a", "b"]'}), positive_class="a",
                     feature_names=NUMERIC, config=CONFIG)


def test_booster_alone_refuses_other_features() -> None:
    data, _, _ = adult_booster_alone("xgboost")
    with pytest.raises(AdapterError, match=r"missing \['age'\], not used by the model \['shoe_size'\]"):
        load_adapter("xgboost", data, positive_class=1, feature_names=[*NUMERIC[1:], "shoe_size"], config=CONFIG)


def test_regression_booster_is_not_a_classifier() -> None:
    X = pd.DataFrame({"a": np.arange(200.0), "b": np.arange(200.0) % 7})
    model = lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, X["a"] * 2)
    with pytest.raises(AdapterError, match="has no predict_proba.*a regression policy for a regressor"):
        load_adapter("lightgbm", model.booster_.model_to_string().encode(), positive_class=1, feature_names=["a", "b"],
                     config=CONFIG)


def test_preprocessing_needs_trusted_types() -> None:
    from sklearn.feature_selection import SelectFromModel
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    from tests.support.adult import adult
    from tests.support.boosting import preprocessing

    X, y = adult()
    prep = Pipeline([("encode", preprocessing("ordinal")), ("select", SelectFromModel(DecisionTreeClassifier(max_depth=3)))])
    prep.fit(X.iloc[:300], y.iloc[:300])
    data, _, _ = adult_booster_alone("lightgbm", n_rows=300)
    import skops.io as sio

    artifact = bundle({"model.txt": data, "preprocessing.skops": sio.dumps(prep)})
    config = {"SKOPS_TRUSTED_TYPES": [t for t in SKOPS_TRUSTED_TYPES if t != "sklearn.tree._tree.Tree"]}
    with pytest.raises(UntrustedArtifactError, match=r"preprocessing.skops needs types .*sklearn\.tree\._tree\.Tree"):
        load_adapter("lightgbm", artifact, positive_class=1, feature_names=FEATURES, config=config)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_multiclass_booster_gives_every_class_probability(library: str) -> None:
    """Three classes with their labels from classes.json; a multi-class policy explains one class at a time
    (boosting with more than two classes is not flattened: the model-agnostic explainer, per class)."""
    import json

    import skops.io as sio

    from tests.support.adult import adult
    from tests.support.boosting import preprocessing

    X, y = adult()
    X, y = X.iloc[:1500], y.iloc[:1500]
    tiers = np.where(y == POSITIVE, 2, np.where(X["age"] < 30, 0, 1))
    prep = preprocessing("ordinal").fit(X)
    if library == "lightgbm":
        model = lgb.LGBMClassifier(n_estimators=20, max_depth=3, num_leaves=8, random_state=0, verbose=-1)
        model.fit(prep.transform(X), tiers)
        files = {"model.txt": model.booster_.model_to_string().encode()}
    else:
        model = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=0, n_jobs=1).fit(prep.transform(X), tiers)
        files = {"model.json": bytes(model.get_booster().save_raw("json"))}
    labels = ["young", "other", "rich"]
    artifact = bundle(files | {"preprocessing.skops": sio.dumps(prep), "classes.json": json.dumps(labels).encode()})
    adapter = load_adapter(library, artifact, positive_class="rich", feature_names=FEATURES, config=CONFIG)
    rows = X.iloc[1000:1040]
    proba = adapter.probabilities(rows)
    assert adapter.classes == labels and proba.shape == (40, 3)
    np.testing.assert_allclose(proba, model.predict_proba(prep.transform(rows)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(adapter.score(rows), proba[:, 2], rtol=0, atol=0)
    explainer = make_explainer(adapter.native().pipeline, positive_class="other", max_evals=200).fit(X.iloc[:30])
    [e] = explainer.explain(rows.iloc[[0]])
    assert e.method == "permutation_shap_estimate" and e.output == pytest.approx(proba[0, 1], abs=1e-7)
    assert abs(e.base_value + sum(e.attributions.values()) - e.output) <= 1e-9
