"""The sequencer under SIGKILL: decisions stream in from 4 clients while `gateway worker --kinds sequence`
processes are killed and restarted; afterwards the log's indices are exactly 0…N−1, every acknowledged
decision has its leaf in the tree, and every checkpoint is consistent with the last one. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.auditlog import merkle
from gateway.auditlog.note import Checkpoint, Verifier
from gateway.config import normalise_database_url
from tests.support.gateway_server import (
    DECISIONS_PATH,
    GATEWAY,
    ROOT,
    decision_body,
    gateway_server,
    provision,
    sample_request,
    valid_iin,
)

pytestmark = pytest.mark.slow
POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
DECISIONS = 1000
CLIENTS = 4


class Sequencer:
    """`gateway worker --kinds sequence`, in a process group of its own so a kill takes it whole."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115 (closed in kill)
        self.process = subprocess.Popen([str(GATEWAY), "worker", "--kinds", "sequence"], env=env, cwd=ROOT,
                                        stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_started(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "sequence jobs: sequencer" not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.02)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.out.close()

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.out.close()


def _post(base: str, key: str, body: dict[str, Any], idem: str) -> dict[str, Any] | None:
    request = urllib.request.Request(base + DECISIONS_PATH, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                              "Idempotency-Key": idem})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            found: dict[str, Any] = json.loads(resp.read())
            return found
    except OSError:
        return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Any:
    if request.param == "sqlite":
        yield None
        return
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set (CI sets it when PostgreSQL answers on 127.0.0.1:5432)")
    admin = sa.create_engine(normalise_database_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"gw_seq_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_sequencer_killed_while_decisions_stream_in(tmp_path: Path, example_manifest: Path,
                                                    database_url: str | None) -> None:
    instance = provision(tmp_path / "instance", example_manifest, database_url=database_url,
                         extra_env={"GATEWAY_JOBS_THREAD_KINDS": '["deliver", "explain"]',
                                    "GATEWAY_LOG_CHECKPOINT_INTERVAL_S": "0.2",
                                    "GATEWAY_JOBS_SEQUENCE_POLL_INTERVAL_S": "0.05",
                                    "GATEWAY_JOBS_SEQUENCE_BATCH_SIZE": "40",
                                    "GATEWAY_NOTIFY_ROUTES": '{"email": "log"}'})
    features = sample_request()["features"]
    acknowledged: list[str] = []
    lock = threading.Lock()
    server = gateway_server(instance, tmp_path / "gateway.log", workers=2).start()
    sequencers = [Sequencer(instance.env, tmp_path / f"sequencer-{n}.log") for n in range(2)]
    notes: list[str] = []

    enough_kills = threading.Event()  # the last tenth of the stream waits for the third kill, so the kills land
    # while decisions stream in however fast the decision path gets

    def client(c: int) -> None:
        for i in range(c, DECISIONS, CLIENTS):
            if i >= DECISIONS * 9 // 10:
                enough_kills.wait(300)
            made = _post(server.base_url, instance.key, decision_body(features, iin=valid_iin(i)), f"seq-{i}")
            if made is not None:
                with lock:
                    acknowledged.append(made["decision_id"])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        kills = 0
        rng = random.Random(20260711)
        while any(t.is_alive() for t in threads):
            victim = sequencers.pop(0)
            victim.wait_started()
            time.sleep(rng.uniform(0.05, 0.6))
            victim.kill()  # mid-batch or idle: either way it commits nothing half-way
            kills += 1
            if kills >= 3:
                enough_kills.set()
            sequencers.append(Sequencer(instance.env, tmp_path / f"sequencer-{kills + 1}.log"))
            try:
                with urllib.request.urlopen(server.base_url + "/v1/log/checkpoint", timeout=30) as resp:
                    notes.append(resp.read().decode())
            except urllib.error.HTTPError as exc:
                assert exc.code == 404  # no checkpoint signed yet
        for t in threads:
            t.join()
        # Let the survivors finish the tail, then one last checkpoint covers every leaf.
        engine = sa.create_engine(normalise_database_url(database_url or f"sqlite:///{instance.sqlite_path}"))
        deadline = time.monotonic() + 120
        while True:
            with engine.connect() as conn:
                waiting = conn.execute(sa.text("SELECT count(*) FROM log_leaves WHERE seq IS NULL")).scalar_one()
                top = conn.execute(sa.text("SELECT max(size) FROM log_checkpoints")).scalar_one()
                total = conn.execute(sa.text("SELECT count(*) FROM log_leaves")).scalar_one()
            if waiting == 0 and top == total:
                break
            assert time.monotonic() < deadline, f"{waiting} leaves still unsequenced, checkpoint {top} of {total}"
            time.sleep(0.2)
        with urllib.request.urlopen(server.base_url + "/v1/log/checkpoint", timeout=30) as resp:
            notes.append(resp.read().decode())
        with urllib.request.urlopen(server.base_url + "/v1/log/key", timeout=30) as resp:
            verifier = Verifier.parse(json.loads(resp.read())["verifier_key"])
    finally:
        enough_kills.set()
        for s in sequencers:
            s.stop()
        server.stop()

    assert kills >= 3 and len(acknowledged) == DECISIONS
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT seq, leaf_hash, kind, object_id FROM log_leaves ORDER BY seq")).all()
        nodes = {(lv, ix): bytes(h) for lv, ix, h in conn.execute(sa.text("SELECT level, idx, hash FROM log_nodes"))}
    engine.dispose()
    assert [r.seq for r in rows] == list(range(len(rows)))  # 0…N−1: no gap, no duplicate
    decided = {r.object_id for r in rows if r.kind == "decision:recorded"}
    assert set(acknowledged) <= decided  # every acknowledged decision has its leaf in the tree
    hashes = [bytes.fromhex(r.leaf_hash) for r in rows]
    checkpoints = sorted({Checkpoint.parse(verifier.open(n)) for n in notes if n}, key=lambda c: c.size)
    assert checkpoints[-1].size == len(rows) and checkpoints[-1].root == merkle.root_of(hashes)

    def node(level: int, index: int) -> bytes:
        return nodes[level, index]

    for before, after in zip(checkpoints, checkpoints[1:], strict=False):
        assert merkle.root_of(hashes[: before.size]) == before.root
        merkle.verify_consistency(before.size, after.size, before.root, after.root,
                                  merkle.consistency_proof(node, before.size, after.size))
