"""`gateway serve` runs its jobs thread in one worker (GATEWAY_JOBS_THREAD_WORKERS=1, the default), and when
that worker is killed another takes the slot: notices are delivered before and after, from one thread at a time."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import requests

from tests.support.gateway_server import (
    DECISIONS_PATH,
    UNLIMITED_RATES,
    ServerProcess,
    decision_body,
    gateway_server,
    provision,
    sample_request,
    valid_iin,
)

STARTED = re.compile(r"\[(\d+)\] \[INFO\] gateway\.jobs: deliver jobs: dispatcher \S+ started")
WAITING = re.compile(r"\[INFO\] gateway\.jobs: jobs: worker (\d+) runs no jobs thread")


def _wait(condition: object, what: str, server: ServerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}\n{server.log_tail()}"
        time.sleep(0.05)


def _decide_and_wait_delivered(server: ServerProcess, key: str, n: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    body = decision_body(sample_request()["features"], iin=valid_iin(n), contact={"email": f"person{n}@example.kz"})
    resp = requests.post(server.base_url + DECISIONS_PATH, json=body, headers={**headers, "Idempotency-Key": f"slot-{n}"},
                         timeout=30)
    assert resp.status_code == 201, resp.text
    did = resp.json()["decision_id"]

    def delivered() -> bool:
        view = requests.get(f"{server.base_url}/v1/decisions/{did}", headers=headers, timeout=10).json()
        return [n["status"] for n in view["notifications"]] == ["delivered"]

    _wait(delivered, f"the notice of decision {n} was not delivered", server)


def test_one_worker_runs_the_jobs_thread_and_another_takes_over_when_it_is_killed(
        tmp_path: Path, example_manifest: Path) -> None:
    instance = provision(tmp_path / "instance", example_manifest, extra_env={
        **UNLIMITED_RATES, "GATEWAY_NOTIFY_ROUTES": '{"email": "file"}',
        "GATEWAY_NOTIFY_FILE_DIR": str(tmp_path / "notices"), "GATEWAY_NOTIFY_POLL_INTERVAL_S": "0.1"})
    server = gateway_server(instance, tmp_path / "serve.log", workers=2)
    try:
        server.start(timeout=120)
        workers = server.wait_workers(2)
        _wait(lambda: STARTED.search(server.log_tail(50000)) and WAITING.search(server.log_tail(50000)),
              "no worker started the jobs thread, or the other did not say it waits", server)
        log = server.log_tail(50000)
        (holder,) = {int(p) for p in STARTED.findall(log)}  # one worker runs the thread ...
        (waiting,) = {int(p) for p in WAITING.findall(log)}  # ... the other runs none
        assert sorted([holder, waiting]) == sorted(workers)
        _decide_and_wait_delivered(server, instance.key, 1)
        assert len(list((tmp_path / "notices").iterdir())) == 1

        os.kill(holder, signal.SIGKILL)  # the kernel drops its lock: a living worker takes the slot
        _wait(lambda: len(STARTED.findall(server.log_tail(50000))) == 2, "no worker took the freed slot", server)
        successor = int(STARTED.findall(server.log_tail(50000))[1])
        assert successor != holder
        _decide_and_wait_delivered(server, instance.key, 2)
        assert len(list((tmp_path / "notices").iterdir())) == 2
        time.sleep(1.5)  # longer than a waiting worker's retry: still one thread, the successor's
        assert [int(p) for p in STARTED.findall(server.log_tail(50000))] == [holder, successor]
    finally:
        assert server.stop() == 0, server.log_tail()
