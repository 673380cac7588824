"""Regression in process beyond scikit-learn: LightGBM and XGBoost regressors explained exactly in the model's
units, and an ONNX regressor explained model-agnostically, on UCI Adult (target: hours worked per week).

"Exact" is checked as for the classifiers (tests/test_boosting_adapters.py): against shap's TreeExplainer
called directly on the booster read back from the same bytes, in the model's own output ("raw", which for
an identity-link regressor is its prediction) - with one column per raw feature the gateway's raw-feature
value IS shap's column value. shap's tree walk accumulates in float32: on hours (outputs near 40) its
values are up to 2e-6 from the exact ones, so the agreement is 1e-6 relative to the largest output
(1e-6 absolute on the classifiers' log-odds near 1); and LightGBM's grouped values are checked against
brute-force enumeration of every coalition to 1e-9 (they are exact; shap is not, by 1e-6). Through the API: the decision is banded, explained in its
transaction (exact) or by the job (ONNX), in hours, in kk/ru/en.
"""

from __future__ import annotations

import json
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import shap
import skops.io as sio
import sqlalchemy as sa
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.pipeline import Pipeline

from explainers import TreeExplainer, make_explainer
from explainers.grouping import transformed_sources
from gateway.adapters import AdapterError, load_adapter
from gateway.config import SKOPS_TRUSTED_TYPES
from gateway.extensions import db
from gateway.jobs.explain import ExplainKind
from tests.conftest import Gateway
from tests.support.adult import CATEGORICAL, adult
from tests.support.boosting import bundle, preprocessing
from tests.support.onnx import to_onnx_bytes
from tests.support.registration import background_csv, manifest_for, register
from tests.test_api_boosting import adult_features

CONFIG = {"SKOPS_TRUSTED_TYPES": SKOPS_TRUSTED_TYPES}
LIBRARIES = ["lightgbm", "xgboost"]
TARGET = "hours_per_week"
NUMBERS = ["age", "education_num", "capital_gain", "capital_loss"]
FEATURES = NUMBERS + CATEGORICAL
LANGS = ("kk", "ru", "en")
HOURS = {"kk": "сағ.", "ru": "ч", "en": "h"}
POLICY = {"kind": "regression", "unit": HOURS, "bands": [[35.0, "part_time"], [None, "full_time"]],
          "adverse_outcomes": ["part_time"]}


def hours_data(n_rows: int = 2000) -> tuple[pd.DataFrame, np.ndarray]:
    X, _ = adult()
    X = X.iloc[:n_rows]
    return X[FEATURES], X[TARGET].to_numpy(dtype=float)


def train_regressor(library: str, X: Any, y: np.ndarray) -> Any:
    if library == "lightgbm":
        return lgb.LGBMRegressor(n_estimators=30, max_depth=3, num_leaves=8, random_state=0, verbose=-1).fit(X, y)
    return xgb.XGBRegressor(n_estimators=30, max_depth=3, random_state=0, n_jobs=1).fit(X, y)


def booster_file(library: str, model: Any) -> tuple[str, bytes]:
    if library == "lightgbm":
        return "model.txt", model.booster_.model_to_string().encode()
    return "model.json", bytes(model.get_booster().save_raw("json"))


def direct_booster(library: str, data: bytes) -> Any:
    if library == "lightgbm":
        return lgb.Booster(model_str=data.decode())
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster


