"""CPU a `gateway worker` spends per decision on the background work, draining a backlog, and when idle.

    python bench/background_cost.py [--decisions 5000] [--rounds 2] [--baseline-gateway PATH] [--py-spy]

Provisions one instance (SQLite, WAL, synchronous=FULL), records --decisions decisions through the real
endpoint in this process (Flask test client, no background work), then parks what they left for the
background: their notices are moved into the future and their audit-log leaves into a side table.
Every measurement starts from a copy of that instance:

1. a `gateway worker` (every kind, default settings; notices routed to the ``file`` channel, so each is
   rendered as the email it would be and written) starts and settles; its CPU over --idle seconds with
   nothing to do is the idle cost;
2. the backlog is released in one transaction (the notices due now, the leaves visible, as if the
   decisions had just been committed) and the clock runs until every notice is delivered and every
   leaf sequenced (and a checkpoint covers them): the worker's CPU and wall time per decision.

With --baseline-gateway (another checkout's ``.venv/bin/gateway``, e.g. main's) the same backlog is drained
by both, alternating per round: a before/after in one run. With --py-spy, the first round of each
is sampled by py-spy (``pip install py-spy``: a tool for you, not a dependency) and the functions that
hold most samples are reported (inclusive share).

Prints one JSON object and writes it to bench/results/background_cost.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import load
from tests.support.gateway_server import (
    DECISIONS_PATH,
    GATEWAY,
    UNLIMITED_RATES,
    Instance,
    ServerProcess,
    cpu_seconds,
    decision_body,
    example_rows,
    provision,
    train_example_model,
    valid_iin,
)

RESULTS = ROOT / "bench" / "results" / "background_cost.json"
NOTICES_ENV = {"GATEWAY_NOTIFY_ROUTES": '{"email": "file"}'}
PARKED_AT = "2999-01-01 00:00:00.000000"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fill(instance: Instance, manifest: Path, decisions: int) -> None:
    """Record `decisions` decisions through the endpoint, in this process, with no background work."""
    os.environ.update({k: v for k, v in instance.env.items() if k.startswith("GATEWAY_")})
    os.environ["GATEWAY_JOBS_THREAD"] = "0"
    from gateway import create_app, runtime
    from gateway.extensions import db

    app = create_app()
    runtime.warm(app)
    client = app.test_client()
    rows = example_rows(manifest)
    bodies = [json.dumps(decision_body(r, iin=valid_iin(i), language=("kk", "ru", "en")[i % 3],
                                       contact={"email": f"person{i}@example.kz"})).encode() for i, r in enumerate(rows)]
    headers = {"Authorization": f"Bearer {instance.key}", "Content-Type": "application/json"}
    for i in range(decisions):
        r = client.post(DECISIONS_PATH, data=bodies[i % len(bodies)], headers={**headers, "Idempotency-Key": f"bg-{i}"})
        if r.status_code != 201:
            raise RuntimeError(f"decision answered {r.status_code}: {r.get_data(as_text=True)[:500]}")
        if i and i % 1000 == 0:
            log(f"{i} decisions")
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


def park(db_path: Path) -> dict[str, int]:
    """Move the notices into the future and the unsequenced leaves into a side table; return the counts."""
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE bench_notices AS SELECT id, next_attempt_at FROM notifications "
                     "WHERE status IN ('pending', 'retrying')")
        conn.execute(f"UPDATE notifications SET next_attempt_at = '{PARKED_AT}' "  # noqa: S608 - a constant
                     "WHERE id IN (SELECT id FROM bench_notices)")
        conn.execute("CREATE TABLE bench_leaves AS SELECT * FROM log_leaves WHERE seq IS NULL")
        conn.execute("DELETE FROM log_leaves WHERE seq IS NULL")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"notices": conn.execute("SELECT count(*) FROM bench_notices").fetchone()[0],
                "leaves": conn.execute("SELECT count(*) FROM bench_leaves").fetchone()[0]}


def release(db_path: Path) -> None:
    """Make the parked backlog due and visible in one transaction."""
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None, timeout=60)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE notifications SET next_attempt_at = (SELECT b.next_attempt_at FROM bench_notices b "
                     "WHERE b.id = notifications.id) WHERE id IN (SELECT id FROM bench_notices)")
        conn.execute("INSERT INTO log_leaves SELECT * FROM bench_leaves")
        conn.execute("COMMIT")


def remaining(db_path: Path) -> tuple[int, int, int]:
    """Notices not yet delivered, leaves not yet sequenced, leaves not yet covered by a checkpoint."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=60)) as conn:
        notices = conn.execute("SELECT count(*) FROM notifications WHERE status != 'delivered'").fetchone()[0]
        leaves = conn.execute("SELECT count(*) FROM log_leaves WHERE seq IS NULL").fetchone()[0]
        size = conn.execute("SELECT count(*) FROM log_leaves").fetchone()[0]
        checkpoint = conn.execute("SELECT coalesce(max(size), 0) FROM log_checkpoints").fetchone()[0]
    return notices, leaves, size - checkpoint


