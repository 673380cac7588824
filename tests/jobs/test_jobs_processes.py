"""The explain kind in real processes: `gateway worker` (killed with SIGKILL mid-job) and `gateway serve`'s thread."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.conftest import MLP, JobsInstance, provision_mlp
from tests.support.gateway_server import (
    GATEWAY,
    ROOT,
    decision_body,
    gateway_server,
    sample_request,
    valid_iin,
)

pytestmark = pytest.mark.slow
BACKENDS = pytest.mark.parametrize("fresh_database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                   indirect=True)
FEATURES = sample_request()["features"]


class WorkerProcess:
    """`gateway worker --kinds explain` in a session of its own, logging to a file."""

    def __init__(self, instance: JobsInstance, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([str(GATEWAY), "worker", "--kinds", "explain"],
                                        env={**instance.instance.env, **(env or {})}, cwd=ROOT,
                                        stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self, timeout: float = 120) -> str:
        """Wait for the runner's start line; return the owner name it claims with."""
        deadline = time.monotonic() + timeout
        while "explain jobs: explainer" not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.02)
        line = next(x for x in self.text().splitlines() if "explain jobs: explainer" in x)
        return line.split("explainer ", 1)[1].split(" started", 1)[0]

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._out.close()
        return self.process.returncode


def wait_for(condition: Any, timeout: float, what: str, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(poll)


def as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def test_a_worker_process_stores_the_explanation_within_seconds(mlp_instance: JobsInstance, tmp_path: Path) -> None:
    worker = WorkerProcess(mlp_instance, tmp_path / "worker.log", {"GATEWAY_JOBS_EXPLAIN_POLL_INTERVAL_S": "0.05"})
    try:
        worker.wait_started()
        started = time.monotonic()
        did = mlp_instance.decide(FEATURES, 1)
        pending = mlp_instance.explanation(did)
        assert pending.status_code == 202 and pending.headers["Retry-After"] == "2"
        ready = wait_for(lambda: (r := mlp_instance.explanation(did)).status_code == 200 and r, 10,
                         f"not stored within 10 s: {worker.text()[-3000:]}", poll=0.05)
        waited = time.monotonic() - started
        body = ready.get_json()
        assert body["method"] == "permutation_shap_estimate" and body["additivity_error"] <= 1e-6
        assert abs(body["base_value"] + sum(f["contribution"] for f in body["factors"])
                   + (body["confidential"] or {}).get("contribution_or_null", 0) - body["output"]) <= 1e-6
        assert all(mlp_instance.explanation(did).data == ready.data for _ in range(3))
        assert mlp_instance.recorded_leaves() == [did]
        print(f"decision to stored explanation: {waited:.2f} s")
    finally:
        assert worker.stop() == 0, worker.text()
    assert "stopped" in worker.text()


@BACKENDS
def test_a_worker_killed_mid_job_has_its_jobs_taken_after_the_lease_and_stored_once(
        mlp_instance: JobsInstance, tmp_path: Path) -> None:
    # The runner gives back the rest of its batch once a job ends past half the lease: on a loaded machine a job
    # can take many seconds, so the lease is long enough for the first one to end before that point.
    lease = 30.0
    env = {"GATEWAY_JOBS_EXPLAIN_LEASE_S": str(lease), "GATEWAY_JOBS_EXPLAIN_BATCH_SIZE": "50",
           "GATEWAY_JOBS_EXPLAIN_POLL_INTERVAL_S": "0.05"}
    decisions = [mlp_instance.decide(FEATURES | {"age": 20 + i}, 100 + i) for i in range(12)]
    first = WorkerProcess(mlp_instance, tmp_path / "first.log", env)
    try:
        owner = first.wait_started()
        # Kill it as soon as it stored its first explanation, while it holds the rest of its batch.
        wait_for(lambda: any(r["status"] == "ready" for r in mlp_instance.rows().values()), 300,
                 f"the first worker stored nothing: {first.text()[-3000:]}", poll=0.005)
        first.kill()
    finally:
        first.stop()
    at_kill = mlp_instance.rows()
    stored_before = {d for d, r in at_kill.items() if r["status"] == "ready"}
    held = {d: as_utc(r["lease_expires_at"]) for d, r in at_kill.items()
            if r["status"] == "pending" and r["claimed_by"] == owner}
    assert held, f"the killed worker held no job: {at_kill}"
    assert stored_before and set(decisions) == set(at_kill)

    second = WorkerProcess(mlp_instance, tmp_path / "second.log", env)
    try:
        second.wait_started()
        wait_for(lambda: all(r["status"] == "ready" for r in mlp_instance.rows().values()), 600 + lease,
                 f"not all stored: {second.text()[-3000:]}", poll=0.1)
    finally:
        assert second.stop() == 0, second.text()
    after = mlp_instance.rows()
    for did, expires in held.items():  # taken again only once the dead worker's lease ran out
        assert as_utc(after[did]["computed_at"]) >= expires, (did, after[did]["computed_at"], expires)
    for did in stored_before:  # what the killed worker stored stays as it was
        assert after[did]["computed_at"] == at_kill[did]["computed_at"]
    assert all(r["attempts"] == 1 and r["claimed_by"] is None for r in after.values()), after
    leaves = mlp_instance.recorded_leaves()
    assert sorted(leaves) == sorted(decisions)  # each explanation stored (and logged) exactly once
    assert "claim passed to another runner" not in second.text()


@BACKENDS
def test_two_workers_share_the_queue_and_store_each_explanation_once(mlp_instance: JobsInstance, tmp_path: Path) -> None:
    env = {"GATEWAY_JOBS_EXPLAIN_BATCH_SIZE": "2", "GATEWAY_JOBS_EXPLAIN_POLL_INTERVAL_S": "0.05"}
    workers = [WorkerProcess(mlp_instance, tmp_path / f"worker-{i}.log", env) for i in range(2)]
    try:
        owners = [w.wait_started() for w in workers]
        decisions = [mlp_instance.decide(FEATURES | {"duration_months": 6 + i}, 200 + i) for i in range(12)]
        wait_for(lambda: all(r["status"] == "ready" for r in mlp_instance.rows().values()), 120,
                 f"not all stored: {[w.text()[-2000:] for w in workers]}", poll=0.1)
    finally:
        assert [w.stop() for w in workers] == [0, 0], [w.text()[-2000:] for w in workers]
    assert sorted(mlp_instance.recorded_leaves()) == sorted(decisions)  # each stored exactly once
    assert all(r["attempts"] == 1 for r in mlp_instance.rows().values())
    assert [w.text().count("claim passed") for w in workers] == [0, 0]
    stored_by = [w.text().count(" stored (attempt 1)") for w in workers]
    assert sum(stored_by) == 12 and min(stored_by) >= 1, stored_by  # both worked, neither twice
    assert len(set(owners)) == 2


def _request(url: str, *, body: dict[str, Any] | None = None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={**headers, "Content-Type": "application/json"},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_serve_thread_computes_explanations(tmp_path: Path, mlp_manifest: Path) -> None:
    # Polled every 0.1 s: the explanations' own limit (which recourse shares) would answer 429 on a slow machine.
    instance = provision_mlp(tmp_path / "instance", mlp_manifest, {"GATEWAY_JOBS_EXPLAIN_POLL_INTERVAL_S": "0.1",
                                                                    "GATEWAY_RATELIMIT_EXPLANATIONS": "100000/minute"})
    server = gateway_server(instance.instance, tmp_path / "serve.log", workers=2)
    try:
        server.start(timeout=120)
        headers = {"Authorization": f"Bearer {instance.key}"}
        status, _, created = _request(f"{server.base_url}/v1/models/{MLP}/decisions",
                                      body=decision_body(FEATURES, iin=valid_iin(7)),
                                      headers={**headers, "Idempotency-Key": "serve-1"})
        assert status == 201, created
        did = json.loads(created)["decision_id"]
        url = f"{server.base_url}/v1/decisions/{did}/explanation"
        status, first_headers, _ = _request(url, headers=headers)
        assert status in (200, 202)
        if status == 202:
            assert first_headers["Retry-After"] == "2"
        wait_for(lambda: _request(url, headers=headers)[0] == 200, 300, f"not stored: {server.log_tail()}", poll=0.1)
        _, _, one = _request(url, headers=headers)
        _, _, two = _request(url, headers=headers)
        assert one == two and json.loads(one)["method"] == "permutation_shap_estimate"
        view = json.loads(_request(f"{server.base_url}/v1/decisions/{did}", headers=headers)[2])
        assert view["explanation"] == {"status": "ready", "reason": None, "attempts": 1}
        # The sample is declined by the MLP: the recourse kind (in JOBS_THREAD_KINDS by default) computes its options.
        assert view["adverse"]
        recourse_url = f"{server.base_url}/v1/decisions/{did}/recourse"
        wait_for(lambda: _request(recourse_url, headers=headers)[0] == 200, 300,
                 f"recourse not stored: {server.log_tail()}", poll=0.1)
        assert json.loads(_request(recourse_url, headers=headers)[2])["status"] == "ready"
        scraper = subprocess.run([str(GATEWAY), "keys", "create", "--role", "metrics", "--name", "scraper"],
                                 env=instance.instance.env, capture_output=True, text=True, check=True).stdout.strip()
        scrape = urllib.request.Request(f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {scraper}"})
        with urllib.request.urlopen(scrape, timeout=10) as resp:  # /metrics needs a key (issue 11)
            metrics = resp.read().decode()
        assert 'gateway_jobs{kind="explain",state="done"} 1.0' in metrics
        assert 'gateway_jobs_dead{kind="explain"} 0.0' in metrics
    finally:
        # SIGTERM lets every runner thread finish the job in hand (an explanation or a recourse search can take
        # many seconds on a loaded machine) before the workers exit.
        assert server.stop(timeout=180) == 0, server.log_tail()
        from gateway.extensions import db

        with instance.app.app_context():
            for engine in db.engines.values():  # the main database and the key store
                engine.dispose()
    log = server.log_tail(20000)
    assert "explain jobs: explainer" in log and "deliver jobs: dispatcher" in log
    assert "recourse jobs: searcher" in log
    assert instance.recorded_leaves() == [did]
