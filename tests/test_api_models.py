"""The algorithm register over HTTP: list, read, upload, register, activate, suspend."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from gateway.manifest import load_manifest
from tests.conftest import Gateway, load_train_module
from tests.support.registration import CLASSIFIED, open_incident

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second training run: same manifest content, different artifact bytes (skops files differ per run)."""
    path: Path = load_train_module().train(tmp_path_factory.mktemp("retrained"), verbose=False)
    return path


def upload(gw: Gateway, data: bytes, who: str = "admin") -> Any:
    sha = hashlib.sha256(data).hexdigest()
    return gw.client.put(f"/v1/blobs/{sha}", data=data, headers={**gw.auth(who), "Content-Type": "application/octet-stream"})


def registration(manifest_path: Path, **changes: Any) -> tuple[dict[str, Any], bytes, bytes]:
    manifest, folder = load_manifest(manifest_path)
    body = manifest.model_dump(mode="json") | changes
    assert manifest.artifact and manifest.explanation.background
    return body, (folder / manifest.artifact).read_bytes(), (folder / manifest.explanation.background).read_bytes()


def test_the_register_lists_serving_models_publicly(gateway: Gateway) -> None:
    resp = gateway.client.get("/v1/models")
    assert resp.status_code == 200
    [model] = resp.get_json()["models"]
    assert model["name"] == "german-credit" and model["status"] == "active" and model["risk_class"] == "medium"  # as the fixture serves it
    assert model["purpose"]["kk"] and model["owner"]["ru"]
    assert model["links"]["decisions"] == "https://gateway.test/v1/models/german-credit/decisions"


def test_a_model_page_has_the_notice_and_the_schema(gateway: Gateway) -> None:
    resp = gateway.client.get("/v1/models/german-credit")
    assert resp.status_code == 200
    detail = resp.get_json()
    assert {f["name"] for f in detail["features"]} >= {"age", "credit_amount"}
    # Protected attributes are no model input; sex is collected monitor_only (its definition is public).
    assert not {f["name"] for f in detail["features"]} & {"personal_status_sex", "foreign_worker", "sex"}
    assert [f["name"] for f in detail["monitored"]] == ["sex"] and detail["monitored"][0]["monitor_only"]
    assert detail["autonomy"] == "medium" and detail["purpose_category"] == "credit"
    assert set(detail["notice"]) == {"purpose", "functions", "limitations", "owner", "contact", "legal_basis"}
    assert detail["policy"]["adverse_outcome"] == "declined" and "threshold" not in detail["policy"]


def test_unknown_model_page_is_404(gateway: Gateway) -> None:
    assert gateway.client.get("/v1/models/nothing-here").status_code == 404


def test_register_a_new_version_over_http_and_activate_it(gateway: Gateway, retrained: Path) -> None:
    body, artifact, background = registration(retrained, version="1.1.0")
    assert upload(gateway, artifact).status_code == 201
    assert upload(gateway, artifact).status_code == 200  # the same bytes again: already stored
    assert upload(gateway, background).status_code in (200, 201)
    resp = gateway.client.post("/v1/models", json=body, headers=gateway.auth("admin"))
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json() == {"name": "german-credit", "version": "1.1.0", "status": "registered",
                               "sha256": body["sha256"], "created": True,
                               # registration says how people oversee the version (high risk: declines first)
                               "oversight": "autonomy medium: adverse outcomes wait for an officer's confirmation; "
                                            "others take effect at once"}
    assert gateway.decide().get_json()["model"]["version"] == "1.0.0"  # not active until asked
    again = gateway.client.post("/v1/models", json=body | {"activate": True}, headers=gateway.auth("admin"))
    assert again.status_code == 200 and again.get_json()["created"] is False and again.get_json()["status"] == "active"
    assert gateway.decide().get_json()["model"] == {"name": "german-credit", "version": "1.1.0", "sha256": body["sha256"]}
    assert [m["version"] for m in gateway.client.get("/v1/models").get_json()["models"]] == ["1.1.0"]


def test_same_version_with_another_artifact_is_409(gateway: Gateway, retrained: Path) -> None:
    body, artifact, background = registration(retrained)  # version 1.0.0 is registered with other bytes
    upload(gateway, artifact)
    upload(gateway, background)
    resp = gateway.client.post("/v1/models", json=body, headers=gateway.auth("admin"))
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "conflict"


def test_registration_needs_the_uploaded_artifact(gateway: Gateway, retrained: Path) -> None:
    body, _, _ = registration(retrained, version="2.0.0")
    resp = gateway.client.post("/v1/models", json=body, headers=gateway.auth("admin"))
    assert resp.status_code == 422 and "PUT it to /v1/blobs/" in resp.get_json()["error"]["message"]


def test_upload_must_match_its_hash(gateway: Gateway) -> None:
    resp = gateway.client.put("/v1/blobs/" + "0" * 64, data=b"abc",
                              headers={**gateway.auth("admin"), "Content-Type": "application/octet-stream"})
    assert resp.status_code == 422 and resp.get_json()["error"]["details"][0]["rule"] == "content_hash"