def wait_started(worker: ServerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        text = worker.log_tail(200_000)
        if all(f"{kind} jobs:" in text for kind in ("deliver", "sequence", "explain")) and "started" in text:
            return
        assert worker.process is not None
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`gateway worker` did not start:\n{text[-3000:]}")
        time.sleep(0.1)


def py_spy_summary(raw: Path, top: int = 40) -> dict[str, Any]:
    """Inclusive and self share of samples per function (file:function) from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for frame in stack.split(";"):
            name, _, place = frame.partition(" (")
            file = place.split(":")[0].rstrip(")")
            for marker in ("site-packages/", "wt-bgcost/", "main/"):
                if marker in file:
                    file = file.split(marker, 1)[1]
            frames.append(f"{file}:{name.strip()}")
        for f in set(frames):
            inclusive[f] += n
        if frames:
            own[frames[-1]] += n
    return {"samples": total,
            "inclusive": {f: round(n / total, 3) for f, n in inclusive.most_common(top)} if total else {},
            "self": {f: round(n / total, 3) for f, n in own.most_common(top)} if total else {}}


def measure(label: str, gateway: Path, template: Instance, tmp: Path, counts: dict[str, int], args: argparse.Namespace,
            spy: bool) -> dict[str, Any]:
    folder = tmp / label
    shutil.copytree(template.folder, folder)
    env = {**template.env, "GATEWAY_INSTANCE_PATH": str(folder), **NOTICES_ENV,
           "GATEWAY_NOTIFY_FILE_DIR": str(folder / "notices")}
    db_path = folder / "gateway.db"
    worker = ServerProcess(argv=[str(gateway), "worker"], env=env, log_path=tmp / f"{label}.log")
    spy_proc = None
    try:
        worker.launch()
        wait_started(worker)
        time.sleep(2.0)  # the first polls (and their imports) are not idle cost
        c0, w0 = cpu_seconds(worker.pid), time.monotonic()
        time.sleep(args.idle)
        c1, w1 = cpu_seconds(worker.pid), time.monotonic()
        idle_cpu_ms_per_s = (c1 - c0) / (w1 - w0) * 1000
        if spy:
            spy_out = tmp / f"{label}.spy.txt"
            spy_proc = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(worker.pid), "--rate", "250", "--format",
                                         "raw", "--output", str(spy_out), "--nonblocking"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        c0, w0 = cpu_seconds(worker.pid), time.monotonic()
        release(db_path)
        while True:
            notices, leaves, unchecked = remaining(db_path)
            if not notices and not leaves and not unchecked:
                break
            if time.monotonic() - w0 > args.timeout:
                raise RuntimeError(f"{label}: not drained after {args.timeout} s ({notices} notices, {leaves} leaves, "
                                   f"{unchecked} not under a checkpoint)\n{worker.log_tail()}")
            time.sleep(0.05)
        c1, w1 = cpu_seconds(worker.pid), time.monotonic()
        profile = None
        if spy_proc is not None:
            spy_proc.send_signal(2)
            spy_proc.wait(30)
            profile = py_spy_summary(tmp / f"{label}.spy.txt")
        n = counts["notices"]
        return {
            "decisions": n,
            "drain_wall_s": round(w1 - w0, 2),
            "drain_cpu_s": round(c1 - c0, 2),
            "cpu_ms_per_decision": round((c1 - c0) / n * 1000, 3),
            "decisions_per_s": round(n / (w1 - w0), 1),
            "idle_cpu_ms_per_s": round(idle_cpu_ms_per_s, 2),
            "load_average_1min": os.getloadavg()[0],
            **({"py_spy": profile} if profile else {}),
        }
    finally:
        if spy_proc is not None and spy_proc.poll() is None:
            spy_proc.kill()
            spy_proc.wait(10)
        worker.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle worker measured")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a drain may take")
    parser.add_argument("--baseline-gateway", type=Path, default=None,
                        help="another checkout's `gateway` executable, drained against the same backlog")
    parser.add_argument("--py-spy", action="store_true", help="sample the first round of each with py-spy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-background-"))
    started_load = os.getloadavg()
    try:
        log("training and provisioning")
        manifest = train_example_model(tmp / "model")
        template = provision(tmp / "template", manifest, client_name="bench-agency", extra_env=UNLIMITED_RATES)
        log(f"recording {args.decisions} decisions")
        fill(template, manifest, args.decisions)
        counts = park(template.folder / "gateway.db")
        log(f"backlog: {counts}")
        gateways = {"this": GATEWAY}
        if args.baseline_gateway:
            gateways["baseline"] = args.baseline_gateway.resolve()
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in gateways}
        for r in range(args.rounds):
            order = list(gateways.items()) if r % 2 == 0 else list(gateways.items())[::-1]
            for name, gateway in order:
                log(f"round {r + 1}: {name}")
                results[name].append(measure(f"{name}-{r}", gateway, template, tmp, counts, args, args.py_spy and r < 2))
                log(f"  {json.dumps({k: v for k, v in results[name][-1].items() if k != 'py_spy'})}")
        summary = {}
        for name, rounds in results.items():
            summary[name] = {key: load.median([x[key] for x in rounds]) for key in
                             ("cpu_ms_per_decision", "decisions_per_s", "drain_wall_s", "idle_cpu_ms_per_s")}
            summary[name]["rounds"] = rounds
        out: dict[str, Any] = {
            "benchmark": "background_cost",
            "taken_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cores": os.cpu_count(),
            "load_average": {"start": [round(x, 2) for x in started_load],
                             "end": [round(x, 2) for x in os.getloadavg()]},
            "setup": {"backlog": counts, "worker": "`gateway worker`, every kind, default settings",
                      "channel": "file (GATEWAY_NOTIFY_ROUTES={\"email\": \"file\"})",
                      "database": "SQLite, WAL, synchronous=FULL", "rounds": args.rounds,
                      "figures": "median over rounds; CPU = user+system of the worker process"},
            **summary,
        }
        if "baseline" in summary:
            out["ratio_cpu_per_decision_this_to_baseline"] = round(
                summary["this"]["cpu_ms_per_decision"] / summary["baseline"]["cpu_ms_per_decision"], 3)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
