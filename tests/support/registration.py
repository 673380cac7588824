"""Register a real model with a gateway over HTTP, the way an operator would."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import joblib
import pandas as pd

TEXT = {"kk": "Мәтін", "ru": "Текст", "en": "Text"}

PROHIBITED = ("manipulation", "exploiting_vulnerabilities", "social_scoring", "discriminatory_classification",
              "emotion_recognition_without_consent", "unlawful_biometric_processing",
              "unlawful_personal_data_processing", "predictive_policing_by_profiling", "untargeted_facial_scraping")

# What the AI Law's classification asks of every registration (a minimal-risk, medium-autonomy system).
CLASSIFIED: dict[str, Any] = {
    "autonomy": "medium", "purpose_category": "other", "purpose_text": "test model",
    "prohibited_practices": dict.fromkeys(PROHIBITED, False),
}

# How the shared fixture (tests/conftest.py seed) serves the German-credit example, and the tests and benches
# built on it: the example ships high-risk with every adverse outcome held for an officer's confirmation
# (tests/oversight run it so); served medium-risk (its risk_assessment still required), every decision takes
# effect at once and is notified.
SERVED_AS: dict[str, Any] = {"risk_class": "medium", "adverse_review_first": False}


def manifest_for(name: str, artifact: bytes, features: list[dict[str, Any]], *, positive_class: Any,
                 background: bytes | None = None, adapter: str = "joblib", **extra: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "name": name, "version": "1", "adapter": adapter, "sha256": hashlib.sha256(artifact).hexdigest(),
        "features": features,
        "policy": {"positive_class": positive_class, "threshold": 0.5, "outcome_above": "granted",
                   "outcome_below": "refused", "adverse_outcome": "refused"},
        "notice": {k: TEXT for k in ("purpose", "functions", "limitations", "owner", "legal_basis")} | {"contact": "a@b.kz"},
        "risk_class": "minimal", **CLASSIFIED,
    }
    if background is not None:
        manifest["explanation"] = {"background": "background.csv", "background_sha256": hashlib.sha256(background).hexdigest()}
    manifest.update(extra)
    return manifest


def pickled(model: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def background_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def register(client: Any, admin: dict[str, str], manifest: dict[str, Any], artifact: bytes,
             background: bytes | None = None) -> Any:
    """Upload the artifact (and background), register and activate; return the registration response."""
    for data in filter(None, (artifact, background)):
        sha = hashlib.sha256(data).hexdigest()
        put = client.put(f"/v1/blobs/{sha}", data=data, headers={**admin, "Content-Type": "application/octet-stream"})
        assert put.status_code in (200, 201), put.get_json()
    return client.post("/v1/models", json=manifest | {"activate": True}, headers=admin)


def open_incident(client: Any, headers: dict[str, str], model: str = "german-credit", severity: str = "high") -> str:
    """Register an incident over HTTP (suspending a model names one); return its id."""
    resp = client.post("/v1/incidents", json={"model": model, "severity": severity,
                                              "description": "drift found in monitoring"}, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    incident_id: str = resp.get_json()["incident_id"]
    return incident_id


def request_reviews(gateway: Any, n: int, prefix: str) -> list[str]:
    """Make `n` decisions (idempotency keys PREFIX-i) and request a review of each as their agency; their ids."""
    made = []
    for i in range(n):
        decision = gateway.decide(key=f"{prefix}-{i}").get_json()["decision_id"]
        resp = gateway.client.post(f"/v1/decisions/{decision}/reviews", headers=gateway.auth("agency_a"),
                                   json={"point_of_view": "Please look again.", "contest_grounds": ["other"]})
        assert resp.status_code == 201, resp.get_json()
        made.append(resp.get_json()["review_id"])
    return made