def shap_raw(library: str, data: bytes, background: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
    explainer = shap.TreeExplainer(direct_booster(library, data), data=background,
                                   feature_perturbation="interventional", model_output="raw")
    values = np.asarray(explainer.shap_values(rows, check_additivity=True))
    return values, float(np.asarray(explainer.expected_value).ravel()[0])


def hours_preprocessing(encoding: str) -> ColumnTransformer:
    """The boosting tests' encoding (tests/support/boosting.py) of this target's features."""
    encoder = preprocessing(encoding).transformers[0][1]
    return ColumnTransformer([("categorical", encoder, CATEGORICAL), ("numeric", "passthrough", NUMBERS)])


def regressor_pipeline(library: str, encoding: str = "ordinal") -> tuple[bytes, bytes, Any, Any, pd.DataFrame]:
    """(bundle, booster file, booster, preprocessing, raw rows) of a preprocessing + booster regressor."""
    X, y = hours_data()
    prep = hours_preprocessing(encoding).fit(X)
    model = train_regressor(library, prep.transform(X), y)
    name, data = booster_file(library, model)
    return bundle({name: data, "preprocessing.skops": sio.dumps(prep)}), data, model, prep, X


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_boosted_regressor_pipeline_equals_shap_in_the_models_units(library: str) -> None:
    artifact, data, model, prep, X = regressor_pipeline(library)
    adapter = load_adapter(library, artifact, positive_class=None, feature_names=FEATURES, config=CONFIG)
    rows, background = X.iloc[1000:1050], X.iloc[:100]
    np.testing.assert_allclose(adapter.score(rows), model.predict(prep.transform(rows)), rtol=0, atol=0)
    explainer = make_explainer(adapter.native().pipeline, output_space="value", positive_class=None).fit(background)
    assert isinstance(explainer, TreeExplainer)
    got = explainer.explain(rows)
    values, base = shap_raw(library, data, prep.transform(background), prep.transform(rows))
    sources = transformed_sources(prep, FEATURES)
    assert sorted(sources) == list(range(len(FEATURES)))  # one column per raw feature
    expected = np.zeros((len(rows), len(FEATURES)))
    for column, raw in enumerate(sources):
        expected[:, raw] += values[:, column]
    names = list(explainer.feature_names_)
    matrix = np.array([[e.attributions[n] for n in names] for e in got])
    scale = 1e-6 * float(np.abs(adapter.score(rows)).max())
    np.testing.assert_allclose(matrix, expected[:, [FEATURES.index(n) for n in names]], rtol=0, atol=scale)
    assert abs(got[0].base_value - base) <= scale
    assert got[0].output_space == "value" and got[0].method.startswith("tree_shap_interventional")
    np.testing.assert_allclose([e.output for e in got], adapter.score(rows), rtol=0, atol=0)
    # XGBoost sums its 30 trees in float32: half a unit in the last place per addition, on top of 1e-6
    rounding = 15.5 * np.spacing(np.float32(max(abs(e.output) for e in got))) if library == "xgboost" else 0.0
    assert max(e.additivity_error for e in got) <= 1e-6 + rounding


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_boosted_regressor_alone_equals_shap(library: str) -> None:
    X, y = hours_data()
    X = X[NUMBERS]
    model = train_regressor(library, X, y)
    _, data = booster_file(library, model)
    adapter = load_adapter(library, data, positive_class=None, feature_names=NUMBERS[::-1], config=CONFIG)
    rows, background = X.iloc[1000:1040], X.iloc[:100]
    np.testing.assert_allclose(adapter.score(rows), model.predict(rows), rtol=0, atol=0)
    explainer = make_explainer(adapter.native().pipeline, output_space="value", positive_class=None).fit(background)
    got = explainer.explain(rows)
    values, base = shap_raw(library, data, background.to_numpy(), rows.to_numpy())
    assert list(explainer.feature_names_) == NUMBERS
    scale = 1e-6 * float(np.abs(adapter.score(rows)).max())
    np.testing.assert_allclose(np.array([[e.attributions[n] for n in NUMBERS] for e in got]), values, rtol=0, atol=scale)
    assert abs(got[0].base_value - base) <= scale
    if library == "lightgbm":  # flattened: each raw feature one player, checked against enumeration elsewhere
        assert got[0].method == "tree_shap_interventional_grouped"


def test_lightgbm_regressor_values_are_the_exact_shapley_values_of_each_raw_feature() -> None:
    """Brute force: every coalition of the ten raw features, each averaged over the background (float64)."""
    import itertools
    import math

    artifact, data, _, prep, X = regressor_pipeline("lightgbm")
    adapter = load_adapter("lightgbm", artifact, positive_class=None, feature_names=FEATURES, config=CONFIG)
    explainer = make_explainer(adapter.native().pipeline, output_space="value", positive_class=None).fit(X.iloc[:20])
    background, booster = prep.transform(X.iloc[:20]), direct_booster("lightgbm", data)
    sources = transformed_sources(prep, FEATURES)
    n = len(FEATURES)
    for i in (1000, 1001, 1002):
        row = prep.transform(X.iloc[[i]])
        value = {}
        for size in range(n + 1):
            for coalition in itertools.combinations(range(n), size):
                columns = [c for c in range(len(sources)) if sources[c] in coalition]
                mixed = background.copy()
                mixed[:, columns] = row[0, columns]
                value[coalition] = float(booster.predict(mixed).mean())
        exact = np.zeros(n)
        for f in range(n):
            others = [g for g in range(n) if g != f]
            for size in range(n):
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                for coalition in itertools.combinations(others, size):
                    exact[f] += weight * (value[tuple(sorted((*coalition, f)))] - value[coalition])
        [got] = explainer.explain(X.iloc[[i]])
        np.testing.assert_allclose([got.attributions[name] for name in FEATURES], exact, rtol=0, atol=1e-9)


def test_regressors_are_refused_where_they_do_not_fit() -> None:
    X, y = hours_data(400)
    X = X[NUMBERS]
    _, lgbm = booster_file("lightgbm", train_regressor("lightgbm", X, y))
    _, xgbm = booster_file("xgboost", train_regressor("xgboost", X, y))
    for library, data in (("lightgbm", lgbm), ("xgboost", xgbm)):
        with pytest.raises(AdapterError, match="is not a regressor|has no predict_proba"):
            load_adapter(library, data, positive_class=1, feature_names=NUMBERS, config=CONFIG)
    name = "model.txt"
    with pytest.raises(AdapterError, match="regressor .* its bundle has no classes.json"):
        load_adapter("lightgbm", bundle({name: lgbm, "classes.json": b'["a", "b"]'}), positive_class=None,
                     feature_names=NUMBERS, config=CONFIG)
    poisson = lgb.LGBMRegressor(objective="poisson", n_estimators=5, verbose=-1).fit(X, y)
    with pytest.raises(AdapterError, match="objective is 'poisson'.*identity-link regressors"):
        load_adapter("lightgbm", poisson.booster_.model_to_string().encode(), positive_class=None,
                     feature_names=NUMBERS, config=CONFIG)
    gamma = xgb.XGBRegressor(objective="reg:gamma", n_estimators=5, n_jobs=1).fit(X, y)
    with pytest.raises(AdapterError, match="objective is 'reg:gamma'"):
        load_adapter("xgboost", bytes(gamma.get_booster().save_raw("json")), positive_class=None,
                     feature_names=NUMBERS, config=CONFIG)
    # a classifier under a regression policy
    classifier = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y > 40)
    with pytest.raises(AdapterError, match="is not a regressor"):
        load_adapter("lightgbm", classifier.booster_.model_to_string().encode(), positive_class=None,
                     feature_names=NUMBERS, config=CONFIG)


