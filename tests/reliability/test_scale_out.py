"""Scale-out: two `gateway serve` instances and two `gateway worker` processes on one PostgreSQL survive
SIGKILLs of one instance (gunicorn master and workers) and one worker, mid-run, with a decision batch running.

Real parts only: a fresh PostgreSQL database of its own, two gunicorn instances (2 workers each, jobs thread
off: background work is the workers'), two `gateway worker` processes, a real SMTP receiver (aiosmtpd) the
notices go to, client threads that spread their decisions over both instances the way a load balancer would
(each decision with its own Idempotency-Key, retried with the same key and bytes on the other instance when a
connection fails), and a decision batch submitted over HTTP and decided in chunks by the workers.

What "delivered once" means here. Delivery is at-least-once (the outbox is claimed with a lease; a worker
killed after its SMTP server accepted a message and before it marked the row has that row sent again by
another worker once the lease expires). So the test asserts exactly this:
- every notification row reaches the receiver at least once, under the Message-ID made from its id;
- every copy of a message carries the same Message-ID and is addressed to the same person;
- a notice arrives more than once only if its row was claimed by the worker that was killed, at the moment it
  was killed (no duplicate from the surviving processes, the killed instance or a retry of a decision).
The person's mail client folds copies with one Message-ID into one message.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from gateway.config import normalise_database_url
from tests.conftest import POSTGRES_URL
from tests.notifications.conftest import SMTPServer
from tests.notifications.processes import Worker, provision_instance
from tests.support.gateway_server import (
    DECISIONS_PATH,
    UNLIMITED_RATES,
    Instance,
    ServerProcess,
    decision_body,
    example_rows,
    gateway_server,
    valid_iin,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TOTAL = 200  # single decisions, acknowledged one by one
CLIENTS = 6
BATCH_ROWS = 90
CHUNK = 3  # the batch commits every 3 rows: the worker kill lands between or inside chunks
KILL_AT = 0.3  # share of the single decisions acknowledged when the kills happen
LEASE_S = 15  # a killed worker's claims are taken over after this long; long enough that a surviving worker
# stalled by a loaded machine keeps its lease (a lapse would let a second worker send the same notice)
MAX_ATTEMPTS = 30  # per decision key
TIMEOUT = (3.0, 20.0)  # connect, read
AGENCY = "scale-out-agency"
SEED = 20260711
ENV = {
    **UNLIMITED_RATES,
    "GATEWAY_JOBS_THREAD": "0",  # `gateway serve` runs no background thread: the workers do that work
    "GATEWAY_SMTP_SECURITY": "none",
    "GATEWAY_NOTIFY_LEASE_S": str(LEASE_S),
    "GATEWAY_NOTIFY_POLL_INTERVAL_S": "0.1",
    "GATEWAY_NOTIFY_BATCH_SIZE": "10",
    "GATEWAY_NOTIFY_RETRY_SCHEDULE": "[0.2, 0.5, 1]",
    "GATEWAY_NOTIFY_MAX_ATTEMPTS": "30",
    "GATEWAY_JOBS_BATCH_LEASE_S": str(LEASE_S),
    "GATEWAY_JOBS_BATCH_POLL_INTERVAL_S": "0.1",
    "GATEWAY_JOBS_SEQUENCE_POLL_INTERVAL_S": "0.2",
    "GATEWAY_BATCH_CHUNK_SIZE": str(CHUNK),
}


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own on the configured PostgreSQL server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set: the scale-out run needs a PostgreSQL server "
                    "(CI sets it when one answers on 127.0.0.1:5432)")
    admin = sa.make_url(normalise_database_url(POSTGRES_URL))
    name = f"gw_scale_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        # What the README asks of a deployment; the server default, checked rather than assumed.
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@dataclass
class Key:
    """One decision: its Idempotency-Key, the bytes sent with it, and the 201 bodies that came back."""

    index: int
    key: str
    email: str
    payload: bytes
    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    failed_attempts: list[str] = field(default_factory=list)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(poll)


class Client:
    """An agency system behind a load balancer: key i goes to instance i % 2, a failed attempt to the other."""

    def __init__(self, servers: list[ServerProcess], api_key: str, work: queue.Queue[Key], acked: list[str],
                 rng: random.Random) -> None:
        self.urls = [s.base_url + DECISIONS_PATH for s in servers]
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.work, self.acked, self.rng = work, acked, rng

    def run(self) -> None:
        with requests.Session() as session:
            while True:
                try:
                    item = self.work.get_nowait()
                except queue.Empty:
                    return
                self.send(session, item)
                self.acked.append(item.key)

    def send(self, session: requests.Session, item: Key) -> None:
        headers = {**self.headers, "Idempotency-Key": item.key}
        for attempt in range(MAX_ATTEMPTS):
            url = self.urls[(item.index + attempt) % len(self.urls)]
            try:
                response = session.post(url, data=item.payload, headers=headers, timeout=TIMEOUT)
            except requests.RequestException as exc:  # refused, reset, timed out: the answer was lost
                item.failed_attempts.append(type(exc).__name__)
            else:
                if response.status_code == 201:
                    item.acknowledged.append(response.json())
                    return
                # 409: the same key is in flight on the other instance (an earlier attempt); 5xx: try again.
                if response.status_code < 500 and response.status_code != 409:
                    raise AssertionError(f"{item.key}: unexpected {response.status_code} {response.text[:500]}")
                item.failed_attempts.append(f"HTTP {response.status_code}")
            time.sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + self.rng.random()))
        raise AssertionError(f"{item.key}: no 201 after {MAX_ATTEMPTS} attempts: {item.failed_attempts}")


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def guarded(target: Callable[..., None], errors: list[BaseException], *args: Any) -> threading.Thread:
    def body() -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - the test thread reports it and fails
            errors.append(exc)

    return threading.Thread(target=body, daemon=True)


def make_keys(rows: list[dict[str, Any]], run_id: str) -> list[Key]:
    keys = []
    for i in range(TOTAL):
        email = f"person{i}@example.kz"
        key = f"scale-{run_id}-{i:04d}"
        body = decision_body(rows[i % len(rows)], iin=valid_iin(i), language=("kk", "ru", "en")[i % 3],
                             contact={"email": email}, reference=key)
        keys.append(Key(i, key, email, json.dumps(body, ensure_ascii=False).encode()))
    return keys


def batch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"idempotency_key": f"batch-{i}", "features": rows[(i * 7) % len(rows)], "reference": f"batch-{i}",
             "subject": {"iin": valid_iin(10_000 + i), "language": "ru",
                         "contact": {"email": f"batch{i}@example.kz"}}} for i in range(BATCH_ROWS)]


def test_two_instances_and_two_workers_survive_kills_and_decide_and_notify_each_once(
        tmp_path: Path, german_manifest: Path, pg_url: str) -> None:
    began = time.monotonic()
    phases: dict[str, float] = {}
    smtp = SMTPServer().start()
    env = {**ENV, "GATEWAY_SMTP_HOST": "127.0.0.1", "GATEWAY_SMTP_PORT": str(smtp.port)}
    instance: Instance = provision_instance(tmp_path / "instance", german_manifest, pg_url, agency=AGENCY, env=env)
    engine = sa.create_engine(normalise_database_url(pg_url))
    phases["provisioned"] = time.monotonic() - began

    def q(sql: str, **params: Any) -> Any:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()

    servers = [gateway_server(instance, tmp_path / f"serve-{n}.log", workers=2) for n in "ab"]
    workers = [Worker(i, instance.env, tmp_path) for i in range(2)]
    rng = random.Random(SEED)
    keys = make_keys(example_rows(german_manifest), run_id=str(SEED))
    work: queue.Queue[Key] = queue.Queue()
    for item in keys:
        work.put(item)
    acked: list[str] = []
    errors: list[BaseException] = []
    held_by_killed: set[str] = set()
    try:
        for w in workers:
            w.start()
        for s in servers:  # side by side; from this thread, which outlives them (they die with their starter)
            s.launch()
        for s in servers:
            s.wait_ready(timeout=180)
        for w in workers:
            w.wait_started()
        phases["up"] = time.monotonic() - began

        clients = [guarded(Client(servers, instance.key, work, acked, random.Random(rng.random())).run, errors)
                   for _ in range(CLIENTS)]
        for t in clients:
            t.start()
        wait_for(lambda: len(acked) >= KILL_AT * TOTAL or errors, 120, "decisions acknowledged before the batch")
        assert not errors, errors[0]

        # A small batch, submitted while the decisions flow: the kills land while the workers decide its chunks.
        auth = {"Authorization": f"Bearer {instance.key}"}
        submitted = requests.post(servers[1].base_url + "/v1/models/german-credit/decision-batches",
                                  json={"rows": batch_rows(example_rows(german_manifest))}, headers=auth, timeout=60)
        assert submitted.status_code == 202, submitted.text
        batch_id = submitted.json()["batch_id"]

        def batch_claim() -> tuple[str, int] | None:
            (owner, next_row), = q("SELECT claimed_by, next_row FROM decision_batches WHERE id = :b", b=batch_id)
            return (owner, next_row) if owner and 0 < next_row < BATCH_ROWS else None

        owner, _ = wait_for(batch_claim, 60, "the batch in the middle of its chunks", poll=0.005)
        victim = next(w for w in workers if w.process is not None and f":{w.process.pid}:" in f":{owner}:")
        gunicorn = [servers[0].pid, *servers[0].workers()]
        assert len(gunicorn) >= 2, gunicorn  # the master and its workers (2, unless one is being replaced)
        assert victim.process is not None
        os.killpg(victim.process.pid, signal.SIGKILL)
        os.killpg(servers[0].pid, signal.SIGKILL)  # the master and its workers: one process group
        held_by_killed = {r[0] for r in q("SELECT id FROM notifications WHERE claimed_by LIKE :p",
                                          p=f"%:{victim.process.pid}:%")}
        batch_at_kill = q("SELECT next_row FROM decision_batches WHERE id = :b", b=batch_id)[0][0]
        assert victim.wait(10) == -signal.SIGKILL
        assert servers[0].process is not None and servers[0].process.wait(10) == -signal.SIGKILL
        wait_for(lambda: not any(running(p) for p in gunicorn), 10, "instance a's processes gone")
        acked_at_kill = len(acked)
        phases["kills"] = time.monotonic() - began

        for t in clients:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in clients), "a client is stuck"
        assert not errors, f"{len(errors)} client(s) failed; first: {errors[0]!r}\n{servers[1].log_tail()}"
        phases["decisions"] = time.monotonic() - began

        # The surviving worker finishes the batch and delivers every notice (the killed one's after its lease).
        wait_for(lambda: q("SELECT status FROM decision_batches WHERE id = :b", b=batch_id)[0][0] == "done", 120,
                 "the batch finished after the kill")
        wait_for(lambda: q("SELECT count(*) FROM notifications WHERE status <> 'delivered'")[0][0] == 0, 120,
                 "every notice delivered")
        expected_mail = q("SELECT count(*) FROM notifications")[0][0]
        wait_for(lambda: len({m.message["Message-ID"] for m in smtp.received}) >= expected_mail, 30,
                 "every notice at the SMTP receiver")
        phases["drained"] = time.monotonic() - began
        survivor = next(w for w in workers if w is not victim)
        survivor.signal(signal.SIGTERM)
        servers[1].stop(timeout=5)  # its state is all in the database: no need to wait for a graceful exit
        assert survivor.wait(30) == 0, survivor.text()[-3000:]
    finally:
        for w in workers:
            w.kill_group()
        for s in servers:
            s.stop()
        smtp.stop()

    # --- the clients: every key acknowledged once, the kills cost some attempts ---------------------------
    assert sorted(acked) == sorted(k.key for k in keys)
    assert all(len(k.acknowledged) == 1 for k in keys)
    assert acked_at_kill < TOTAL, "the kills came after the last decision: they proved nothing"
    assert 0 < batch_at_kill < BATCH_ROWS

    # --- the database: each acknowledged decision once, with its notice, explanation and audit leaf ------
    decisions = dict(q("SELECT reference, id FROM decisions WHERE reference LIKE 'scale-%'"))
    assert len(decisions) == TOTAL == len(set(decisions.values()))
    for item in keys:
        assert decisions[item.key] == item.acknowledged[0]["decision_id"], item.key
    batch_decided = q("SELECT idx, decision_id, status FROM decision_batch_rows WHERE batch_id = :b", b=batch_id)
    assert len(batch_decided) == BATCH_ROWS and {r.status for r in batch_decided} == {"decided"}
    assert sorted(r.idx for r in batch_decided) == list(range(BATCH_ROWS))
    batch_ids = {r.decision_id for r in batch_decided}
    assert len(batch_ids) == BATCH_ROWS
    assert q("SELECT decided_rows, replayed_rows, invalid_rows FROM decision_batches WHERE id = :b",
             b=batch_id)[0] == (BATCH_ROWS, 0, 0)
    everyone = set(decisions.values()) | batch_ids
    assert q("SELECT count(*), count(DISTINCT id) FROM decisions")[0] == (TOTAL + BATCH_ROWS,) * 2
    assert {r[0] for r in q("SELECT id FROM decisions")} == everyone
    assert q("SELECT count(*), count(DISTINCT key) FROM idempotency_keys")[0] == (TOTAL + BATCH_ROWS,) * 2
    explained = dict(q("SELECT decision_id, status FROM explanations"))
    assert set(explained) == everyone and set(explained.values()) == {"ready"}
    leaves = Counter(r[0] for r in q("SELECT object_id FROM log_leaves WHERE kind = 'decision:recorded'"))
    assert set(leaves) == everyone and set(leaves.values()) == {1}
    notes = q("SELECT id, decision_id, kind, channel, status FROM notifications")
    per_decision = Counter(n.decision_id for n in notes)
    assert set(per_decision) == everyone and set(per_decision.values()) == {1}
    assert {(n.kind, n.channel, n.status) for n in notes} == {("decision_notice", "email", "delivered")}

    # --- the SMTP receiver: every notice under its own Message-ID, copies only of the killed worker's rows -
    domain = "@" + instance_domain(smtp)
    arrivals: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for m in smtp.received:
        message_id = str(m.message["Message-ID"])
        assert message_id.startswith("<") and message_id.endswith(domain + ">"), message_id
        arrivals[message_id[1:-len(domain) - 1]].append(tuple(m.rcpt_tos))
    assert set(arrivals) == {n.id for n in notes}, "a notice never arrived, or mail arrived for no notice"
    to = {n.id: n.decision_id for n in notes}
    email_of = {decisions[k.key]: k.email for k in keys} | {
        r.decision_id: f"batch{r.idx}@example.kz" for r in batch_decided}
    for note_id, copies in arrivals.items():
        assert set(copies) == {(email_of[to[note_id]],)}, f"{note_id}: sent to {copies}"
    duplicated = {note_id for note_id, copies in arrivals.items() if len(copies) > 1}
    assert duplicated <= held_by_killed, f"duplicates not explained by the killed worker: {duplicated - held_by_killed}"

    failed = sum(len(k.failed_attempts) for k in keys)
    # Keys still queued at the kills went first to the dead instance half of the time: refused, then retried.
    assert failed >= 1, "no attempt failed although an instance was killed mid-run"
    print(f"\nscale-out: {TOTAL} decisions from {CLIENTS} clients over 2 instances + a {BATCH_ROWS}-row batch; "
          f"instance a and one worker SIGKILLed at {acked_at_kill} acknowledged / batch row {batch_at_kill}; "
          f"{failed} failed attempts retried; {len(smtp.received)} mails for {len(arrivals)} notices "
          f"({len(duplicated)} duplicated, all held by the killed worker: {len(held_by_killed)} rows); "
          "phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    engine.dispose()


def instance_domain(smtp: SMTPServer) -> str:
    """The Message-ID domain: the host of the gateway's public URL (the instance default, as no URL is set)."""
    hosts = {str(m.message["Message-ID"]).rsplit("@", 1)[1].rstrip(">") for m in smtp.received}
    assert len(hosts) == 1, hosts
    return hosts.pop()
