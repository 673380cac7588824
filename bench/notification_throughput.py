"""Notification delivery throughput, and the decision path's latency with the dispatcher on and off, in one run.

    python bench/notification_throughput.py [--decisions 200] [--rows 1000] [--rounds 2] [--latency-requests 300]

1. Throughput: notices delivered per second to a local webhook receiver (a threaded http.server in a
   process of its own that verifies every Standard Webhooks signature) by `gateway worker` processes with their
   default settings: 1 worker on SQLite, 1 and 4 workers on PostgreSQL (when GATEWAY_TEST_POSTGRES_URL is
   set or a server answers on 127.0.0.1:5432). The outbox is filled first (decisions recorded through
   the real endpoint, their rows copied up to --rows), parked in the future; the workers start; the
   clock runs from releasing every row until the database shows them all delivered.
2. Latency: one sequential client posting decisions (each with a webhook contact, so the dispatcher has a
   notice to deliver for every decision) to `gateway serve` (2 workers, SQLite) with the dispatcher thread
   on (the default) and off (GATEWAY_NOTIFY_DISPATCHER_THREAD=0), alternating per round.

Prints one JSON object and writes it to bench/results/notification_throughput.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import runpy
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import load
from tests.notifications.processes import Worker, provision_instance
from tests.support.gateway_server import (
    DECISIONS_PATH,
    UNLIMITED_RATES,
    Instance,
    cpu_seconds,
    decision_body,
    example_rows,
    gateway_server,
    train_example_model,
    valid_iin,
)

RESULTS = ROOT / "bench" / "results" / "notification_throughput.json"
SECRET = "whsec_" + "YmVuY2htYXJrIGFnZW5jeSB3ZWJob29rIHNpZ25pbmcga2V5"  # base64 of 36 bytes
AGENCY = "bench-agency"
ENV = {
    "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "1",
    "GATEWAY_WEBHOOK_SECRETS": json.dumps({AGENCY: SECRET}),
    **UNLIMITED_RATES,
}
PARKED = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


class ReceiverProcess:
    """tests/notifications/receiver.py in a process of its own (not competing for this process's GIL)."""

    def __init__(self, secret: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.notifications.receiver", secret], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the receiver did not start: {self.url!r}")

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            found: dict[str, int] = json.loads(response.read())
            return found

    def accepted(self) -> int:
        return self.stats()["accepted"]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "load_average_at_start": os.getloadavg()}


def postgres_admin_url() -> str | None:
    url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if url:
        return url
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=2):
        return "postgresql://postgres@127.0.0.1:5432/test"
    return None


def database_url(instance: Instance) -> str:
    return instance.database_url or f"sqlite:///{instance.sqlite_path}"


def engine_for(instance: Instance) -> Any:
    import sqlalchemy as sa

    from gateway.config import normalise_database_url

    return sa.create_engine(normalise_database_url(database_url(instance)))


def fill(instance: Instance, manifest: Path, receiver_url: str, decisions: int, rows: int) -> None:
    """Record `decisions` decisions through the endpoint (in this process), copy their rows up to `rows`, park all."""
    import sqlalchemy as sa

    from gateway import create_app
    from gateway.extensions import db
    from gateway.ids import new_id

    stored = runpy.run_path(str(instance.folder / "config.py"))
    app = create_app({"DATABASE_URL": database_url(instance), "RATELIMIT_ENABLED": False,
                      "WEBHOOK_ALLOW_PRIVATE": True,  # the receiver listens on http://127.0.0.1 (as ENV allows)
                      **{k: stored[k] for k in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}})
    client = app.test_client()
    features = example_rows(manifest)
    headers = {"Authorization": f"Bearer {instance.key}"}
    for i in range(decisions):
        body = decision_body(features[i % len(features)], iin=valid_iin(i), language=("kk", "ru", "en")[i % 3],
                             contact={"webhook": receiver_url})
        resp = client.post(DECISIONS_PATH, json=body, headers={**headers, "Idempotency-Key": f"fill-{i}"})
        if resp.status_code != 201:
            raise RuntimeError(f"decision {i}: {resp.status_code} {resp.get_data(as_text=True)[:500]}")
    with app.app_context():
        table = db.metadata.tables["notifications"]
        originals = [dict(r._mapping) for r in db.session.execute(sa.select(table)).all()]
        copies = [{**originals[i % len(originals)], "id": new_id("ntf")} for i in range(rows - len(originals))]
        if copies:
            db.session.execute(sa.insert(table), copies)
        db.session.execute(sa.update(table).values(next_attempt_at=PARKED))
        db.session.commit()
        db.engine.dispose()


