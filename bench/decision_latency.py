"""Decision latency and throughput of the gateway against a floor, measured in the same run.

    python bench/decision_latency.py [--rounds 3] [--latency-requests 300] [--window 8] [--clients 16]

Trains the example model and provisions one gateway instance (SQLite, WAL, synchronous=FULL) as a
template. Every measurement then starts a fresh real gunicorn server (2 sync workers, app preloaded) on a
fresh database and stops it afterwards, so no idle server's background work runs during another's turn:

- ``floor``: ``bench/floor_app.py`` (parse, the same one-row DataFrame, the same ``predict_proba``, one
  durable SQLite insert);
- ``gateway``: ``gateway serve`` as configured by default, on a copy of the template instance;
- ``gateway_without_dispatcher``: the same with ``GATEWAY_NOTIFY_DISPATCHER_THREAD=0`` (the decision path
  without the in-process notification dispatcher; ``--no-without-dispatcher`` skips it).

Per round, in alternating order: latency of one sequential client, then throughput of closed-loop
concurrent clients over a fixed window after a warm-up. Figures are medians over rounds.

Prints one JSON object to stdout and writes it to bench/results/decision_latency.json; progress goes to
stderr. Servers (their process groups) and temporary folders are removed even on error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import load
from tests.support.gateway_server import (
    DECISIONS_PATH,
    UNLIMITED_RATES,
    Instance,
    ServerProcess,
    cpu_seconds,
    decision_body,
    example_rows,
    gateway_server,
    provision,
    train_example_model,
    valid_iin,
)

RESULTS = ROOT / "bench" / "results" / "decision_latency.json"
FLOOR_APP = ROOT / "bench" / "floor_app.py"
TARGETS = {"throughput_ratio_min": 0.8, "p50_delta_ms_max": 1.0}
WORKERS = 2


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        **{name.replace("-", "_"): version(name) for name in
           ("gunicorn", "flask", "sqlalchemy", "pandas", "scikit-learn", "skops", "shap", "numpy")},
        "load_average_at_start": os.getloadavg(),
    }


def code_fingerprint() -> dict[str, Any]:
    """sha256 over the gateway's and explainers' sources: which code these figures belong to."""
    digest = hashlib.sha256()
    files = sorted(p for d in ("gateway", "explainers") for p in (ROOT / d).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {"sources_sha256": digest.hexdigest(), "files": len(files)}


def raw_predict_proba_us(model_dir: Path, row: dict[str, Any], repeats: int = 2000) -> dict[str, float]:
    """Median µs of predict_proba on one row in this process (and of building the frame plus predicting)."""
    import tomllib

    import pandas as pd
    import skops.io as sio

    with open(model_dir / "manifest.toml", "rb") as fh:
        manifest = tomllib.load(fh)
    inputs = [f for f in manifest["features"] if not f.get("monitor_only")]  # the model's inputs
    names = [f["name"] for f in inputs]
    numeric = {f["name"] for f in inputs if f["type"] == "number"}
    pipeline = sio.load(model_dir / manifest["artifact"], trusted=["sklearn.tree._tree.Tree"])

    def frame() -> Any:
        return pd.DataFrame.from_records([[float(row[n]) if n in numeric else row[n] for n in names]], columns=names)

    one = frame()
    for _ in range(100):
        pipeline.predict_proba(one)
    predict, both = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipeline.predict_proba(one)
        t1 = time.perf_counter()
        pipeline.predict_proba(frame())
        t2 = time.perf_counter()
        predict.append(t1 - t0)
        both.append(t2 - t1)
    return {"predict_proba_us": load.median(predict) * 1e6, "frame_and_predict_proba_us": load.median(both) * 1e6}


def gateway_in_process_us(instance: Instance, row: dict[str, Any], repeats: int = 1000) -> dict[str, Any]:
    """Median µs of the gateway's own scoring (and exact explanation) of one row, in this process.

    The gateway may score through its own fast path rather than the pipeline's predict_proba; this shows
    how much of the floor's cost the gateway does not pay. Internal API: reported as an error if it moved.
    """
    try:
        os.environ["GATEWAY_INSTANCE_PATH"] = str(instance.folder)
        from gateway import create_app, registry, runtime

        app = create_app()
        with app.app_context():
            runtime.warm(app)
            (model_row,) = registry.list_models(serving_only=True)
            model = runtime.cache().get(model_row.id)
            out: dict[str, Any] = {"fast_path": getattr(model, "fast", None) is not None}
            for _ in range(100):
                model.score([row])
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.score([row])
                times.append(time.perf_counter() - t0)
            out["score_us"] = round(load.median(times) * 1e6, 1)
            tools = getattr(model, "explanation", None)
            if tools is not None and getattr(tools, "exact", False):
                times = []
                for _ in range(repeats // 4):
                    t0 = time.perf_counter()
                    tools.explainer.explain([row])
                    times.append(time.perf_counter() - t0)
                out["exact_explanation_us"] = round(load.median(times) * 1e6, 1)
            from gateway.extensions import db

            db.engine.dispose()  # the template's database is copied for every measurement
            return out
    except Exception as exc:  # noqa: BLE001 - an internal API moved: say so, the benchmark goes on
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        os.environ.pop("GATEWAY_INSTANCE_PATH", None)


def wait_for_quiet(max_wait_s: float, threshold: float) -> dict[str, Any]:
    """Wait (up to max_wait_s) until the machine's CPU is at most `threshold` busy over one second."""
    started = time.monotonic()
    while True:
        b0, t0 = machine_cpu()
        time.sleep(1.0)
        b1, t1 = machine_cpu()
        busy = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        waited = time.monotonic() - started
        if busy <= threshold or waited >= max_wait_s:
            if busy > threshold:
                log(f"the machine is still {busy:.0%} busy after {waited:.0f} s; measuring anyway")
            return {"busy_before": round(busy, 3), "waited_s": round(waited, 1), "quiet": busy <= threshold}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    # user nice system idle iowait irq softirq steal (guest time is already counted in user and nice)
    parts = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    return sum(parts) - idle, sum(parts)


