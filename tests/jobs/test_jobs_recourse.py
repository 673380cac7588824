"""The recourse kind: options for adverse decisions of a model that is not cheap to search (an MLP), computed
after commit by the jobs engine (in process, and by a real `gateway worker --kinds recourse` process)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway import create_app
from gateway.extensions import db
from gateway.ids import utcnow
from gateway.jobs.explain import ExplainKind
from gateway.jobs.purge import PurgeKind
from gateway.jobs.recourse import RecourseKind
from tests.conftest import SECRETS, Gateway, load_train_module
from tests.jobs.conftest import MLP, JobsInstance
from tests.jobs.test_jobs_engine import leaves, metrics
from tests.support.agnostic import TRUSTED_TYPES, upload_and_register
from tests.support.gateway_server import GATEWAY, ROOT

BACKENDS = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                   indirect=True)


def applications(n: int = 40) -> list[dict[str, Any]]:
    X, _ = load_train_module().load_data()
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in X.head(n).to_dict("records")]


def decide(gw: Gateway, features: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(gw.sample)
    body["features"] = features
    resp = gw.decide(body, model=MLP)
    assert resp.status_code == 201, resp.get_json()
    found: dict[str, Any] = resp.get_json()
    return found


def recourse_of(gw: Gateway, did: str, lang: str = "en") -> Any:
    return gw.client.get(f"/v1/decisions/{did}/recourse?lang={lang}", headers=gw.auth("agency_a"))


@BACKENDS
@pytest.mark.gateway_config(SKOPS_TRUSTED_TYPES=TRUSTED_TYPES, RATELIMIT_EXPLANATIONS="100000/minute")
def test_a_model_that_is_not_cheap_gets_recourse_from_the_job(gateway: Gateway, mlp_manifest: Path) -> None:
    assert upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest).status_code == 201
    adverse, favourable = [], []
    for features in applications():
        created = decide(gateway, features)
        (adverse if created["adverse"] else favourable).append((created["decision_id"], features))
        if len(adverse) >= 3 and favourable:
            break
    assert len(adverse) >= 3 and favourable
    did, features = adverse[0]
    pending = recourse_of(gateway, did)
    assert pending.status_code == 202 and pending.headers["Retry-After"] == "2"
    assert pending.get_json() == {"decision_id": did, "status": "pending", "retry_after": 2}
    assert recourse_of(gateway, favourable[0][0]).get_json()["status"] == "not_adverse"  # no job for it
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert view["recourse"] == {"status": "pending", "options": 0, "reason": None, "attempts": 0}
    assert metrics(gateway)['gateway_jobs{kind="recourse",state="queued"}'] == len(adverse)

    runner = RecourseKind(gateway.app)
    assert runner.run_once() == len(adverse)
    assert runner.run_once() == 0  # stored once, never recomputed
    found = 0
    for did, features in adverse:
        resp = recourse_of(gateway, did)
        assert resp.status_code == 200
        body = resp.get_json()
        assert body["status"] == "ready" and body["method"] == "verified_grid_search"
        assert recourse_of(gateway, did).data == resp.data
        found += len(body["options"])
        for option in body["options"]:  # verified by the MLP that decided: the changed application is approved
            again = decide(gateway, features | {c["feature"]: c["to"] for c in option["changes"]})
            assert not again["adverse"] and again["score"] == pytest.approx(option["score"], abs=1e-12)
        (leaf,) = leaves(gateway, "decision:recourse:recorded", did)
        assert leaf["recourse"]["digest"] == body["digest"] and leaf["recourse"]["options"] == len(body["options"])
        view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
        assert view["recourse"]["status"] == "ready" and view["recourse"]["options"] == len(body["options"])
        assert view["recourse"]["attempts"] == 1
    assert found >= 3
    # The re-decided options were favourable: no new jobs; every job is done once.
    assert metrics(gateway)['gateway_jobs{kind="recourse",state="done"}'] == len(adverse)
    assert gateway.count("recourse") == len(adverse)


@pytest.mark.gateway_config(SKOPS_TRUSTED_TYPES=TRUSTED_TYPES, JOBS_RECOURSE_MAX_ATTEMPTS=1)
def test_a_recourse_job_that_fails_says_so(gateway: Gateway, mlp_manifest: Path) -> None:
    assert upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest).status_code == 201
    did = next(d["decision_id"] for d in (decide(gateway, f) for f in applications()) if d["adverse"])
    with gateway.app.app_context():  # the stored artifact is damaged after the decision; a fresh process runs the job
        db.session.execute(sa.text("UPDATE blobs SET data = :d WHERE sha256 = (SELECT artifact_sha256 FROM "
                                   "scoring_models WHERE name = :n)"), {"d": b"damaged", "n": MLP})
        db.session.commit()
    config = {k: gateway.app.config[k] for k in ("TESTING", "DATABASE_URL", "KEYSTORE_URL", "PUBLIC_BASE_URL", *SECRETS)}
    worker_app = create_app({**config, "SKOPS_TRUSTED_TYPES": TRUSTED_TYPES, "JOBS_RECOURSE_MAX_ATTEMPTS": 1})
    assert RecourseKind(worker_app).run_once(utcnow() + dt.timedelta(seconds=1)) == 1
    resp = recourse_of(gateway, did)
    assert resp.status_code == 409 and "Retry-After" not in resp.headers
    error = resp.get_json()["error"]
    assert error["code"] == "recourse_failed" and "could not be loaded" in error["message"]
    assert "human review" in error["message"] and error["details"]["contact"] in error["message"]
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert view["recourse"]["status"] == "failed" and "could not be loaded" in view["recourse"]["reason"]
    (leaf,) = leaves(gateway, "decision:recourse:failed", did)
    assert leaf["attempts"] == 1 and "could not be loaded" in leaf["reason"]
    assert metrics(gateway)['gateway_jobs_dead{kind="recourse"}'] == 1
    with worker_app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


@pytest.mark.gateway_config(SKOPS_TRUSTED_TYPES=TRUSTED_TYPES, RATELIMIT_EXPLANATIONS="100000/minute")
def test_estimates_expose_their_errors_and_tied_ranks(gateway: Gateway, mlp_manifest: Path) -> None:
    assert upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest).status_code == 201
    did = decide(gateway, applications(1)[0])["decision_id"]
    ExplainKind(gateway.app).run_once()
    body = gateway.client.get(f"/v1/decisions/{did}/explanation", headers=gateway.auth("agency_a")).get_json()
    assert body["estimate"] is True
    factors = body["factors"]
    assert factors and all(f["error"] is not None and f["error"] > 0 for f in factors)
    ranks = [f["rank"] for f in factors]
    assert ranks[0] == 1 and ranks == sorted(ranks)
    for before, after in zip(factors, factors[1:], strict=False):  # a shared rank means overlapping intervals
        overlap = abs(before["contribution"]) - abs(after["contribution"]) <= before["error"] + after["error"]
        assert (after["rank"] == before["rank"]) == overlap
    exact_id = gateway.decide().get_json()["decision_id"]  # the example's tree model: exact, at once
    exact = gateway.client.get(f"/v1/decisions/{exact_id}/explanation", headers=gateway.auth("agency_a")).get_json()
    assert exact["estimate"] is False and all(f["error"] is None for f in exact["factors"])
    assert [f["rank"] for f in exact["factors"]] == list(range(1, len(exact["factors"]) + 1))


@pytest.mark.slow
def test_a_gateway_worker_process_computes_pending_recourse(mlp_instance: JobsInstance, tmp_path: Path) -> None:
    adverse = []
    for n, features in enumerate(applications()):
        headers = {**mlp_instance.auth(), "Idempotency-Key": f"recourse-{n}"}
        body = {"subject": {"iin": "921029350851", "language": "kk", "contact": {"email": "a@example.kz"}},
                "features": features}
        created = mlp_instance.app.test_client().post(f"/v1/models/{MLP}/decisions", json=body, headers=headers)
        assert created.status_code == 201, created.get_json()
        if created.get_json()["adverse"]:
            adverse.append(created.get_json()["decision_id"])
        if len(adverse) == 2:
            break
    client = mlp_instance.app.test_client()

    def read(did: str) -> Any:
        return client.get(f"/v1/decisions/{did}/recourse", headers=mlp_instance.auth())

    assert [read(d).status_code for d in adverse] == [202, 202]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([str(GATEWAY), "worker", "--kinds", "recourse"], env=mlp_instance.instance.env,
                                  cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while any(read(d).status_code == 202 for d in adverse):
                assert worker.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
    assert worker.returncode == 0, log.read_text(errors="replace")
    for did in adverse:
        body = read(did).get_json()
        assert body["status"] == "ready" and body["language"] == "kk"
        assert all(text.startswith("Егер ") for text in body["text"]["options"])
    assert "recourse jobs: searcher" in log.read_text(errors="replace")
    assert json.loads(json.dumps(read(adverse[0]).get_json()))["digest"]


@pytest.mark.gateway_config(SKOPS_TRUSTED_TYPES=TRUSTED_TYPES)
def test_a_pending_recourse_of_a_purged_decision_ends_failed_without_searching(gateway: Gateway,
                                                                                mlp_manifest: Path) -> None:
    # Served medium-risk, adverse outcomes taking effect at once: a decision held for an officer's confirmation is
    # an open review case, which keeps it from the purge like any open review.
    registered = upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest, risk_class="medium",
                                     adverse_review_first=False)
    assert registered.status_code == 201, registered.get_json()
    did = next(d["decision_id"] for d in (decide(gateway, f) for f in applications()) if d["adverse"])
    ExplainKind(gateway.app).run_once()  # a pending explanation keeps the decision from the purge; a recourse does not
    later = utcnow() + dt.timedelta(days=366)
    assert PurgeKind(gateway.app, settings=PurgeKind.read_settings(gateway.app.config)).run_once(later) >= 1
    with gateway.app.app_context():
        assert db.session.execute(sa.text("SELECT purged_at FROM decisions WHERE id = :d"), {"d": did}).scalar()
    assert RecourseKind(gateway.app).run_once(later) == 1
    with gateway.app.app_context():
        row = db.session.execute(sa.text("SELECT status, options, last_error FROM recourse WHERE decision_id = :d"),
                                 {"d": did}).one()
    assert row.status == "failed" and row.options is None and "retention rule" in row.last_error
    assert recourse_of(gateway, did).get_json()["error"]["code"] == "data_purged"
    (leaf,) = leaves(gateway, "decision:recourse:failed", did)
    assert leaf["attempts"] == 1
