"""Delivery survives dispatchers killed with SIGKILL, a receiver that fails 30% of requests, and restarts.

Real parts only: a gateway instance (secrets, migrated database, the example model), `gateway worker` processes
(3 on PostgreSQL, 1 on SQLite), a real HTTP receiver verifying every Standard Webhooks signature and
failing a seeded 30% of requests, and 500 decisions recorded while the workers run. A killer SIGKILLs a
worker while it holds claimed rows, several times, and restarts it. Afterwards: every decision's notice
arrived at least once, every duplicate carried the same webhook-id, no row is pending, retrying or dead,
and the workers stop cleanly on SIGTERM. `gateway serve` delivers from its own thread with no worker.
"""

from __future__ import annotations

import json
import random
import runpy
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from gateway import create_app
from gateway.config import normalise_database_url
from gateway.extensions import db
from tests.conftest import POSTGRES_URL, SAMPLE_REQUEST
from tests.notifications.conftest import SECRET_A
from tests.notifications.processes import Worker, provision_instance
from tests.notifications.receiver import WebhookReceiver
from tests.support.gateway_server import (
    DECISIONS_PATH,
    GATEWAY,
    Instance,
    decision_body,
    example_rows,
    gateway_server,
    run,
    valid_iin,
)

pytestmark = pytest.mark.slow

DECISIONS = 500
FAIL_RATE = 0.3
KILLS = 4
SEED = 20260711
AGENCY = "chaos-agency"
# Short schedules so that the run takes seconds: retries after 0.2, 0.5, then every 1 s; a claim of a killed
# worker is taken over 2 s later. 30 attempts at a 30% failure rate: a row dies with probability 0.3**30.
ENV = {
    "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "1",
    "GATEWAY_WEBHOOK_SECRETS": json.dumps({AGENCY: SECRET_A}),
    "GATEWAY_NOTIFY_RETRY_SCHEDULE": "[0.2, 0.5, 1]",
    "GATEWAY_NOTIFY_MAX_ATTEMPTS": "30",
    "GATEWAY_NOTIFY_LEASE_S": "2",
    "GATEWAY_NOTIFY_POLL_INTERVAL_S": "0.1",
    "GATEWAY_NOTIFY_BATCH_SIZE": "10",
    "GATEWAY_NOTIFY_SEND_TIMEOUT_S": "2",
}


@pytest.fixture(scope="module")
def sqlite_instance(tmp_path_factory: pytest.TempPathFactory, german_manifest: Path) -> Instance:
    return provision_instance(tmp_path_factory.mktemp("notify-sqlite") / "instance", german_manifest, agency=AGENCY,
                              env=ENV)


@pytest.fixture
def postgres_instance(tmp_path: Path, german_manifest: Path) -> Iterator[Instance]:
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set: the PostgreSQL chaos run needs a server "
                    "(CI sets it when one answers on 127.0.0.1:5432)")
    admin = sa.make_url(normalise_database_url(POSTGRES_URL))
    name = f"gw_chaos_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        yield provision_instance(tmp_path / "instance", german_manifest, url, agency=AGENCY, env=ENV)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def _database_url(instance: Instance) -> str:
    return instance.database_url or f"sqlite:///{instance.sqlite_path}"


def _app(instance: Instance) -> Any:
    """The gateway app in this process, on the instance's database with its secrets (to record decisions)."""
    stored = runpy.run_path(str(instance.folder / "config.py"))
    return create_app({"TESTING": True, "RATELIMIT_ENABLED": False, "DATABASE_URL": _database_url(instance),
                       "WEBHOOK_ALLOW_PRIVATE": True,  # the receiver is local: a lab deployment (issue 11)
                       **{k: stored[k] for k in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}})


def _claims_of(engine: sa.Engine, pid: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM notifications WHERE claimed_by LIKE :p AND "
                                        "status IN ('pending', 'retrying')"), {"p": f"%:{pid}:%"}).scalar_one())