@dataclass
class Variant:
    """One kind of server under test: how to start a fresh one and how to talk to it."""

    name: str
    kind: str  # "floor" or "gateway"
    env: dict[str, str]
    description: str


def start_fresh(variant: Variant, ctx: Context, label: str, stack: contextlib.ExitStack) -> tuple[ServerProcess, Path]:
    """Start a fresh server of `variant` on a fresh database; return it and its database file."""
    if variant.kind == "floor":
        db_path = ctx.tmp / f"{label}.db"
        server = ServerProcess(
            argv=[sys.executable, str(FLOOR_APP), "--model", str(ctx.model_dir), "--db", str(db_path),
                  "--bind", "127.0.0.1:0", "--workers", str(WORKERS)],
            env=dict(os.environ), log_path=ctx.tmp / f"{label}.log",
        )
    else:
        # A copy of the provisioned instance (secrets, migrated database, active model, agency key) that no
        # server has touched: every measurement starts from the same fresh state.
        folder = ctx.tmp / label
        shutil.copytree(ctx.template.folder, folder)
        env = {**ctx.template.env, "GATEWAY_INSTANCE_PATH": str(folder), **variant.env}
        instance = Instance(folder=folder, env=env, key=ctx.template.key)
        server = gateway_server(instance, ctx.tmp / f"{label}.log", workers=WORKERS)
        db_path = instance.sqlite_path
    stack.callback(server.stop)
    server.start()
    return server, db_path


def request_templates(variant: Variant, ctx: Context, port: int) -> list[load.Template]:
    if variant.kind == "floor":
        return load.templates(port, "/decide", ctx.bodies)
    return load.templates(port, DECISIONS_PATH, ctx.bodies, {"Authorization": f"Bearer {ctx.template.key}"})


