"""POST /v1/models/{name}/decisions and GET /v1/decisions/{id}, on SQLite and on PostgreSQL."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from gateway import keystore
from gateway.contacts import unwrap_data_key
from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.registration import CLASSIFIED, open_incident

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
IIN = "921029350851"


def error(resp: Any) -> dict[str, Any]:
    body = resp.get_json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return body["error"]


DECISION_LEAVES = "log_leaves WHERE kind LIKE 'decision:%'"


def nothing_recorded(gw: Gateway) -> None:
    # (admin actions — the model's registration, the keys — have leaves of their own: only decisions' count here)
    for table in ("decisions", "explanations", "recourse", "notifications", DECISION_LEAVES, "idempotency_keys"):
        assert gw.count(table) == 0, table


# --- the happy path -------------------------------------------------------------------------------


def test_decision_is_recorded_with_its_outbox_and_audit_leaf(gateway: Gateway) -> None:
    resp = gateway.decide()
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert set(body) == {"decision_id", "model", "score", "outcome", "adverse", "created_at", "links"}
    assert body["model"]["name"] == "german-credit" and len(body["model"]["sha256"]) == 64
    assert 0.0 <= body["score"] <= 1.0
    assert body["outcome"] == ("approved" if body["score"] >= 0.5 else "declined")
    assert body["adverse"] is (body["outcome"] == "declined")
    did = body["decision_id"]
    # Issue 11 (finding 2): the person's capability link is never in the agency's answer (it reaches the person
    # through the notice only; tests/security/test_person_link.py).
    assert body["links"].pop("citizen", None) is None
    assert body["links"] == {
        "decision": f"https://gateway.test/v1/decisions/{did}",
        "explanation": f"https://gateway.test/v1/decisions/{did}/explanation",
        "review": f"https://gateway.test/v1/decisions/{did}/reviews",
    }
    assert resp.headers["Location"] == f"/v1/decisions/{did}"
    assert gateway.count("decisions") == 1 and gateway.count("notifications") == 1
    with gateway.app.app_context():
        leaf = db.session.execute(sa.text("SELECT kind, object_id, leaf_hash, record FROM " + DECISION_LEAVES)).one()
        note = db.session.execute(sa.text("SELECT kind, channel, status, decision_id FROM notifications")).one()
    assert leaf.kind == "decision:recorded" and leaf.object_id == did
    assert leaf.leaf_hash == hashlib.sha256(b"\x00" + leaf.record.encode()).hexdigest()
    record = json.loads(leaf.record)
    assert record["decision_id"] == did and record["score"] == body["score"] and "inputs" not in record
    # The inputs and contact are in the record as commitments keyed by the decision's data key (purgeable).
    with gateway.app.app_context():
        wrapped = keystore.wrapped(did)  # in the key store, a database of its own
    data_key = unwrap_data_key(gateway.app.config["CONTACT_KEY_BYTES"], did, bytes(wrapped))
    assert data_key is not None
    assert record["inputs_commitment"] == data_key.commitment(gateway.sample["features"])
    assert record["contact_commitment"] == data_key.commitment(gateway.sample["subject"]["contact"])
    assert tuple(note) == ("decision_notice", "email", "pending", did)


def test_raw_iin_and_contact_are_never_stored(gateway: Gateway) -> None:
    assert gateway.decide().status_code == 201
    with gateway.app.app_context():
        dumped = []
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)).all():
                dumped.append(repr(tuple(row)))
    text = "\n".join(dumped)
    assert IIN not in text
    assert "citizen@example.kz" not in text


def test_one_notification_row_per_contact_channel(gateway: Gateway) -> None:
    body = copy.deepcopy(gateway.sample)
    body["subject"]["contact"] = {"email": "a@example.kz", "webhook": "https://agency.example.kz/hooks/citizens"}
    assert gateway.decide(body).status_code == 201
    with gateway.app.app_context():
        channels = db.session.execute(sa.text("SELECT channel FROM notifications ORDER BY channel")).scalars().all()
    assert channels == ["email", "webhook"]


def test_the_agency_reads_its_decision_back(gateway: Gateway) -> None:
    did = gateway.decide().get_json()["decision_id"]
    resp = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a"))
    assert resp.status_code == 200
    view = resp.get_json()
    assert view["decision_id"] == did and view["effective_outcome"] == view["outcome"]
    assert view["inputs"] == gateway.sample["features"] and view["reference"] == "application-0001"
    assert [(n["kind"], n["channel"], n["status"]) for n in view["notifications"]] == [("decision_notice", "email", "pending")]


@pytest.mark.parametrize("who", ["agency_b", "admin", "reviewer"])  # the auditor reads all (tests/test_access_bola.py)
def test_anyone_else_gets_the_same_404_as_for_a_missing_decision(gateway: Gateway, who: str) -> None:
    did = gateway.decide().get_json()["decision_id"]
    other = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth(who))
    missing = gateway.client.get("/v1/decisions/dec_doesnotexist0000000000", headers=gateway.auth(who))
    assert other.status_code == missing.status_code == 404
    assert other.data == missing.data


def test_malformed_decision_id_is_404(gateway: Gateway) -> None:
    resp = gateway.client.get("/v1/decisions/not%20an%20id!", headers=gateway.auth("agency_a"))
    assert resp.status_code == 404 and error(resp)["code"] == "not_found"


# --- idempotency ----------------------------------------------------------------------------------


def test_same_key_same_body_replays_byte_for_byte_and_records_nothing_new(gateway: Gateway) -> None:
    first = gateway.decide(key="order-1")
    again = gateway.decide(key="order-1")
    reordered = gateway.decide(json.loads(json.dumps(gateway.sample, sort_keys=True)), key="order-1")
    assert first.status_code == again.status_code == reordered.status_code == 201
    assert again.data == first.data and reordered.data == first.data
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert gateway.count("decisions") == 1 and gateway.count("notifications") == 1 and gateway.count(DECISION_LEAVES) == 1


def test_same_key_different_body_is_422(gateway: Gateway) -> None:
    assert gateway.decide(key="order-2").status_code == 201
    changed = copy.deepcopy(gateway.sample)
    changed["features"]["credit_amount"] = 1234
    resp = gateway.decide(changed, key="order-2")
    assert resp.status_code == 422 and error(resp)["code"] == "idempotency_key_reused"
    assert gateway.count("decisions") == 1


def test_keys_are_scoped_per_client(gateway: Gateway) -> None:
    a = gateway.decide(key="shared", who="agency_a")
    b = gateway.decide(key="shared", who="agency_b")
    assert a.status_code == b.status_code == 201
    assert a.get_json()["decision_id"] != b.get_json()["decision_id"]


def test_concurrent_duplicates_make_one_decision(gateway: Gateway) -> None:
    results: list[tuple[int, bytes]] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        client = gateway.app.test_client()
        barrier.wait()
        resp = client.post("/v1/models/german-credit/decisions", json=gateway.sample,
                           headers={**gateway.auth("agency_a"), "Idempotency-Key": "race"})
        results.append((resp.status_code, resp.data))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    ok = [data for status, data in results if status == 201]
    assert all(status in (201, 409) for status, _ in results)
    assert ok and all(data == ok[0] for data in ok)
    assert gateway.count("decisions") == 1


@pytest.mark.parametrize(("value", "code"), [(None, "idempotency_key_required"), ("", "idempotency_key_invalid"),
                                             ("x" * 256, "idempotency_key_invalid")])
def test_idempotency_key_is_required_and_bounded(gateway: Gateway, value: str | None, code: str) -> None:
    headers = gateway.auth("agency_a")
    if value is not None:
        headers["Idempotency-Key"] = value
    resp = gateway.client.post("/v1/models/german-credit/decisions", json=gateway.sample, headers=headers)
    assert resp.status_code == 400 and error(resp)["code"] == code
    nothing_recorded(gateway)


# --- authentication and authorisation -------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer", "Bearer gwk_unknown", "bearer  "])
def test_missing_or_unknown_keys_are_401(gateway: Gateway, header: str | None) -> None:
    headers = {"Idempotency-Key": "k"}
    if header is not None:
        headers["Authorization"] = header
    resp = gateway.client.post("/v1/models/german-credit/decisions", json=gateway.sample, headers=headers)
    assert resp.status_code == 401 and error(resp)["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    nothing_recorded(gateway)


def test_revoked_key_stops_working_at_once(gateway: Gateway) -> None:
    from gateway.auth import revoke_key
    from gateway.db import write_transaction

    assert gateway.decide().status_code == 201
    with gateway.app.app_context(), write_transaction():
        revoke_key("agency_a")
    assert gateway.decide().status_code == 401


@pytest.mark.parametrize("who", ["admin", "reviewer", "auditor"])
def test_only_agencies_decide(gateway: Gateway, who: str) -> None:
    resp = gateway.decide(who=who)
    assert resp.status_code == 403 and error(resp)["code"] == "forbidden"
    nothing_recorded(gateway)


# --- malformed and invalid requests ---------------------------------------------------------------


def test_unknown_model_is_404(gateway: Gateway) -> None:
    resp = gateway.decide(model="no-such-model")
    assert resp.status_code == 404 and "no-such-model" in error(resp)["message"]


def test_malformed_json_is_400(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/models/german-credit/decisions", data=b'{"subject": ',
                               headers={**gateway.auth("agency_a"), "Idempotency-Key": "k", "Content-Type": "application/json"})
    assert resp.status_code == 400 and error(resp)["code"] == "malformed_json"


def test_non_json_body_is_415(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/models/german-credit/decisions", data=b"iin=921029350851",
                               headers={**gateway.auth("agency_a"), "Idempotency-Key": "k", "Content-Type": "text/plain"})
    assert resp.status_code == 415 and error(resp)["code"] == "unsupported_media_type"


def test_body_over_one_mebibyte_is_413(gateway: Gateway) -> None:
    body = copy.deepcopy(gateway.sample)
    body["reference"] = "x" * (1024 * 1024)
    resp = gateway.decide(body)
    assert resp.status_code == 413 and error(resp)["code"] == "payload_too_large"
    nothing_recorded(gateway)


def _set(path: str, value: Any) -> Any:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return change


INVALID = [
    ("features.shoe_size", "unknown", _set("features.shoe_size", 42)),
    ("features.age", "required", _set("features.age", KeyError)),
    ("features.age", "max", _set("features.age", 150)),
    ("features.duration_months", "min", _set("features.duration_months", 0)),
    ("features.age", "integer", _set("features.age", 30.5)),
    ("features.age", "type", _set("features.age", "thirty")),
    ("features.credit_amount", "type", _set("features.credit_amount", True)),
    ("features.housing", "category", _set("features.housing", "castle")),
    ("features.housing", "type", _set("features.housing", 3)),
    ("subject.iin", "value_error", _set("subject.iin", "921029350852")),
    ("subject.iin", "value_error", _set("subject.iin", "92102935085")),
    ("subject.iin", "string_type", _set("subject.iin", 921029350851)),
    ("subject.language", "literal_error", _set("subject.language", "de")),
    ("subject.contact.email", "value_error", _set("subject.contact.email", "not-an-address")),
    ("subject.contact", "value_error", _set("subject.contact", {})),
    ("subject.contact.webhook", "value_error", _set("subject.contact", {"webhook": "ftp://x.example"})),
    ("subject.nickname", "extra_forbidden", _set("subject.nickname", "x")),
    ("surprise", "extra_forbidden", _set("surprise", 1)),
    ("features", "missing", _set("features", KeyError)),
    ("operator", "string_too_short", _set("operator", "")),
]


@pytest.mark.parametrize(("field", "rule", "change"), INVALID, ids=[f"{f}:{r}" for f, r, _ in INVALID])
def test_invalid_values_are_422_naming_the_field_and_rule(gateway: Gateway, field: str, rule: str, change: Any) -> None:
    body = copy.deepcopy(gateway.sample)
    change(body)
    resp = gateway.decide(body)
    assert resp.status_code == 422, resp.get_json()
    err = error(resp)
    assert err["code"] == "validation_failed"
    assert {"field": field, "rule": rule} in [{"field": d["field"], "rule": d["rule"]} for d in err["details"]], err
    assert IIN not in resp.get_data(as_text=True)  # errors never echo the identifier back
    nothing_recorded(gateway)


def test_every_feature_problem_is_reported_at_once(gateway: Gateway) -> None:
    body = copy.deepcopy(gateway.sample)
    body["features"].update(age=10, housing="castle", shoe_size=1)
    del body["features"]["savings"]
    fields = {d["field"] for d in error(gateway.decide(body))["details"]}
    assert fields == {"features.age", "features.housing", "features.shoe_size", "features.savings"}


@pytest.mark.gateway_config(LANGUAGES=["kk", "ru"])
def test_language_not_offered_by_the_deployment_is_422(gateway: Gateway) -> None:
    body = copy.deepcopy(gateway.sample)
    body["subject"]["language"] = "en"
    resp = gateway.decide(body)
    assert resp.status_code == 422 and error(resp)["details"][0]["field"] == "subject.language"


# --- nothing is recorded when the model or the database fails --------------------------------------


def _fragile_model() -> tuple[bytes, bytes, dict[str, Any]]:
    """A real pipeline that takes a logarithm: fine on positive inputs, NaN (and a raise) on negative ones."""
    X = pd.DataFrame({"x": np.linspace(1, 9, 200), "y": np.linspace(9, 1, 200)})
    target = (X["x"] > 5).map({True: "yes", False: "no"})
    pipe = Pipeline([("log", FunctionTransformer(np.log)), ("model", LogisticRegression())]).fit(X, target)
    buf = io.BytesIO()
    joblib.dump(pipe, buf)
    artifact = buf.getvalue()
    # Every registered version must be explainable: it comes with background rows (registration refuses it without).
    background = X.iloc[::10].round(3).to_csv(index=False, lineterminator="\n").encode()
    text = {"kk": "Мәтін", "ru": "Текст", "en": "Text"}
    manifest = {
        "name": "fragile", "version": "1", "adapter": "joblib", "sha256": hashlib.sha256(artifact).hexdigest(),
        "features": [{"name": n, "type": "number", "labels": text, "min": -1, "max": 9} for n in ("x", "y")],
        "policy": {"positive_class": "yes", "threshold": 0.5, "outcome_above": "granted", "outcome_below": "refused",
                   "adverse_outcome": "refused"},
        "notice": {k: text for k in ("purpose", "functions", "limitations", "owner", "legal_basis")} | {"contact": "a@b.kz"},
        "risk_class": "minimal", **CLASSIFIED,
        "explanation": {"background_sha256": hashlib.sha256(background).hexdigest()},
        "activate": True,
    }
    return artifact, background, manifest


@pytest.mark.gateway_config(ALLOW_PICKLE=True)
def test_a_failing_model_is_503_and_records_nothing(gateway: Gateway) -> None:
    artifact, background, manifest = _fragile_model()
    admin = gateway.auth("admin")
    for data in (artifact, background):
        put = gateway.client.put(f"/v1/blobs/{hashlib.sha256(data).hexdigest()}", data=data,
                                 headers={**admin, "Content-Type": "application/octet-stream"})
        assert put.status_code == 201
    reg = gateway.client.post("/v1/models", json=manifest, headers=admin)
    assert reg.status_code == 201, reg.get_json()
    body = {"subject": gateway.sample["subject"], "features": {"x": 2.0, "y": 3.0}}
    assert gateway.decide(body, model="fragile").status_code == 201
    with gateway.app.app_context():
        db.session.execute(sa.text("DELETE FROM idempotency_keys"))
        db.session.execute(sa.text("DELETE FROM log_leaves"))
        db.session.execute(sa.text("DELETE FROM notifications"))
        db.session.execute(sa.text("DELETE FROM explanations"))
        db.session.execute(sa.text("DELETE FROM recourse"))
        db.session.execute(sa.text("DELETE FROM decisions"))
        db.session.commit()
    resp = gateway.decide({"subject": gateway.sample["subject"], "features": {"x": -0.5, "y": 3.0}}, model="fragile")
    assert resp.status_code == 503 and error(resp)["code"] == "model_unavailable"
    nothing_recorded(gateway)


def _make_inserts_fail(gateway: Gateway) -> None:
    """Install a trigger that aborts the third insert of the decision's transaction (the audit leaf)."""
    with gateway.app.app_context():
        if gateway.backend == "sqlite":
            db.session.execute(sa.text(
                "CREATE TRIGGER fail_leaf BEFORE INSERT ON log_leaves BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
        else:
            db.session.execute(sa.text(
                "CREATE OR REPLACE FUNCTION fail_leaf() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ "
                "LANGUAGE plpgsql"))
            db.session.execute(sa.text(
                "CREATE TRIGGER fail_leaf BEFORE INSERT ON log_leaves FOR EACH ROW EXECUTE FUNCTION fail_leaf()"))
        db.session.commit()


def _remove_failure(gateway: Gateway) -> None:
    with gateway.app.app_context():
        db.session.execute(sa.text("DROP TRIGGER fail_leaf" + (" ON log_leaves" if gateway.backend == "postgres" else "")))
        db.session.commit()


def test_a_database_failure_mid_transaction_is_503_and_records_nothing(gateway: Gateway) -> None:
    _make_inserts_fail(gateway)
    try:
        resp = gateway.decide(key="doomed")
        assert resp.status_code == 503 and error(resp)["code"] == "database_unavailable"
        nothing_recorded(gateway)  # the decision and notification inserts before the failure were rolled back
    finally:
        _remove_failure(gateway)
    retry = gateway.decide(key="doomed")  # the same key works once the database does
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry.headers
    assert gateway.count("decisions") == 1


def test_a_suspended_model_makes_no_decisions(gateway: Gateway) -> None:
    incident = open_incident(gateway.client, gateway.auth("admin"))
    resp = gateway.client.post("/v1/models/german-credit/suspend",
                               json={"reason": "drift found in monitoring", "incident_id": incident},
                               headers=gateway.auth("admin"))
    assert resp.status_code == 200 and resp.get_json()["status"] == "suspended"
    refused = gateway.decide()
    assert refused.status_code == 409 and error(refused)["code"] == "model_suspended"  # a state, not an outage
    nothing_recorded(gateway)


@pytest.mark.gateway_config(RISK_ASSESSMENT_MAX_AGE_DAYS=1)
def test_a_high_risk_model_with_a_stale_risk_assessment_is_not_served(gateway: Gateway) -> None:
    resp = gateway.decide()
    assert resp.status_code == 503 and error(resp)["code"] == "risk_assessment_expired"
    assert "2026-11-01" in error(resp)["message"]
    nothing_recorded(gateway)