# --- ONNX ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_regressor() -> tuple[bytes, Pipeline, pd.DataFrame]:
    X, y = hours_data()
    pipe = Pipeline([("preprocess", hours_preprocessing("onehot")), ("model", GradientBoostingRegressor(
        n_estimators=40, max_depth=3, random_state=0))]).fit(X, y)
    return to_onnx_bytes(pipe, FEATURES, NUMBERS), pipe, X


def test_an_onnx_regressor_scores_as_its_pipeline_and_is_additive(onnx_regressor: tuple[bytes, Any, pd.DataFrame]) -> None:
    data, pipe, X = onnx_regressor
    adapter = load_adapter("onnx", data, positive_class=None, feature_names=FEATURES, config={})
    rows = X.iloc[1000:1200]
    # onnxruntime's tree ensemble sums in float32: hours to about 1e-5 (float32 spacing at 40 is 4e-6)
    np.testing.assert_allclose(adapter.score(rows), pipe.predict(rows), rtol=0, atol=2e-5)
    assert adapter.describe()["positive_class"] is None
    explainer = make_explainer(lambda frame: adapter.score(frame), output_space="value", positive_class=None,
                               target_error=0.05, max_evals_cap=2000).fit(X.iloc[:30])
    got = explainer.explain(rows.iloc[:3])
    for e in got:
        assert e.method == "permutation_shap_estimate" and e.output_space == "value"
        assert abs(e.base_value + sum(e.attributions.values()) - e.output) <= 1e-9 * max(1.0, abs(e.output))
        assert e.errors is not None and all(v >= 0 for v in e.errors.values())
    with pytest.raises(AdapterError, match="classifier .* a regression policy needs a regression model"):
        from tests.support.adult import adult_pipeline
        from tests.support.onnx import adult_onnx

        classifier, _ = adult_pipeline(n_rows=300)
        load_adapter("onnx", adult_onnx(classifier), positive_class=None, feature_names=list(classifier.feature_names_in_),
                     config={})


# --- through the API ------------------------------------------------------------------------------------

def hours_features(X: pd.DataFrame) -> list[dict[str, Any]]:
    return [f for f in adult_features(X) if f["name"] in FEATURES]


def register_regressor(gw: Gateway, name: str, adapter: str, artifact: bytes, X: pd.DataFrame, **explanation: Any) -> None:
    background = background_csv(X.iloc[:40])
    manifest = manifest_for(name, artifact, hours_features(X), positive_class=None, background=background,
                            adapter=adapter)
    manifest["policy"] = POLICY
    manifest["explanation"] |= explanation
    resp = register(gw.client, gw.auth("admin"), manifest, artifact, background)
    assert resp.status_code == 201, resp.get_json()


