"""A decision batch survives `gateway worker` processes killed with SIGKILL: it resumes from the last committed
chunk and no row is decided twice (real worker processes on SQLite, killed mid-run)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway import batches, create_app
from gateway.auth import Principal
from gateway.extensions import db
from gateway.models import ApiClient
from tests.support.gateway_server import GATEWAY, ROOT, provision, sample_request, valid_iin

pytestmark = pytest.mark.slow
ROWS = 1200
CHUNK = 8
WORKER_ENV = {"GATEWAY_JOBS_BATCH_LEASE_S": "2", "GATEWAY_JOBS_BATCH_POLL_INTERVAL_S": "0.1",
              "GATEWAY_NOTIFY_ROUTES": '{"email": "log"}'}


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 (closed in kill/stop)
        self.process = subprocess.Popen([str(GATEWAY), "worker", "--kinds", "batch"], env={**env, **WORKER_ENV},
                                        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._out,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._out.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        self._out.close()


def _rows() -> list[dict[str, Any]]:
    base = sample_request()
    out = []
    for i in range(ROWS):
        features = copy.deepcopy(base["features"])
        features["duration_months"] = 6 + i % 60
        features["credit_amount"] = 500 + (i * 37) % 9000
        out.append({"idempotency_key": f"kill-{i}", "features": features,
                    "subject": {"iin": valid_iin(i), "language": "kk", "contact": {"email": f"p{i}@example.kz"}}})
    return out


def test_a_batch_resumes_after_workers_are_killed_and_decides_every_row_once(
        tmp_path: Path, german_manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = provision(tmp_path / "instance", german_manifest)
    monkeypatch.setenv("GATEWAY_INSTANCE_PATH", str(instance.folder))
    app = create_app({"BATCH_CHUNK_SIZE": CHUNK, "RATELIMIT_ENABLED": False})

    def q(sql: str) -> Any:
        with app.app_context():
            found = db.session.execute(sa.text(sql)).one()
            db.session.commit()
        return found

    with app.app_context():
        client = db.session.execute(sa.select(ApiClient).where(ApiClient.name == "reliability-agency")).scalar_one()
        who = Principal(client.id, client.name, client.body, client.role)
        batch_id = batches.submit(who, "german-credit", batches.Upload("json", rows=_rows())).id

    def progress() -> int:
        return int(q(f"SELECT next_row FROM decision_batches WHERE id = '{batch_id}'")[0])

    decided_before: dict[int, str] = {}
    for round_ in range(2):  # two workers killed mid-run, each after some chunks committed
        worker = Worker(instance.env, tmp_path / f"worker-{round_}.log")
        start = progress()
        deadline = time.monotonic() + 180
        while progress() < start + 5 * CHUNK:
            assert worker.process.poll() is None, (tmp_path / f"worker-{round_}.log").read_text()
            assert time.monotonic() < deadline, "the worker decided nothing"
            time.sleep(0.005)
        worker.kill()
        at_kill = progress()
        assert at_kill < ROWS, "the batch finished before the kill: make it longer"
        # What is committed is whole: every row before the position is decided, none after it.
        decided = q(f"SELECT count(*), min(idx), max(idx) FROM decision_batch_rows WHERE batch_id = '{batch_id}' "
                    "AND status = 'decided'")
        assert (decided[0], decided[1], decided[2]) == (at_kill, 0, at_kill - 1)
        assert q("SELECT count(*) FROM decisions")[0] == at_kill
        with app.app_context():
            rows = db.session.execute(sa.text(f"SELECT idx, decision_id FROM decision_batch_rows WHERE batch_id = "
                                              f"'{batch_id}' AND status = 'decided'")).all()
            db.session.commit()
        now = dict((int(i), d) for i, d in rows)
        assert all(now[i] == d for i, d in decided_before.items())  # committed results never change
        decided_before = now

    last = Worker(instance.env, tmp_path / "worker-last.log")
    try:
        deadline = time.monotonic() + 240
        while q(f"SELECT status FROM decision_batches WHERE id = '{batch_id}'")[0] != "done":
            assert last.process.poll() is None, (tmp_path / "worker-last.log").read_text()
            assert time.monotonic() < deadline, "the batch was not finished after the kills"
            time.sleep(0.1)
    finally:
        last.stop()

    summary = q(f"SELECT total_rows, next_row, decided_rows, replayed_rows, invalid_rows FROM decision_batches "
                f"WHERE id = '{batch_id}'")
    assert tuple(summary) == (ROWS, ROWS, ROWS, 0, 0)
    assert q("SELECT count(*), count(DISTINCT id) FROM decisions") == (ROWS, ROWS)
    assert q("SELECT count(*) FROM explanations WHERE status = 'ready'")[0] == ROWS
    assert q("SELECT count(*), count(DISTINCT decision_id) FROM notifications") == (ROWS, ROWS)
    assert q("SELECT count(*), count(DISTINCT object_id) FROM log_leaves WHERE kind = 'decision:recorded'") == (ROWS, ROWS)
    assert q("SELECT count(*) FROM idempotency_keys")[0] == ROWS
    assert q(f"SELECT count(DISTINCT decision_id) FROM decision_batch_rows WHERE batch_id = '{batch_id}'")[0] == ROWS
    with app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()
