"""The jobs engine in process: the kinds' registry, the explain kind's claims, fences, retries and dead letters."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask.cli import ScriptInfo

from gateway import create_app
from gateway.cli import main
from gateway.errors import ConfigError
from gateway.extensions import db
from gateway.gate import RequestGate
from gateway.ids import utcnow
from gateway.jobs.base import STATES, KindSettings, UnknownTaskKind
from gateway.jobs.explain import ExplainKind
from gateway.jobs.runner import Runner, SlotRunner, kinds
from tests.conftest import SECRETS, Gateway
from tests.support.agnostic import TRUSTED_TYPES, upload_and_register

pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True),
    pytest.mark.gateway_config(SKOPS_TRUSTED_TYPES=TRUSTED_TYPES),
]
MLP = "german-credit-mlp"


def explain(gw: Gateway, did: str, lang: str | None = None) -> Any:
    query = f"?lang={lang}" if lang else ""
    return gw.client.get(f"/v1/decisions/{did}/explanation{query}", headers=gw.auth("agency_a"))


def decide_mlp(gw: Gateway, model: str = MLP) -> str:
    resp = gw.decide(model=model)
    assert resp.status_code == 201, resp.get_json()
    did: str = resp.get_json()["decision_id"]
    return did


def leaves(gw: Gateway, kind: str, did: str) -> list[dict[str, Any]]:
    with gw.app.app_context():
        records = db.session.execute(sa.text("SELECT record FROM log_leaves WHERE kind = :k AND object_id = :d"),
                                     {"k": kind, "d": did}).scalars().all()
    return [json.loads(r) for r in records]


def explanation_row(gw: Gateway, did: str) -> Any:
    with gw.app.app_context():
        return db.session.execute(sa.text("SELECT * FROM explanations WHERE decision_id = :d"), {"d": did}).mappings().one()


def metrics(gw: Gateway) -> dict[str, float]:
    text = gw.client.get("/metrics", headers=gw.auth("auditor")).get_data(as_text=True)  # /metrics needs a key
    return {f"{n}{{{labels}}}": float(v)
            for n, labels, v in re.findall(r"^(gateway_\w+)\{([^}]*)\} (\S+)$", text, re.MULTILINE)}


def at(row_time: dt.datetime | str) -> dt.datetime:
    if isinstance(row_time, str):
        row_time = dt.datetime.fromisoformat(row_time)
    return row_time.replace(tzinfo=dt.UTC) if row_time.tzinfo is None else row_time


# --- the registry of kinds ---------------------------------------------------------------------------


def test_an_unknown_kind_is_a_named_error_listing_the_known_ones(gateway: Gateway) -> None:
    registry = kinds(gateway.app)
    assert registry.names() == ["deliver", "explain", "sequence", "purge", "recourse", "batch"]
    with pytest.raises(UnknownTaskKind, match=r"unknown task kind 'report'; known kinds: batch, deliver, explain, purge, recourse, sequence"):
        registry.get("report")
    result = CliRunner().invoke(main, ["worker", "--kinds", "deliver,report"], obj=ScriptInfo(create_app=lambda: gateway.app))
    assert result.exit_code == 2 and "unknown task kind 'report'; known kinds: batch, deliver, explain, purge, recourse, sequence" in result.output


@pytest.mark.parametrize("name", ["deliver", "explain", "sequence", "purge", "recourse", "batch"])
def test_every_kind_keeps_the_contract(gateway: Gateway, name: str) -> None:
    """Conformance: settings from the config, an empty queue claims nothing, stats name every state."""
    cls = kinds(gateway.app).get(name)
    settings = cls.read_settings(gateway.app.config)
    assert isinstance(settings, KindSettings) and settings.batch_size >= 1 and settings.lease_s > 0
    runner = cls(gateway.app, settings=settings)
    assert runner.name == name and runner.owner
    while runner.run_once():  # the seeded instance's own leaves (model, keys) are the sequencer's first work
        pass
    assert runner.run_once() == 0
    with gateway.app.app_context():
        assert set(cls.stats(utcnow())) == set(STATES)
    runner.close()


def test_each_kind_has_its_own_settings_and_bad_ones_stop_the_start(gateway: Gateway) -> None:
    app = gateway.app
    deliver, explain_ = (kinds(app).get(n).read_settings(app.config) for n in ("deliver", "explain"))
    assert deliver.batch_size == app.config["NOTIFY_BATCH_SIZE"] and deliver.lease_s == app.config["NOTIFY_LEASE_S"]
    assert explain_.batch_size == app.config["JOBS_EXPLAIN_BATCH_SIZE"]
    assert explain_.retry_schedule == tuple(float(s) for s in app.config["JOBS_EXPLAIN_RETRY_SCHEDULE"])
    config = {k: app.config[k] for k in ("DATABASE_URL", "KEYSTORE_URL", "PUBLIC_BASE_URL", *SECRETS)}
    for key, value in (("JOBS_EXPLAIN_RETRY_SCHEDULE", "soon"), ("JOBS_EXPLAIN_LEASE_S", 0),
                       ("JOBS_EXPLAIN_CONCURRENCY", 0), ("JOBS_DELIVER_CONCURRENCY", "many")):
        with pytest.raises(ConfigError, match=f"GATEWAY_{key} must be"):
            create_app({**config, key: value})
    with pytest.raises(ConfigError, match="GATEWAY_JOBS_THREAD_KINDS: unknown task kind 'report'; known kinds: batch, deliver"):
        create_app({**config, "JOBS_THREAD_KINDS": ["explain", "report"]})
    for slots in (0, -1, "some", True, 1.5):
        with pytest.raises(ConfigError, match=r'GATEWAY_JOBS_THREAD_WORKERS must be a positive integer .* or "all", not'):
            create_app({**config, "JOBS_THREAD_WORKERS": slots})
    assert create_app({**config, "JOBS_THREAD_WORKERS": "all"}).config["JOBS_THREAD_WORKERS"] == "all"


def test_serving_workers_share_the_jobs_thread_slots_and_a_waiting_one_takes_a_freed_slot(
        gateway: Gateway, tmp_path: Path) -> None:
    gate = RequestGate(gateway.app.wsgi_app)
    folder = str(tmp_path / "instance")
    names = ["deliver", "sequence"]
    first = SlotRunner(gateway.app, names, gate, folder, 1, retry_s=0.02).start()
    second = SlotRunner(gateway.app, names, gate, folder, 1, retry_s=0.02).start()
    third = None
    try:
        assert first.running and first.slot == 0 and first.runner is not None
        assert all(t.is_alive() for t in first.runner.threads)
        assert not second.running and second.waiter.is_alive()  # every slot held: it waits, runs nothing
        gate.idle.wait(0.1)
        assert not second.running
        assert first.stop(30)  # the holder goes (a worker exiting): its slot is free
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
        while not second.running:
            assert dt.datetime.now(dt.UTC) < deadline, "the waiting worker did not take the freed slot"
            gate.idle.wait(0.02)
        assert second.slot == 0 and second.runner is not None and all(t.is_alive() for t in second.runner.threads)
        assert not second.waiter.is_alive()
        # Two slots: a second holder runs beside the first.
        third = SlotRunner(gateway.app, names, gate, folder, 2, retry_s=0.02).start()
        assert third.running and third.slot == 1
    finally:
        assert second.stop(30) and (third is None or third.stop(30)) and first.stop(30)
    # A folder where no slot can be made (here: below a regular file): the worker runs its thread anyway.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    alone = SlotRunner(gateway.app, names, gate, str(blocked / "instance"), 1, retry_s=0.02).start()
    try:
        assert alone.running and alone.slot is None and alone.runner is not None
        assert all(t.is_alive() for t in alone.runner.threads)
    finally:
        assert alone.stop(30)
    waiting = SlotRunner(gateway.app, names, gate, folder, 1, retry_s=0.02)
    held = SlotRunner(gateway.app, names, gate, folder, 1, retry_s=0.02).start()
    try:
        waiting.start()
        assert waiting.stop(5) and not waiting.running  # stopped while waiting: it never starts a runner
        assert held.stop(30)
        gate.idle.wait(0.1)
        assert not waiting.running
    finally:
        held.stop(30)
        waiting.stop(5)


@pytest.mark.gateway_config(JOBS_EXPLAIN_CONCURRENCY=3, JOBS_EXPLAIN_BATCH_SIZE=4, JOBS_EXPLAIN_LEASE_S=45)
def test_each_kind_runs_its_own_number_of_threads_with_its_own_settings(gateway: Gateway, mlp_manifest: Path) -> None:
    assert upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest).status_code == 201
    decisions = [decide_mlp(gateway) for _ in range(3)]
    runner = Runner(gateway.app, ["deliver", "explain"])
    by_kind = {name: [k for k in runner.kinds if k.name == name] for name in ("deliver", "explain")}
    assert [len(by_kind["deliver"]), len(by_kind["explain"])] == [1, 3]
    assert len({k.owner for k in runner.kinds}) == 4  # every thread claims (and fences) under a name of its own
    explain_settings = {k.settings for k in by_kind["explain"]}
    assert explain_settings == {ExplainKind.read_settings(gateway.app.config)}
    (s,) = explain_settings
    assert (s.concurrency, s.batch_size, s.lease_s) == (3, 4, 45.0)
    (d,) = {k.settings for k in by_kind["deliver"]}
    assert (d.concurrency, d.batch_size, d.lease_s) == (1, gateway.app.config["NOTIFY_BATCH_SIZE"],
                                                        gateway.app.config["NOTIFY_LEASE_S"])
    runner.start()
    try:
        assert all(t.is_alive() for t in runner.threads) and len(runner.threads) == 4
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
        while any(explanation_row(gateway, did)["status"] != "ready" for did in decisions):
            assert dt.datetime.now(dt.UTC) < deadline, [dict(explanation_row(gateway, did)) for did in decisions]
            runner.stop_event.wait(0.05)
    finally:
        assert runner.stop(60)
    assert all(explanation_row(gateway, did)["attempts"] == 1 for did in decisions)  # each computed once
    assert [len(leaves(gateway, "decision:explanation:recorded", did)) for did in decisions] == [1, 1, 1]


# --- registration: only explainable versions ---------------------------------------------------------


def test_a_version_without_background_is_refused_naming_the_reason(gateway: Gateway, mlp_manifest: Path) -> None:
    resp = upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest, with_background=False)
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "validation_failed" and "cannot be explained" in error["message"]
    assert "permutation" in error["message"]
    assert error["details"] == [{"field": "explanation.background_sha256", "rule": "required_for_explanation",
                                 "message": "the permutation explainer explains against background data; none was given"}]
    assert gateway.client.get(f"/v1/models/{MLP}").status_code == 404  # nothing registered


def test_the_cli_prints_the_explainer_before_activating(gateway: Gateway, mlp_manifest: Path,
                                                         german_manifest: Path) -> None:
    runner = CliRunner()
    info = ScriptInfo(create_app=lambda: gateway.app)
    result = runner.invoke(main, ["models", "register", str(mlp_manifest), "--activate"], obj=info)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("explainer: model-agnostic permutation_shap_estimate (500 model evaluations per decision over 100 "
                        "background rows), computed by the explain job after each decision commits")
    assert lines[1].startswith(f"registered: {MLP} 1.0.0 (active)")
    retrained = german_manifest.parent / "manifest.toml"
    text = retrained.read_text().replace('version = "1.0.0"', 'version = "1.0.1"')
    (german_manifest.parent / "v101.toml").write_text(text)
    result = runner.invoke(main, ["models", "register", str(german_manifest.parent / "v101.toml")], obj=info)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("explainer: exact tree SHAP (tree_shap_interventional")
    assert "computed with each decision in its transaction" in result.output


# --- the explain kind --------------------------------------------------------------------------------


def test_a_model_agnostic_explanation_is_pending_then_stored_once(gateway: Gateway, mlp_manifest: Path) -> None:
    assert upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest).status_code == 201
    did = decide_mlp(gateway)
    pending = explain(gateway, did)
    assert pending.status_code == 202 and pending.headers["Retry-After"] == "2"
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert view["explanation"] == {"status": "pending", "reason": None, "attempts": 0}

    runner = ExplainKind(gateway.app)
    assert runner.run_once() == 1
    assert runner.run_once() == 0  # stored: never recomputed
    ready = explain(gateway, did, "ru")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["method"] == "permutation_shap_estimate"
    assert body["additivity_error"] is not None and body["additivity_error"] <= 1e-6
    assert body["output"] == pytest.approx(gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a"))
                                           .get_json()["score"], abs=1e-9)
    assert explain(gateway, did, "ru").data == ready.data
    row = explanation_row(gateway, did)
    assert row["attempts"] == 1 and row["claimed_by"] is None and row["lease_expires_at"] is None
    (leaf,) = leaves(gateway, "decision:explanation:recorded", did)
    assert leaf["explanation"]["method"] == "permutation_shap_estimate"
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert view["explanation"] == {"status": "ready", "reason": None, "attempts": 1}
    assert metrics(gateway)['gateway_jobs{kind="explain",state="done"}'] == 1


def test_a_runner_that_lost_its_lease_writes_nothing(gateway: Gateway, mlp_manifest: Path) -> None:
    assert upload_and_register(gateway.client, gateway.auth("admin"), mlp_manifest).status_code == 201
    did = decide_mlp(gateway)
    settings = dataclass_replace(ExplainKind.read_settings(gateway.app.config), lease_s=30.0)
    stalled, rescuer = ExplainKind(gateway.app, settings=settings), ExplainKind(gateway.app, settings=settings)
    t0 = utcnow() + dt.timedelta(seconds=1)
    with gateway.app.app_context():
        (job,) = stalled.claim(t0)
        assert rescuer.claim(t0 + dt.timedelta(seconds=29)) == []  # held under the lease
        (again,) = rescuer.claim(t0 + dt.timedelta(seconds=31))  # the lease ran out: taken over
        assert again.decision_id == job.decision_id == did
        late = stalled.attempt(job, {}, t0 + dt.timedelta(seconds=40))
        assert late.values is not None
        assert stalled.record(late) is None  # fenced: not the holder any more
        assert explanation_row(gateway, did)["status"] == "pending"
        assert rescuer.record(rescuer.attempt(again, {}, t0 + dt.timedelta(seconds=41))) == "ready"
        assert stalled.record(late) is None  # and never after it was stored
    assert explanation_row(gateway, did)["claimed_by"] is None
    assert len(leaves(gateway, "decision:explanation:recorded", did)) == 1


def dataclass_replace(settings: KindSettings, **changes: Any) -> KindSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


def test_a_broken_model_backs_off_dies_and_says_so_without_blocking_others(
        gateway: Gateway, mlp_manifest: Path, mlp_manifest_b: Path) -> None:
    admin = gateway.auth("admin")
    assert upload_and_register(gateway.client, admin, mlp_manifest).status_code == 201
    assert upload_and_register(gateway.client, admin, mlp_manifest_b).status_code == 201
    broken, fine = decide_mlp(gateway), decide_mlp(gateway, "german-credit-mlp-b")
    with gateway.app.app_context():  # the stored artifact of the first model is damaged after its decision
        db.session.execute(sa.text("UPDATE blobs SET data = :d WHERE sha256 = (SELECT artifact_sha256 FROM "
                                   "scoring_models WHERE name = :n)"), {"d": b"damaged", "n": MLP})
        db.session.commit()
    # A fresh process (no model cached) runs the jobs: two attempts, the first retry after 5 s.
    config = {k: gateway.app.config[k] for k in ("TESTING", "DATABASE_URL", "KEYSTORE_URL", "PUBLIC_BASE_URL", *SECRETS)}
    worker_app = create_app({**config, "SKOPS_TRUSTED_TYPES": TRUSTED_TYPES, "JOBS_EXPLAIN_MAX_ATTEMPTS": 2,
                             "JOBS_EXPLAIN_RETRY_SCHEDULE": [5], "JOBS_EXPLAIN_RETRY_JITTER": 0})
    runner = ExplainKind(worker_app)
    t0 = utcnow() + dt.timedelta(seconds=1)
    assert runner.run_once(t0) == 2
    assert explanation_row(gateway, fine)["status"] == "ready"  # the other model's job went on
    row = explanation_row(gateway, broken)
    assert row["status"] == "pending" and row["attempts"] == 1 and "could not be loaded" in row["last_error"]
    assert at(row["next_attempt_at"]) == t0 + dt.timedelta(seconds=5)
    assert explain(gateway, broken).status_code == 202  # still being worked on
    view = gateway.client.get(f"/v1/decisions/{broken}", headers=gateway.auth("agency_a")).get_json()
    assert view["explanation"]["status"] == "pending" and "could not be loaded" in view["explanation"]["reason"]
    assert metrics(gateway)['gateway_jobs{kind="explain",state="retrying"}'] == 1
    assert runner.run_once(t0 + dt.timedelta(seconds=4)) == 0  # not due yet
    assert runner.run_once(t0 + dt.timedelta(seconds=5)) == 1
    row = explanation_row(gateway, broken)
    assert row["status"] == "failed" and row["attempts"] == 2

    resp = explain(gateway, broken, "en")
    assert resp.status_code == 409 and "Retry-After" not in resp.headers
    error = resp.get_json()["error"]
    assert error["code"] == "explanation_failed"
    assert "could not be computed" in error["message"] and "could not be loaded" in error["message"]
    assert error["details"]["contact"] in error["message"]
    assert "human review" in error["message"] and error["details"]["review"].endswith(f"/v1/decisions/{broken}/reviews")
    assert error["details"]["owner"] in error["message"]
    view = gateway.client.get(f"/v1/decisions/{broken}", headers=gateway.auth("agency_a")).get_json()
    assert view["explanation"]["status"] == "failed" and "could not be loaded" in view["explanation"]["reason"]
    found = metrics(gateway)
    assert found['gateway_jobs_dead{kind="explain"}'] == 1 and found['gateway_jobs{kind="explain",state="done"}'] == 1
    (leaf,) = leaves(gateway, "decision:explanation:failed", broken)
    assert leaf["attempts"] == 2 and "could not be loaded" in leaf["reason"]
    assert leaves(gateway, "decision:explanation:recorded", broken) == []
    with worker_app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


# --- idle polls ---------------------------------------------------------------------------------------


@pytest.mark.gateway_config(SQLITE_BUSY_TIMEOUT_S=0.05)
def test_idle_runners_poll_without_taking_the_write_lock(gateway: Gateway, backend: str) -> None:
    """A poll that finds nothing due only reads: the decisions' commits never wait for it (SQLite's one writer)."""
    if backend != "sqlite":
        pytest.skip("the database-wide write lock is SQLite's; PostgreSQL claims lock rows")
    path = sa.make_url(gateway.app.config["SQLALCHEMY_DATABASE_URI"]).database
    app = gateway.app
    runners = {name: kinds(app).get(name)(app) for name in ("deliver", "explain", "recourse", "batch")}

    def polls_with_the_lock_held() -> dict[str, int | str]:
        holder = sqlite3.connect(path, isolation_level=None, timeout=0.05)
        holder.execute("BEGIN IMMEDIATE")  # another writer, e.g. a decision being committed
        try:
            found: dict[str, int | str] = {}
            for name, runner in runners.items():
                try:
                    found[name] = runner.run_once()
                except sa.exc.OperationalError as exc:
                    found[name] = "locked" if "locked" in str(exc) else str(exc)
            return found
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    assert polls_with_the_lock_held() == {"deliver": 0, "explain": 0, "recourse": 0, "batch": 0}
    assert gateway.decide().status_code == 201  # a notice is due now: delivering it needs the lock
    assert polls_with_the_lock_held()["deliver"] == "locked"
    for runner in runners.values():
        runner.close()