def release_all(engine: Any) -> float:
    """Make every row due now (as new); return the monotonic time of the commit."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE notifications SET status = 'pending', attempts = 0, delivered_at = NULL, last_error = NULL, "
            "claimed_by = NULL, lease_expires_at = NULL, next_attempt_at = :now"), {"now": dt.datetime.now(dt.UTC)})
    return time.monotonic()


def park_all(engine: Any) -> None:
    """Put every row out of the dispatchers' reach (due in 2100)."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET next_attempt_at = :parked, status = 'pending', "
                             "claimed_by = NULL, lease_expires_at = NULL"), {"parked": PARKED})


def delivered(engine: Any) -> int:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM notifications WHERE status = 'delivered'")).scalar_one())


def throughput(label: str, instance: Instance, workers: int, rows: int, receiver: ReceiverProcess, tmp: Path,
               timeout_s: float = 600) -> dict[str, Any]:
    """Start `workers` dispatcher processes, release every row, time until all are delivered."""
    engine = engine_for(instance)
    slots = [Worker(i, instance.env, tmp / f"{label}-{uuid.uuid4().hex[:6]}") for i in range(workers)]
    for slot in slots:
        slot.folder.mkdir(parents=True)
    try:
        park_all(engine)
        for slot in slots:
            slot.start()
        for slot in slots:
            slot.wait_started()
        accepted_before = receiver.accepted()
        cpu_before = sum(cpu_seconds(slot.process.pid) for slot in slots if slot.process)
        started = release_all(engine)
        deadline = started + timeout_s
        while (done := delivered(engine)) < rows:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: only {done} of {rows} delivered within {timeout_s:.0f} s")
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(slot.process.pid) for slot in slots if slot.process) - cpu_before
        for slot in slots:
            slot.signal(signal.SIGTERM)
        codes = [slot.wait(30) for slot in slots]
        if codes != [0] * workers:
            raise RuntimeError(f"{label}: workers exited {codes}")
        accepted = receiver.accepted() - accepted_before
    finally:
        for slot in slots:
            slot.kill_group()
        engine.dispose()
    result = {"rows": rows, "seconds": round(elapsed, 3), "per_second": round(rows / elapsed, 1),
              "worker_cpu_ms_per_notice": round(cpu / rows * 1000, 2), "received": accepted,
              "duplicates": accepted - rows}
    log(f"{label}: {rows} notices in {elapsed:.2f} s = {rows / elapsed:.1f}/s, worker CPU "
        f"{cpu / rows * 1000:.2f} ms/notice ({accepted - rows} duplicates)")
    return result