def test_an_invalid_manifest_is_422_naming_the_field(gateway: Gateway, retrained: Path) -> None:
    body, _, _ = registration(retrained, version="3.0.0", risk_class="catastrophic")
    resp = gateway.client.post("/v1/models", json=body, headers=gateway.auth("admin"))
    assert resp.status_code == 422
    assert "risk_class" in {d["field"] for d in resp.get_json()["error"]["details"]}


@pytest.mark.parametrize(("who", "status"), [("agency_a", 403), ("reviewer", 403), (None, 401)])
def test_only_admins_register_upload_and_suspend(gateway: Gateway, retrained: Path, who: str | None, status: int) -> None:
    body, artifact, _ = registration(retrained, version="9.9.9")
    headers = gateway.auth(who) if who else {}
    sha = hashlib.sha256(artifact).hexdigest()
    assert gateway.client.put(f"/v1/blobs/{sha}", data=artifact,
                              headers={**headers, "Content-Type": "application/octet-stream"}).status_code == status
    assert gateway.client.post("/v1/models", json=body, headers=headers).status_code == status
    incident = open_incident(gateway.client, gateway.auth("admin"))
    assert gateway.client.post("/v1/models/german-credit/suspend", json={"reason": "x", "incident_id": incident},
                               headers=headers).status_code == status
    assert gateway.decide().status_code == 201  # still serving


def test_suspension_shows_in_the_register(gateway: Gateway) -> None:
    incident = open_incident(gateway.client, gateway.auth("admin"))
    resp = gateway.client.post("/v1/models/german-credit/suspend", json={"reason": "drift", "incident_id": incident},
                               headers=gateway.auth("admin"))
    assert resp.status_code == 200
    assert gateway.client.get("/v1/models").get_json()["models"] == []
    assert gateway.client.get("/v1/models/german-credit").get_json()["status"] == "suspended"


def _logistic_regression(output_space: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """A scaled logistic regression (linear in log-odds, not in probability), its background and manifest."""
    X = pd.DataFrame({"x": np.linspace(1, 9, 200), "y": np.sin(np.linspace(0, 12, 200))})
    target = (X["x"] + 2 * X["y"] > 5).map({True: "yes", False: "no"})
    pipe = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(X, target)
    buf = io.BytesIO()
    joblib.dump(pipe, buf)
    artifact = buf.getvalue()
    background = X.iloc[::10].round(3).to_csv(index=False, lineterminator="\n").encode()
    text = {"kk": "Мәтін", "ru": "Текст", "en": "Text"}
    manifest = {
        "name": "linear", "version": "1", "adapter": "joblib", "sha256": hashlib.sha256(artifact).hexdigest(),
        "features": [{"name": n, "type": "number", "labels": text, "min": -1, "max": 9} for n in ("x", "y")],
        "policy": {"positive_class": "yes", "threshold": 0.5, "outcome_above": "granted", "outcome_below": "refused",
                   "adverse_outcome": "refused"},
        "notice": {k: text for k in ("purpose", "functions", "limitations", "owner", "legal_basis")} | {"contact": "a@b.kz"},
        "risk_class": "minimal", **CLASSIFIED,
        "explanation": {"background_sha256": hashlib.sha256(background).hexdigest(), "output_space": output_space},
        "activate": True,
    }
    return artifact, background, manifest


@pytest.mark.gateway_config(ALLOW_PICKLE=True)
def test_a_logistic_regression_is_explained_exactly_in_log_odds_and_refused_in_probability(gateway: Gateway) -> None:
    """What the README tells a new user: `output_space = "log_odds"` for an exact explanation; in `probability`
    the registration is refused (422, naming log_odds), never explained in a space where it is not additive."""
    admin = gateway.auth("admin")
    artifact, background, manifest = _logistic_regression("probability")
    assert upload(gateway, artifact).status_code == 201 and upload(gateway, background).status_code == 201
    refused = gateway.client.post("/v1/models", json=manifest, headers=admin)
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "artifact_rejected" and "cannot be explained" in error["message"]
    assert "output_space='log_odds' (exact)" in error["message"]
    assert gateway.client.get("/v1/models/linear").status_code == 404  # nothing registered

    _, _, manifest = _logistic_regression("log_odds")
    registered = gateway.client.post("/v1/models", json=manifest, headers=admin)
    assert registered.status_code == 201, registered.get_json()
    decided = gateway.decide({"subject": gateway.sample["subject"], "features": {"x": 2.0, "y": 0.5}}, model="linear")
    assert decided.status_code == 201, decided.get_json()
    did = decided.get_json()["decision_id"]
    explained = gateway.client.get(f"/v1/decisions/{did}/explanation", headers=gateway.auth("agency_a"))
    assert explained.status_code == 200  # at once: computed in the decision's transaction, no job
    body = explained.get_json()
    assert body["method"] == "linear_shap_interventional" and body["additivity_error"] <= 1e-6
