"""`gateway serve` runs its jobs thread in one worker (GATEWAY_JOBS_THREAD_WORKERS=1, the default), and when
that worker is killed another takes the slot: notices are delivered before and after, from one thread at a time."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.gateway_server import (
    DECISIONS_PATH,
    MODEL_NAME,
    UNLIMITED_RATES,
    ServerProcess,
    decision_body,
    example_rows,
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


ANSWERED = re.compile(r'"GET /healthz\?n=(\d+) HTTP/1\.[01]" 200 .*<(\d+)>$', re.MULTILINE)
BATCH_ROWS = 3000


def test_the_worker_running_the_jobs_thread_leaves_new_requests_to_the_other_while_its_thread_works(
        tmp_path: Path, example_manifest: Path) -> None:
    """While the jobs thread decides a batch, requests one after another are answered by the other worker: the
    thread's worker waits for its thread before it accepts (gateway.server.GatewayWorker), and the other takes
    the connection meanwhile. Without that, the two workers take turns at random and the thread's worker
    answers about half of them, each waiting behind the thread for the interpreter lock."""
    instance = provision(tmp_path / "instance", example_manifest, extra_env={
        **UNLIMITED_RATES, "GATEWAY_NOTIFY_ROUTES": '{"email": "file"}', "GATEWAY_NOTIFY_FILE_DIR": str(tmp_path / "notices"),
        "GATEWAY_JOBS_BATCH_POLL_INTERVAL_S": "0.1"})
    server = gateway_server(instance, tmp_path / "serve.log", workers=2)
    server.argv.append("--access-log")  # one line per request, ending with the answering worker's <pid>
    auth = {"Authorization": f"Bearer {instance.key}"}
    rows = example_rows(example_manifest)
    try:
        server.start(timeout=120)
        server.wait_workers(2)
        _wait(lambda: STARTED.search(server.log_tail(50000)), "no worker started the jobs thread", server)
        (holder,) = {int(p) for p in STARTED.findall(server.log_tail(50000))}
        lines = "".join(json.dumps({"idempotency_key": f"busy-{i}", "features": rows[i % len(rows)], "subject": {
            "iin": valid_iin(i), "language": "ru", "contact": {"email": f"busy{i}@example.kz"}}}) + "\n"
            for i in range(BATCH_ROWS))
        submitted = requests.post(server.base_url + f"/v1/models/{MODEL_NAME}/decision-batches", data=lines.encode(),
                                  headers={**auth, "Content-Type": "application/x-ndjson"}, timeout=120)
        assert submitted.status_code == 202, submitted.text
        batch = submitted.json()["batch_id"]

        def progress() -> dict[str, Any]:
            found: dict[str, Any] = requests.get(
                f"{server.base_url}/v1/models/{MODEL_NAME}/decision-batches/{batch}", headers=auth, timeout=30).json()
            return found

        _wait(lambda: progress()["decided_rows"] > 0, "the jobs thread did not start deciding the batch", server)
        asked = 0
        while asked < 150:
            asked += 1
            assert requests.get(f"{server.base_url}/healthz?n={asked}", timeout=30).status_code == 200
        state = progress()
        assert state["status"] == "running" and state["decided_rows"] < BATCH_ROWS, \
            f"the batch ended before the requests did: nothing was measured ({state})"
        _wait(lambda: len(ANSWERED.findall(server.log_tail(200000))) == asked, "not every request was logged", server)
        by_holder = sum(1 for _, pid in ANSWERED.findall(server.log_tail(200000)) if int(pid) == holder)
        assert by_holder <= asked // 10, (
            f"the worker running the jobs thread answered {by_holder} of {asked} requests while its thread was busy")
    finally:
        assert server.stop() == 0, server.log_tail()