def latency(instance: Instance, manifest: Path, receiver: ReceiverProcess, thread: bool, requests: int, tmp: Path,
            label: str) -> dict[str, Any]:
    """Sequential decisions against `gateway serve` (2 workers) with the dispatcher thread on or off."""
    env = {**instance.env, "GATEWAY_NOTIFY_DISPATCHER_THREAD": "1" if thread else "0"}
    engine = engine_for(instance)
    park_all(engine)  # what earlier runs left undelivered is not this run's work
    engine.dispose()
    server = gateway_server(dataclasses.replace(instance, env=env), tmp / f"{label}.log", workers=2)
    features = example_rows(manifest)
    bodies = [json.dumps(decision_body(features[i % len(features)], iin=valid_iin(i), language=("kk", "ru", "en")[i % 3],
                                       contact={"webhook": receiver.url})).encode() for i in range(50)]
    try:
        server.start()
        tmpl = load.templates(server.port, DECISIONS_PATH, bodies, {"Authorization": f"Bearer {instance.key}"})
        _, bad = load.sequential(server.port, tmpl, 30, f"{label}-warm")
        accepted_before = receiver.accepted()
        times, bad2 = load.sequential(server.port, tmpl, requests, f"{label}-lat")
        if bad or bad2:
            raise RuntimeError(f"{label}: {bad + bad2} requests not answered 201\n{server.log_tail()}")
        time.sleep(1.5)  # let the thread finish what the last requests left
        delivered_during = receiver.accepted() - accepted_before
    finally:
        server.stop()
    times.sort()
    result = {"p50_ms": round(load.percentile(times, 50) * 1000, 2), "p99_ms": round(load.percentile(times, 99) * 1000, 2),
              "mean_ms": round(sum(times) / len(times) * 1000, 2), "requests": requests,
              "notices_delivered_meanwhile": delivered_during}
    log(f"{label}: thread {'on ' if thread else 'off'} p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"{delivered_during} notices delivered meanwhile")
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(load.median([r[key] for r in runs]), 2)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log("training the example model")
    manifest = train_example_model(tmp / "model")
    receiver = ReceiverProcess(SECRET)
    pg_admin = postgres_admin_url()
    pg_database = None
    out: dict[str, Any] = {"benchmark": "notification_throughput", "machine": machine(),
                           "settings": {"decisions": args.decisions, "rows": args.rows, "rounds": args.rounds,
                                        "latency_requests": args.latency_requests,
                                        "worker": "gateway worker, default batch 20 / poll 0.5 s / lease 120 s",
                                        "receiver": "threaded http.server in a process of its own, verifies "
                                                    "every signature with standardwebhooks"}}
    try:
        log("provisioning SQLite")
        sqlite = provision_instance(tmp / "sqlite", manifest, agency=AGENCY, env=ENV)
        fill(sqlite, manifest, receiver.url, args.decisions, args.rows)
        setups: list[tuple[str, Instance, int]] = [("sqlite-1", sqlite, 1)]
        if pg_admin:
            import sqlalchemy as sa

            from gateway.config import normalise_database_url

            admin = sa.make_url(normalise_database_url(pg_admin))
            pg_database = f"gw_bench_{uuid.uuid4().hex[:10]}"
            engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{pg_database}"')
            engine.dispose()
            log("provisioning PostgreSQL")
            pg = provision_instance(tmp / "pg", manifest, admin.set(database=pg_database).render_as_string(False),
                                    agency=AGENCY, env=ENV)
            fill(pg, manifest, receiver.url, args.decisions, args.rows)
            setups += [("postgres-1", pg, 1), ("postgres-4", pg, 4)]
        else:
            out["postgres"] = "skipped: GATEWAY_TEST_POSTGRES_URL is not set and nothing answers on 127.0.0.1:5432"

        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in setups}
        for round_no in range(args.rounds):
            order = setups if round_no % 2 == 0 else list(reversed(setups))
            for name, instance, workers in order:
                runs[name].append(throughput(f"r{round_no}-{name}", instance, workers, args.rows, receiver, tmp))
        out["throughput_notices_per_second"] = {
            name: {"median": median_of(rs, "per_second"), "runs": rs} for name, rs in runs.items()}

        lat: dict[str, list[dict[str, Any]]] = {"thread_on": [], "thread_off": []}
        for round_no in range(args.rounds):
            for thread in ((True, False) if round_no % 2 == 0 else (False, True)):
                key = "thread_on" if thread else "thread_off"
                lat[key].append(latency(sqlite, manifest, receiver, thread, args.latency_requests, tmp,
                                        f"r{round_no}-{key}"))
        out["decision_latency_sqlite"] = {
            key: {"p50_ms": median_of(rs, "p50_ms"), "p99_ms": median_of(rs, "p99_ms"), "runs": rs}
            for key, rs in lat.items()}
        on, off = out["decision_latency_sqlite"]["thread_on"], out["decision_latency_sqlite"]["thread_off"]
        out["decision_latency_sqlite"]["p50_delta_ms"] = round(on["p50_ms"] - off["p50_ms"], 2)
        out["decision_latency_sqlite"]["p99_delta_ms"] = round(on["p99_ms"] - off["p99_ms"], 2)
        out["receiver"] = receiver.stats()
        out["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        receiver.stop()
        if pg_database and pg_admin:
            import sqlalchemy as sa

            from gateway.config import normalise_database_url

            engine = sa.create_engine(sa.make_url(normalise_database_url(pg_admin)), isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{pg_database}" WITH (FORCE)')
            engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=200, help="decisions recorded through the endpoint")
    parser.add_argument("--rows", type=int, default=1000, help="outbox rows per throughput run (copies of theirs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as folder:
        result = run(args, Path(folder))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