def decide_row(gw: Gateway, name: str, X: pd.DataFrame, i: int) -> dict[str, Any]:
    row = X.iloc[i]
    features = {n: (float(row[n]) if n in NUMBERS else str(row[n])) for n in FEATURES}
    decided = gw.decide({"subject": gw.sample["subject"], "features": features}, model=name)
    assert decided.status_code == 201, decided.get_json()
    body: dict[str, Any] = decided.get_json()
    return body


def check_texts(gw: Gateway, did: str, value: float) -> dict[str, Any]:
    texts = {lang: gw.client.get(f"/v1/decisions/{did}/explanation?lang={lang}", headers=gw.auth("agency_a")).get_json()
             for lang in LANGS}
    assert f"The system computed the amount {value:,.0f} h" in texts["en"]["text"]["summary"]
    assert all(("raised the amount by" in s or "lowered the amount by" in s) and " h" in s
               for s in texts["en"]["text"]["factors"]), texts["en"]["text"]["factors"]
    assert all(("увеличило сумму на" in s or "уменьшило сумму на" in s) and " ч" in s
               for s in texts["ru"]["text"]["factors"]), texts["ru"]["text"]["factors"]
    assert all("соманы" in s and "сағ." in s for s in texts["kk"]["text"]["factors"]), texts["kk"]["text"]["factors"]
    return texts


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_boosted_regressor_decides_by_band_and_is_explained_exactly_in_its_transaction(
        gateway: Gateway, library: str) -> None:
    artifact, _, model, prep, X = regressor_pipeline(library)
    register_regressor(gateway, f"hours-{library}", library, artifact, X)
    body = decide_row(gateway, f"hours-{library}", X, 1234)
    expected = float(model.predict(prep.transform(X.iloc[[1234]]))[0])
    assert body["score"] == pytest.approx(expected, rel=1e-12)
    assert body["outcome"] == ("part_time" if expected < 35 else "full_time")
    did = body["decision_id"]
    shown = gateway.client.get(f"/v1/decisions/{did}/explanation?lang=en", headers=gateway.auth("agency_a"))
    assert shown.status_code == 200  # exact: computed in the decision's transaction, no job
    en = shown.get_json()
    assert en["method"].startswith("tree_shap_interventional") and en["output_space"] == "value"
    assert en["output"] == pytest.approx(expected, rel=1e-12)
    with gateway.app.app_context():
        stored, error = db.session.execute(
            sa.text("SELECT attributions, additivity_error FROM explanations WHERE decision_id = :d"), {"d": did}).one()
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    # held to 1e-6 relative to the value's size (XGBoost sums its trees in float32: 2e-6 h at 40 h)
    assert abs(en["base_value"] + sum(stored.values()) - expected) <= 1e-6 * expected and error <= 1e-6 * expected
    direct = make_explainer(load_adapter(library, artifact, positive_class=None, feature_names=FEATURES,
                                         config=CONFIG).native().pipeline, output_space="value",
                            positive_class=None).fit(X.iloc[:40])
    [again] = direct.explain(X.iloc[[1234]])
    np.testing.assert_allclose([stored[n] for n in FEATURES], [again.attributions[n] for n in FEATURES], rtol=0, atol=1e-9)
    check_texts(gateway, did, expected)


def test_an_onnx_regressor_decides_and_is_explained_by_the_job(
        gateway: Gateway, onnx_regressor: tuple[bytes, Any, pd.DataFrame]) -> None:
    data, pipe, X = onnx_regressor
    register_regressor(gateway, "hours-onnx", "onnx", data, X, target_error=0.05, max_evals_cap=2000)
    body = decide_row(gateway, "hours-onnx", X, 1500)
    expected = float(pipe.predict(X.iloc[[1500]])[0])
    assert body["score"] == pytest.approx(expected, abs=2e-5)
    did = body["decision_id"]
    url = f"/v1/decisions/{did}/explanation?lang=en"
    assert gateway.client.get(url, headers=gateway.auth("agency_a")).status_code == 202
    assert ExplainKind(gateway.app).run_once() == 1
    en = gateway.client.get(url, headers=gateway.auth("agency_a")).get_json()
    assert en["method"] == "permutation_shap_estimate" and en["output_space"] == "value"
    assert en["output"] == pytest.approx(body["score"], rel=1e-12)
    assert en["additivity_error"] <= 1e-9 * abs(body["score"])
    check_texts(gateway, did, body["score"])