@pytest.mark.parametrize("backend_workers", ["sqlite-1", pytest.param("postgres-3", marks=pytest.mark.postgres)])
def test_every_notice_arrives_despite_killed_dispatchers_and_a_failing_receiver(
        request: pytest.FixtureRequest, tmp_path: Path, german_manifest: Path, backend_workers: str) -> None:
    backend, count = backend_workers.split("-")
    began = time.monotonic()
    instance: Instance = request.getfixturevalue(f"{backend}_instance")
    phases = {"provision": time.monotonic() - began}
    rng = random.Random(SEED)
    engine = sa.create_engine(normalise_database_url(_database_url(instance)))
    receiver = WebhookReceiver(SECRET_A, fail_rate=FAIL_RATE, seed=SEED).start()
    url = receiver.url
    workers = [Worker(i, instance.env, tmp_path) for i in range(int(count))]
    app = _app(instance)
    created: list[str] = []
    errors: list[str] = []
    orphaned = 0  # claimed rows held by workers at the moment they were killed

    def record_decisions() -> None:
        client = app.test_client()
        rows = example_rows(german_manifest)
        headers = {"Authorization": f"Bearer {instance.key}"}
        for i in range(DECISIONS):
            body = decision_body(rows[i % len(rows)], iin=valid_iin(i), language=("kk", "ru", "en")[i % 3],
                                 contact={"webhook": url})
            resp = client.post(DECISIONS_PATH, json=body, headers={**headers, "Idempotency-Key": f"chaos-{i}"})
            if resp.status_code != 201:
                errors.append(f"{i}: {resp.status_code} {resp.get_data(as_text=True)[:300]}")
            else:
                created.append(resp.get_json()["decision_id"])

    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_started()
        phases["workers up"] = time.monotonic() - began
        poster = threading.Thread(target=record_decisions, name="decisions")
        poster.start()
        kills = 0
        while kills < KILLS:
            victim = rng.choice(workers)
            victim.wait_started()
            assert victim.process is not None
            deadline = time.monotonic() + 5
            while _claims_of(engine, victim.process.pid) == 0 and time.monotonic() < deadline:
                time.sleep(0.005)  # kill it while it holds claims (in the middle of a batch) when there is work
            orphaned += _claims_of(engine, victim.process.pid)
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            kills += 1
            victim.start()
        phases["kills"] = time.monotonic() - began
        poster.join(300)
        phases["decisions"] = time.monotonic() - began
        assert not poster.is_alive() and errors == [] and len(created) == DECISIONS

        deadline = time.monotonic() + 120
        while True:
            with engine.connect() as conn:
                open_rows = conn.execute(sa.text(
                    "SELECT count(*) FROM notifications WHERE status IN ('pending', 'retrying')")).scalar_one()
            if open_rows == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.25)

        phases["drained"] = time.monotonic() - began
        # SIGTERM: each worker finishes the row in hand and exits cleanly.
        for w in workers:
            w.wait_started()
            w.signal(signal.SIGTERM)
        assert [w.wait(30) for w in workers] == [0] * len(workers), [w.text()[-2000:] for w in workers]
    finally:
        for w in workers:
            w.kill_group()
        receiver.stop()
        with app.app_context():
            for engine in db.engines.values():  # the main database and the key store
                engine.dispose()

    with engine.connect() as conn:
        notes = conn.execute(sa.text("SELECT id, decision_id, status, attempts, claimed_by FROM notifications")).all()
    engine.dispose()
    mine = {n.decision_id: n for n in notes if n.decision_id in set(created)}
    statuses = defaultdict(int)
    for n in mine.values():
        statuses[n.status] += 1
    # No row is left pending or retrying past its schedule, and none died.
    assert dict(statuses) == {"delivered": DECISIONS}, dict(statuses)
    assert all(n.claimed_by is None for n in mine.values())

    # Every decision's notice arrived at least once; duplicates carry the same webhook-id.
    assert receiver.bad_signatures == []
    arrived: dict[str, set[str]] = defaultdict(set)
    for d in receiver.deliveries:
        assert d.payload["data"]["notification_id"] == d.webhook_id
        arrived[d.payload["data"]["decision_id"]].add(d.webhook_id)
    missing = [did for did in created if did not in arrived]
    assert missing == []
    assert all(ids == {mine[did].id} for did, ids in arrived.items() if did in mine)
    duplicates = len(receiver.deliveries) - len(arrived)

    # The chaos really happened.
    assert kills == KILLS and orphaned >= 1, orphaned
    assert receiver.failed_on_purpose >= 0.2 * receiver.requests
    retried = sum(n.attempts - 1 for n in mine.values())
    assert retried >= receiver.failed_on_purpose * 0.9
    assert all(url not in w.text() for w in workers)  # the contact URL is never logged
    print(f"\n{backend}: {DECISIONS} decisions, {len(workers)} worker(s), {kills} SIGKILLs ({orphaned} claimed rows "
          f"orphaned), {receiver.requests} requests, {receiver.failed_on_purpose} failed on purpose, "
          f"{duplicates} duplicate deliveries (same webhook-id), all delivered; phases (s since start): "
          + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))


def test_gateway_serve_delivers_from_its_own_thread(tmp_path: Path, sqlite_instance: Instance) -> None:
    """`make run` delivers with no other process: a gunicorn worker runs the dispatcher thread."""
    with WebhookReceiver(SECRET_A) as receiver:
        server = gateway_server(sqlite_instance, tmp_path / "serve.log", workers=2)
        try:
            server.start()
            body = decision_body(SAMPLE_REQUEST["features"], contact={"webhook": receiver.url})
            headers = {"Authorization": f"Bearer {sqlite_instance.key}", "Idempotency-Key": "serve-thread-1"}
            resp = requests.post(server.base_url + DECISIONS_PATH, json=body, headers=headers, timeout=30)
            assert resp.status_code == 201, resp.text
            did = resp.json()["decision_id"]
            deadline = time.monotonic() + 20
            while not any(d.payload["data"]["decision_id"] == did for d in receiver.deliveries):
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.05)
            view = requests.get(f"{server.base_url}/v1/decisions/{did}", headers=headers, timeout=10).json()
            (note,) = view["notifications"]
            for _ in range(50):  # the receiver's 200 comes a moment before the row is marked
                if note["status"] == "delivered":
                    break
                time.sleep(0.1)
                note = requests.get(f"{server.base_url}/v1/decisions/{did}", headers=headers, timeout=10).json()[
                    "notifications"][0]
            assert note["status"] == "delivered" and note["delivered_at"] is not None
            # /metrics needs a metrics (or auditor) key (issue 11, finding 1).
            scraper = run([str(GATEWAY), "keys", "create", "--role", "metrics", "--name", "scraper"],
                          env=sqlite_instance.env).strip()
            metrics = requests.get(f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {scraper}"},
                                   timeout=10).text
            assert 'gateway_notifications_delivered_total{model="german-credit"}' in metrics
        finally:
            assert server.stop() == 0, server.log_tail()
        log = server.log_tail(20000)
        assert log.count("dispatcher") >= 2 and "started" in log
        assert receiver.url not in log

