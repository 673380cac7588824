"""ONNX in process: scored by onnxruntime, explained model-agnostically (additive; agrees with shap's
Permutation explainer on the same model within the errors the gateway states)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import shap

from explainers import PermutationExplainer
from gateway.adapters import AdapterError, load_adapter
from gateway.jobs.explain import ExplainKind
from tests.conftest import Gateway
from tests.support.adult import CATEGORICAL, FEATURES, NUMERIC, POSITIVE, adult_pipeline
from tests.support.onnx import adult_onnx
from tests.support.registration import background_csv, manifest_for, register
from tests.test_api_boosting import adult_features


@pytest.fixture(scope="module")
def onnx_model() -> tuple[bytes, Any, pd.DataFrame]:
    pipe, X = adult_pipeline(n_rows=2000)
    return adult_onnx(pipe), pipe, X


@pytest.mark.parametrize("zipmap", [False, True])
def test_onnx_scores_as_the_pipeline_it_was_converted_from(zipmap: bool) -> None:
    pipe, X = adult_pipeline(n_rows=2000)
    adapter = load_adapter("onnx", adult_onnx(pipe, zipmap=zipmap), positive_class=POSITIVE, feature_names=FEATURES,
                           config={})
    rows = X.iloc[:300]
    # ONNX's tree ensemble sums in float32: the same model to about 1e-7
    np.testing.assert_allclose(adapter.score(rows), pipe.predict_proba(rows)[:, 1], rtol=0, atol=5e-7)
    assert adapter.describe()["estimator"].startswith("onnx (skl2onnx")


def _codes(frame: pd.DataFrame, categories: dict[str, list[str]]) -> np.ndarray:
    out = np.empty((len(frame), len(FEATURES)))
    for j, name in enumerate(FEATURES):
        out[:, j] = ([categories[name].index(v) for v in frame[name]] if name in CATEGORICAL
                     else frame[name].to_numpy(dtype=float))
    return out


def test_permutation_estimates_agree_with_shap_within_the_stated_errors(onnx_model: tuple[bytes, Any, pd.DataFrame]) -> None:
    data, _, X = onnx_model
    adapter = load_adapter("onnx", data, positive_class=POSITIVE, feature_names=FEATURES, config={})
    background, rows = X.iloc[:40], X.iloc[1000:1006]
    ours = PermutationExplainer(lambda frame: adapter.score(frame), background_size=None).fit(background)
    explained = ours.explain(rows)

    # shap's Permutation explainer on the same model and background (categories as integer codes it can mask)
    categories = {n: sorted(set(background[n]) | set(rows[n])) for n in CATEGORICAL}

    def on_codes(codes: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame({n: ([categories[n][int(c)] for c in codes[:, j]] if n in CATEGORICAL else codes[:, j])
                              for j, n in enumerate(FEATURES)})
        return adapter.score(frame)

    masker = shap.maskers.Independent(_codes(background, categories), max_samples=len(background))
    reference = shap.explainers.Permutation(on_codes, masker, seed=0)(_codes(rows, categories), max_evals=6000)

    covered = total = 0
    for i, e in enumerate(explained):
        assert e.errors is not None and e.method == "permutation_shap_estimate"
        # additivity: exact by construction, checked, and the same total as shap's
        assert abs(e.base_value + sum(e.attributions.values()) - e.output) <= 1e-9
        assert e.output == pytest.approx(float(adapter.score(rows.iloc[[i]])[0]), abs=1e-12)
        assert e.base_value == pytest.approx(float(reference.base_values[i]), abs=1e-9)
        for j, name in enumerate(FEATURES):
            gap = abs(e.attributions[name] - float(reference.values[i, j]))
            covered += gap <= e.errors[name] + 1e-12
            total += 1
            assert gap <= 3 * e.errors[name] + 1e-9, (i, name, gap, e.errors[name])
    assert covered / total >= 0.9, f"{covered}/{total} within the stated 95 % error"


def test_onnx_refuses_a_graph_without_class_labels_and_a_corrupt_file() -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    X = np.arange(20.0).reshape(10, 2)
    graph = to_onnx(LinearRegression().fit(X, X[:, 0]), initial_types=[("x", FloatTensorType([None, 2]))])
    with pytest.raises(AdapterError, match="names no class labels"):
        load_adapter("onnx", graph.SerializeToString(), positive_class=1, feature_names=["a", "b"], config={})
    with pytest.raises(AdapterError, match="not a readable ONNX model"):
        load_adapter("onnx", b"\xff\x00 not protobuf", positive_class=1, feature_names=["a", "b"], config={})


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_onnx_decision_is_explained_by_the_job(gateway: Gateway, onnx_model: tuple[bytes, Any, pd.DataFrame]) -> None:
    data, pipe, X = onnx_model
    background = background_csv(X.iloc[:30])
    manifest = manifest_for("adult-onnx", data, adult_features(X), positive_class=POSITIVE, background=background,
                            adapter="onnx")
    manifest["explanation"] |= {"target_error": 0.01}
    resp = register(gateway.client, gateway.auth("admin"), manifest, data, background)
    assert resp.status_code == 201, resp.get_json()
    row = X.iloc[1500]
    features = {n: (float(row[n]) if n in NUMERIC else str(row[n])) for n in FEATURES}
    decided = gateway.decide({"subject": gateway.sample["subject"], "features": features}, model="adult-onnx")
    assert decided.status_code == 201, decided.get_json()
    did, score = decided.get_json()["decision_id"], decided.get_json()["score"]
    assert score == pytest.approx(float(pipe.predict_proba(X.iloc[[1500]])[0, 1]), abs=5e-7)
    url = f"/v1/decisions/{did}/explanation?lang=ru"
    assert gateway.client.get(url, headers=gateway.auth("agency_a")).status_code == 202
    assert ExplainKind(gateway.app).run_once() == 1
    body = gateway.client.get(url, headers=gateway.auth("agency_a")).get_json()
    assert body["method"] == "permutation_shap_estimate"
    assert body["output"] == pytest.approx(score, abs=1e-12)
    assert body["additivity_error"] <= 1e-9
    assert "оценки" in body["text"]["precision"]