def check_rows(variant: Variant, db_path: Path, acknowledged: int) -> dict[str, Any]:
    """Every acknowledged request left its rows (more may exist: answers that came after a window closed)."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        decisions = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
        if variant.kind == "floor":
            return {"ok": mode == "wal" and decisions >= acknowledged, "decisions": decisions, "journal_mode": mode}
        notifications = conn.execute("SELECT count(*) FROM notifications").fetchone()[0]
        leaves = conn.execute("SELECT count(*) FROM log_leaves WHERE kind = 'decision:recorded'").fetchone()[0]
    ok = mode == "wal" and decisions >= acknowledged and notifications == decisions == leaves
    return {"ok": ok, "decisions": decisions, "notifications": notifications, "log_leaves": leaves, "journal_mode": mode}


def measure(variant: Variant, ctx: Context, args: argparse.Namespace, round_no: int) -> dict[str, Any]:
    """One round on a fresh server of `variant`: sequential latency, then closed-loop throughput."""
    label = f"r{round_no}-{variant.name}"
    quiet = wait_for_quiet(args.quiet_wait, args.quiet_threshold)
    with contextlib.ExitStack() as stack:
        server, db_path = start_fresh(variant, ctx, label, stack)
        tmpl = request_templates(variant, ctx, server.port)
        status, response = load.exchange(server.port, tmpl[0][0] + f"{label}-check".encode() + tmpl[0][1])
        if status != 201 or b'"decision_id"' not in response:
            raise RuntimeError(f"{variant.name} answered {status}: {response[:800]!r}\n{server.log_tail()}")
        _, bad = load.sequential(server.port, tmpl, args.warmup_requests, f"{label}-warm")
        latencies, bad2 = load.sequential(server.port, tmpl, args.latency_requests, f"{label}-lat")
        if bad or bad2:
            raise RuntimeError(f"{variant.name}: {bad + bad2} sequential requests not answered 201\n{server.log_tail()}")
        latencies.sort()

        samples: dict[str, Any] = {}

        def on_window(phase: str) -> None:
            samples[phase] = (sum(cpu_seconds(p) for p in server.workers()), machine_cpu(), set(server.workers()))

        result = load.closed_loop(
            server.port, tmpl, key_prefix=f"{label}-tp", clients=args.clients, processes=args.processes,
            warmup_s=args.warmup, window_s=args.window, on_window=on_window,
        )
        if result.failed or not result.completed:
            raise RuntimeError(f"{variant.name}: {result.failed} failed requests under load {result.statuses}\n"
                               f"{server.log_tail()}")
        if samples["start"][2] != samples["end"][2]:
            raise RuntimeError(f"{variant.name}: a worker was replaced during the window\n{server.log_tail()}")
        server.stop()
        acknowledged = 1 + args.warmup_requests + args.latency_requests + result.completed
        rows = check_rows(variant, db_path, acknowledged)
        if not rows["ok"]:
            raise RuntimeError(f"{variant.name}: the database does not hold what was acknowledged: {rows}")

    server_cpu = samples["end"][0] - samples["start"][0]
    busy = samples["end"][1][0] - samples["start"][1][0]
    total = samples["end"][1][1] - samples["start"][1][1]
    # CPU the rest of the machine (other users' processes) took during the window, as a share of all cores.
    others = busy / os.sysconf("SC_CLK_TCK") - server_cpu - result.generator_cpu_s
    cores = os.cpu_count() or 1
    figures = {
        "p50_ms": load.percentile(latencies, 50) * 1000,
        "p99_ms": load.percentile(latencies, 99) * 1000,
        "throughput_rps": result.rps,
        "under_load_p50_ms": result.p50_ms,
        "under_load_p99_ms": result.p99_ms,
        "server_cpu_ms_per_request": server_cpu / result.completed * 1000,
        "generator_cpu_ms_per_request": result.generator_cpu_s / result.completed * 1000,
        "machine_cpu_busy": busy / total if total else float("nan"),
        "other_processes_cpu_share": max(0.0, others) / (args.window * cores),
        "requests_in_window": result.completed,
        "rows_in_database": rows["decisions"],
        "machine_busy_before": quiet["busy_before"],
    }
    log(f"round {round_no} {variant.name}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
        f"{result.rps:.1f} req/s, server CPU {figures['server_cpu_ms_per_request']:.2f} ms/req, generator CPU "
        f"{figures['generator_cpu_ms_per_request']:.2f} ms/req, machine busy {figures['machine_cpu_busy']:.0%}, "
        f"other processes {figures['other_processes_cpu_share']:.0%}")
    return figures


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rounds[0] if k not in ("requests_in_window", "rows_in_database", "machine_busy_before")]
    out: dict[str, Any] = {k: round(load.median([r[k] for r in rounds]), 3) for k in keys}
    out["rounds"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rounds]
    return out


@dataclass
class Context:
    tmp: Path
    model_dir: Path
    template: Instance
    bodies: list[bytes]


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log("training the example model")
    manifest = train_example_model(tmp / "model")
    log("provisioning the gateway instance every gateway measurement starts from (a copy of it)")
    template = provision(tmp / "gateway-template", manifest, client_name="bench-agency", extra_env=UNLIMITED_RATES)
    rows = example_rows(manifest)
    bodies = [
        json.dumps(decision_body(row, iin=valid_iin(i), language=("kk", "ru", "en")[i % 3],
                                 contact={"email": f"person{i}@example.kz"}), ensure_ascii=False).encode()
        for i, row in enumerate(rows)
    ]
    ctx = Context(tmp, manifest.parent, template, bodies)
    variants = [
        Variant("floor", "floor", {}, "bench/floor_app.py: parse, DataFrame, predict_proba, one durable insert"),
        Variant("gateway", "gateway", {}, "`gateway serve` as configured by default (dispatcher thread in each "
                "worker; no SMTP configured, so email notices are attempted and rescheduled)"),
    ]
    if args.without_dispatcher:
        variants.append(Variant("gateway_without_dispatcher", "gateway", {"GATEWAY_NOTIFY_DISPATCHER_THREAD": "0"},
                                "`gateway serve` with GATEWAY_NOTIFY_DISPATCHER_THREAD=0: the decision path alone"))

    log("raw predict_proba in process")
    wait_for_quiet(args.quiet_wait, args.quiet_threshold)
    raw = raw_predict_proba_us(manifest.parent, rows[0])
    gateway_raw = gateway_in_process_us(template, rows[0])

    log("load generator ceiling: closed loop against the floor's no-op endpoint")
    with contextlib.ExitStack() as stack:
        floor, _ = start_fresh(variants[0], ctx, "noop", stack)
        noop = load.closed_loop(floor.port, load.get_template(floor.port, "/noop"), key_prefix="noop",
                                clients=args.clients, processes=args.processes, warmup_s=0.5, window_s=3.0)

    results: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for variant in order:
            results[variant.name].append(measure(variant, ctx, args, r))

    summary = {name: summarise(rounds) for name, rounds in results.items()}
    floor_s, gateway_s = summary["floor"], summary["gateway"]
    ratio = gateway_s["throughput_rps"] / floor_s["throughput_rps"]
    delta = gateway_s["p50_ms"] - floor_s["p50_ms"]
    per_process = args.clients // args.processes
    out: dict[str, Any] = {
        "benchmark": "decision_latency",
        "taken_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_fingerprint(),
        "setup": {
            "model": "examples/german_credit (GradientBoosting 100 trees, depth 3, in a Pipeline), skops",
            "servers": f"gunicorn, {WORKERS} sync workers each, app preloaded, on 127.0.0.1",
            "database": "SQLite per server, WAL, synchronous=FULL, writes under BEGIN IMMEDIATE",
            "gateway_env": {**UNLIMITED_RATES, "why": "the rate limiter runs but must not refuse the benchmark's load"},
            "fresh": "every measurement starts a fresh server on a fresh database and stops it afterwards",
            "variants": {v.name: v.description for v in variants},
            "rounds": args.rounds,
            "order": "variants in one order in even rounds, reversed in odd rounds",
            "latency": f"1 client, {args.warmup_requests} warm-up then {args.latency_requests} sequential requests",
            "throughput": f"{args.clients} closed-loop clients, {args.warmup:g} s warm-up, {args.window:g} s window",
            "figures": "median over rounds; server CPU = the workers' user+system time in the window / requests",
        },
        "load_generator": {
            "how": (f"raw sockets, requests pre-encoded (only the Idempotency-Key spliced in), one connection per "
                    f"request as gunicorn's sync workers close it; {args.processes} processes x {per_process} "
                    "threads for throughput, 1 thread for latency; the same code for every server"),
            "noop_ceiling_rps": round(noop.rps, 1),
            "noop_generator_cpu_ms_per_request": round(noop.generator_cpu_s / max(noop.completed, 1) * 1000, 3),
            "note": ("every process shares the machine's cores: the generator's CPU per request is reported with each "
                     "server's figures; the no-op ceiling is what gunicorn + this generator reach with no work"),
        },
        "raw_predict_proba_us": round(raw["predict_proba_us"], 1),
        "raw_frame_and_predict_proba_us": round(raw["frame_and_predict_proba_us"], 1),
        "gateway_in_process_us": gateway_raw,
        **summary,
        "throughput_ratio": round(ratio, 3),
        "p50_delta_ms": round(delta, 3),
        "targets": {
            **TARGETS,
            "throughput_ratio_met": ratio >= TARGETS["throughput_ratio_min"],
            "p50_delta_met": delta <= TARGETS["p50_delta_ms_max"],
        },
    }
    out["noise_resistant"] = {
        "note": ("on a shared machine wall-clock figures move with other processes' load. These pair each "
                 "gateway round with the floor round next to it in time, and use CPU per request, which "
                 "sets throughput on a CPU-bound machine and is less disturbed by others"),
        "gateway": paired(results["floor"], results["gateway"]),
    }
    if "gateway_without_dispatcher" in summary:
        bare = summary["gateway_without_dispatcher"]
        out["without_dispatcher"] = {
            "throughput_ratio": round(bare["throughput_rps"] / floor_s["throughput_rps"], 3),
            "p50_delta_ms": round(bare["p50_ms"] - floor_s["p50_ms"], 3),
        }
        out["noise_resistant"]["gateway_without_dispatcher"] = paired(results["floor"],
                                                                      results["gateway_without_dispatcher"])
    return out


def paired(floor: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of per-round ratios and deltas, and the ratio of CPU per request."""
    tp = [o["throughput_rps"] / f["throughput_rps"] for f, o in zip(floor, other, strict=True)]
    p50 = [o["p50_ms"] - f["p50_ms"] for f, o in zip(floor, other, strict=True)]
    cpu = [f["server_cpu_ms_per_request"] / o["server_cpu_ms_per_request"] for f, o in zip(floor, other, strict=True)]
    return {
        "throughput_ratio_median_of_rounds": round(load.median(tp), 3),
        "p50_delta_ms_median_of_rounds": round(load.median(p50), 3),
        "throughput_ratio_from_cpu_per_request": round(load.median(cpu), 3),
        "per_round": {"throughput_ratio": [round(x, 3) for x in tp], "p50_delta_ms": [round(x, 3) for x in p50],
                      "cpu_ratio": [round(x, 3) for x in cpu]},
    }


def write_result(result: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwind: the servers and temporary folders are cleaned up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-requests", type=int, default=50, help="sequential warm-up per round")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the window")
    parser.add_argument("--window", type=float, default=8.0, help="seconds of measured load")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each measurement, wait up to this many seconds for the machine to be idle")
    parser.add_argument("--quiet-threshold", type=float, default=0.2,
                        help="'idle': at most this share of all cores busy over one second")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    parser.add_argument("--without-dispatcher", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the gateway with its dispatcher thread off (default: yes)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    tmp = Path(tempfile.mkdtemp(prefix="bench-decision-"))
    try:
        result = run(args, tmp)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    write_result(result, args.output)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
