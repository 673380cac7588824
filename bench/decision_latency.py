"""Decision latency and throughput of the gateway against a floor and a model server, in the same run.

    python bench/decision_latency.py [--rounds 3] [--latency-requests 300] [--window 8] [--clients 16]

Trains the example model and provisions one gateway instance (SQLite, WAL, synchronous=FULL) as a
template. Every measurement then starts a fresh real server on a fresh database and stops it afterwards,
so no idle server's background work runs during another's turn:

- ``floor``: ``bench/floor_app.py`` under gunicorn (parse, the model's row built by hand as numpy, the
  final estimator's ``predict_proba``, one durable SQLite insert);
- ``gateway``: ``gateway serve`` as configured by default (the jobs engine's thread, in one worker,
  delivers the notices and sequences the audit log), on a copy of the template instance;
- ``gateway_without_jobs_thread``: the same with ``GATEWAY_JOBS_THREAD=0``: the decision path alone (no
  background work anywhere: notices wait, the log is not sequenced);
- ``gateway_separate_worker``: ``GATEWAY_JOBS_THREAD=0`` plus one ``gateway worker`` process on the same
  database, which does that background work outside the serving processes;
- ``mlserver``: a real MLServer 1.7.1 (its own virtualenv, built from tests/peers/mlserver.txt like the
  tests' one when missing) serving the same fitted pipeline with its scikit-learn runtime, default
  settings, the same applications as OIP v2 inference requests; it records nothing.

Notices go to the ``file`` channel (``GATEWAY_NOTIFY_ROUTES={"email": "file"}``): each is rendered as the
email it would be and written, so delivery is real work (with no SMTP server configured an email notice
would only be attempted once and postponed).

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

import pytest

from bench import floor_app, load
from tests.remote.conftest import PeerServer, free_port, peer_venv
from tests.support.gateway_server import (
    DECISIONS_PATH,
    GATEWAY,
    UNLIMITED_RATES,
    Instance,
    ServerProcess,
    child_pids,
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
# Issue 17's targets, against the floor measured in the same run.
TARGETS = {"gateway_throughput_ratio_min": 0.6, "separate_worker_throughput_ratio_min": 0.8, "p50_delta_ms_max": 2.0}
WORKERS = 2
MLSERVER_MODEL = "credit"
# Notices are delivered for real: rendered as the email they would be and written to a folder.
NOTICES_ENV = {"GATEWAY_NOTIFY_ROUTES": '{"email": "file"}'}


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
    }


def code_fingerprint() -> dict[str, Any]:
    """sha256 over the gateway's and explainers' sources: which code these figures belong to."""
    digest = hashlib.sha256()
    files = sorted(p for d in ("gateway", "explainers") for p in (ROOT / d).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {"sources_sha256": digest.hexdigest(), "files": len(files)}


def raw_predict_proba_us(model_dir: Path, row: dict[str, Any], repeats: int = 2000) -> dict[str, float]:
    """Median µs, in this process, of the floor's scoring of one row (the row built by hand as numpy, the final
    estimator's predict_proba) and of the former floor's (a one-row DataFrame through the pipeline)."""
    import tomllib

    import pandas as pd
    import skops.io as sio

    with open(model_dir / "manifest.toml", "rb") as fh:
        manifest = tomllib.load(fh)
    inputs = [f for f in manifest["features"] if not f.get("monitor_only")]  # the model's inputs
    names = [f["name"] for f in inputs]
    numeric = {f["name"] for f in inputs if f["type"] == "number"}
    pipeline = sio.load(model_dir / manifest["artifact"], trusted=floor_app.TRUSTED_TYPES)
    build = floor_app.hand_built_row(pipeline, names, numeric, None)
    estimator = pipeline[-1]

    def frame() -> Any:
        return pd.DataFrame.from_records([[float(row[n]) if n in numeric else row[n] for n in names]], columns=names)

    one = frame()
    for _ in range(100):
        pipeline.predict_proba(one)
        estimator.predict_proba(build(row))
    numpy_row, predict, both = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        estimator.predict_proba(build(row))
        t1 = time.perf_counter()
        pipeline.predict_proba(one)
        t2 = time.perf_counter()
        pipeline.predict_proba(frame())
        t3 = time.perf_counter()
        numpy_row.append(t1 - t0)
        predict.append(t2 - t1)
        both.append(t3 - t2)
    return {"raw_numpy_row_and_predict_proba_us": load.median(numpy_row) * 1e6,
            "raw_pipeline_predict_proba_us": load.median(predict) * 1e6,
            "raw_frame_and_pipeline_predict_proba_us": load.median(both) * 1e6}


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
    kind: str  # "floor", "gateway" or "mlserver"
    env: dict[str, str]
    description: str
    separate_worker: bool = False  # a `gateway worker` process runs beside the server
    workers: int = 2  # gunicorn sync workers (WORKERS)


@dataclass
class Running:
    """A started server: its port, the processes whose CPU is its cost, its database."""

    port: int
    serving_pid: int  # the root of the serving process tree (gunicorn's master, MLServer's main process)
    worker_pid: int | None = None  # a separate `gateway worker`
    db_path: Path | None = None
    gunicorn: ServerProcess | None = None

    def serving_pids(self) -> list[int]:
        return process_tree(self.serving_pid)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the serving processes and by the separate worker."""
        serving = sum(cpu_seconds(p) for p in self.serving_pids())
        return serving, (cpu_seconds(self.worker_pid) if self.worker_pid else 0.0)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(child_pids(current))
    return out


class PipelineMLServer(PeerServer):
    """MLServer with its scikit-learn runtime serving one joblib pipeline as model `credit`, settings left at
    MLServer's defaults but for the addresses (and `parallel_workers` when given)."""

    def __init__(self, venv: Path, folder: Path, model_path: Path, parallel_workers: int | None) -> None:
        super().__init__("mlserver", venv, folder, free_port(), f"/v2/models/{MLSERVER_MODEL}/ready")
        (folder / MLSERVER_MODEL).mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {"http_port": self.port, "grpc_port": free_port(), "metrics_port": free_port(),
                                    "host": "127.0.0.1"}
        if parallel_workers is not None:
            settings["parallel_workers"] = parallel_workers
        (folder / "settings.json").write_text(json.dumps(settings))
        (folder / MLSERVER_MODEL / "model-settings.json").write_text(json.dumps({
            "name": MLSERVER_MODEL, "implementation": "mlserver_sklearn.SKLearnModel", "platform": "sklearn",
            "versions": ["v1"], "parameters": {"uri": str(model_path), "version": "v1"}}))

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "mlserver"), "start", "."]


def start_fresh(variant: Variant, ctx: Context, label: str, stack: contextlib.ExitStack) -> Running:
    """Start a fresh server of `variant` (on a fresh database); it is stopped when `stack` closes."""
    if variant.kind == "mlserver":
        assert ctx.mlserver is not None
        folder = ctx.tmp / label
        peer = PipelineMLServer(ctx.mlserver.venv, folder, ctx.mlserver.model_path, ctx.mlserver.parallel_workers)
        stack.callback(peer.stop)
        try:
            peer.start()
        except pytest.fail.Exception as exc:  # PeerServer reports as the tests do
            raise RuntimeError(f"MLServer did not start: {exc}") from None
        assert peer.process is not None
        return Running(port=peer.port, serving_pid=peer.process.pid)
    if variant.kind == "floor":
        db_path = ctx.tmp / f"{label}.db"
        server = ServerProcess(
            argv=[sys.executable, str(FLOOR_APP), "--model", str(ctx.model_dir), "--db", str(db_path),
                  "--bind", "127.0.0.1:0", "--workers", str(variant.workers)],
            env=dict(os.environ), log_path=ctx.tmp / f"{label}.log",
        )
        stack.callback(server.stop)
        server.start()
        return Running(port=server.port, serving_pid=server.pid, db_path=db_path, gunicorn=server)
    # A copy of the provisioned instance (secrets, migrated database, active model, agency key) that no
    # server has touched: every measurement starts from the same fresh state.
    folder = ctx.tmp / label
    shutil.copytree(ctx.template.folder, folder)
    env = {**ctx.template.env, "GATEWAY_INSTANCE_PATH": str(folder), **NOTICES_ENV,
           "GATEWAY_NOTIFY_FILE_DIR": str(folder / "notices"), **variant.env}
    instance = Instance(folder=folder, env=env, key=ctx.template.key)
    server = gateway_server(instance, ctx.tmp / f"{label}.log", workers=variant.workers)
    stack.callback(server.stop)
    server.start()
    running = Running(port=server.port, serving_pid=server.pid, db_path=instance.sqlite_path, gunicorn=server)
    if variant.separate_worker:
        worker = ServerProcess(argv=[str(GATEWAY), "worker"], env=env, log_path=ctx.tmp / f"{label}-worker.log")
        stack.callback(worker.stop)
        worker.launch()
        wait_for_worker(worker)
        running.worker_pid = worker.pid
    return running


def wait_for_worker(worker: ServerProcess, timeout: float = 90) -> None:
    """Wait until the `gateway worker` runs its deliver and sequence kinds (it logs each kind's start)."""
    deadline = time.monotonic() + timeout
    while True:
        text = worker.log_tail(100_000)
        if all(f"{kind} jobs:" in text and "started" in text for kind in ("deliver", "sequence")):
            return
        assert worker.process is not None
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`gateway worker` did not start its jobs:\n{text[-3000:]}")
        time.sleep(0.1)


def request_templates(variant: Variant, ctx: Context, port: int) -> list[load.Template]:
    if variant.kind == "floor":
        return load.templates(port, "/decide", ctx.bodies)
    if variant.kind == "mlserver":
        return load.templates(port, f"/v2/models/{MLSERVER_MODEL}/infer", ctx.infer_bodies)
    return load.templates(port, DECISIONS_PATH, ctx.bodies, {"Authorization": f"Bearer {ctx.template.key}"})


def check_answer(variant: Variant, ctx: Context, status: int, response: bytes) -> str | None:
    """What is wrong with the answer to the first application (None: right status, and the floor's and
    MLServer's probability is the pipeline's own)."""
    if variant.kind == "mlserver":
        if status != 200:
            return f"status {status}"
        body = json.loads(response.split(b"\r\n\r\n", 1)[1])
        output = next(o for o in body["outputs"] if o["name"] == "predict_proba")
        score = output["data"][ctx.positive_index]  # shape [1, classes], row-major
    else:
        if status != 201 or b'"decision_id"' not in response:
            return f"status {status}"
        if variant.kind != "floor":
            return None
        score = json.loads(response.split(b"\r\n\r\n", 1)[1])["score"]
    if abs(score - ctx.first_score) > 1e-9:
        return f"probability {score}, the pipeline's is {ctx.first_score}"
    return None


def database_counts(variant: Variant, db_path: Path) -> dict[str, Any]:
    """What the database holds: decisions, and for the gateway its notices and audit leaves by state."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)) as conn:
        counts: dict[str, Any] = {
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "decisions": conn.execute("SELECT count(*) FROM decisions").fetchone()[0],
        }
        if variant.kind == "floor":
            return counts
        counts["notifications"] = conn.execute("SELECT count(*) FROM notifications").fetchone()[0]
        counts["notifications_by_status"] = dict(
            conn.execute("SELECT status, count(*) FROM notifications GROUP BY status").fetchall())
        counts["log_leaves"] = conn.execute(
            "SELECT count(*) FROM log_leaves WHERE kind = 'decision:recorded'").fetchone()[0]
        counts["log_leaves_sequenced"] = conn.execute(
            "SELECT count(*) FROM log_leaves WHERE seq IS NOT NULL").fetchone()[0]
        counts["log_leaves_all"] = conn.execute("SELECT count(*) FROM log_leaves").fetchone()[0]
    return counts


def check_rows(variant: Variant, counts: dict[str, Any], acknowledged: int) -> bool:
    """Every acknowledged request left its rows (more may exist: answers that came after a window closed);
    the gateway's decision, notice and audit leaf are committed together."""
    ok = counts["journal_mode"] == "wal" and counts["decisions"] >= acknowledged
    if variant.kind == "gateway":
        ok = ok and counts["notifications"] == counts["decisions"] == counts["log_leaves"]
    return bool(ok)


def measure(variant: Variant, ctx: Context, args: argparse.Namespace, round_no: int) -> dict[str, Any]:
    """One round on a fresh server of `variant`: sequential latency, then closed-loop throughput."""
    label = f"r{round_no}-{variant.name}"
    quiet = wait_for_quiet(args.quiet_wait, args.quiet_threshold)
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        running = start_fresh(variant, ctx, label, stack)
        tmpl = request_templates(variant, ctx, running.port)
        status, response = load.exchange(running.port, tmpl[0][0] + f"{label}-check".encode() + tmpl[0][1])
        wrong = check_answer(variant, ctx, status, response)
        if wrong:
            raise RuntimeError(f"{variant.name} answered wrongly ({wrong}): {response[:800]!r}")
        _, bad = load.sequential(running.port, tmpl, args.warmup_requests, f"{label}-warm")
        latencies, bad2 = load.sequential(running.port, tmpl, args.latency_requests, f"{label}-lat")
        if bad or bad2:
            raise RuntimeError(f"{variant.name}: {bad + bad2} sequential requests not answered 2xx")
        latencies.sort()

        samples: dict[str, Any] = {}

        def on_window(phase: str) -> None:
            workers = set(running.gunicorn.workers()) if running.gunicorn else set(running.serving_pids())
            samples[phase] = (running.cpu(), machine_cpu(), workers)

        result = load.closed_loop(
            running.port, tmpl, key_prefix=f"{label}-tp", clients=args.clients, processes=args.processes,
            warmup_s=args.warmup, window_s=args.window, on_window=on_window,
        )
        if result.failed or not result.completed:
            raise RuntimeError(f"{variant.name}: {result.failed} failed requests under load {result.statuses}")
        if samples["start"][2] != samples["end"][2]:
            raise RuntimeError(f"{variant.name}: a server process was replaced during the window")
        # What the background work had done when the load stopped (read before the servers stop).
        backlog = database_counts(variant, running.db_path) if variant.kind == "gateway" and running.db_path else None
        stack.close()  # stop the server (and worker): the database is final
        rows: dict[str, Any] = {}
        if running.db_path is not None:
            acknowledged = 1 + args.warmup_requests + args.latency_requests + result.completed
            rows = database_counts(variant, running.db_path)
            if not check_rows(variant, rows, acknowledged):
                raise RuntimeError(f"{variant.name}: the database does not hold what was acknowledged: {rows}")

    (serving0, worker0), (serving1, worker1) = samples["start"][0], samples["end"][0]
    serving_cpu, worker_cpu = serving1 - serving0, worker1 - worker0
    busy = samples["end"][1][0] - samples["start"][1][0]
    total = samples["end"][1][1] - samples["start"][1][1]
    # CPU the rest of the machine (other users' processes) took during the window, as a share of all cores.
    others = busy / os.sysconf("SC_CLK_TCK") - serving_cpu - worker_cpu - result.generator_cpu_s
    cores = os.cpu_count() or 1
    figures: dict[str, Any] = {
        "p50_ms": load.percentile(latencies, 50) * 1000,
        "p99_ms": load.percentile(latencies, 99) * 1000,
        "throughput_rps": result.rps,
        "under_load_p50_ms": result.p50_ms,
        "under_load_p99_ms": result.p99_ms,
        "server_cpu_ms_per_request": (serving_cpu + worker_cpu) / result.completed * 1000,
        "generator_cpu_ms_per_request": result.generator_cpu_s / result.completed * 1000,
        "machine_cpu_busy": busy / total if total else float("nan"),
        "other_processes_cpu_share": max(0.0, others) / (args.window * cores),
        "requests_in_window": result.completed,
        "machine_busy_before": quiet["busy_before"],
        "load_average_1min": load_before,
    }
    if variant.separate_worker:
        figures["serving_cpu_ms_per_request"] = serving_cpu / result.completed * 1000
        figures["worker_cpu_ms_per_request"] = worker_cpu / result.completed * 1000
    if rows:
        figures["rows_in_database"] = rows["decisions"]
    if backlog is not None:
        by_status = backlog["notifications_by_status"]
        figures["at_window_end"] = {
            "notices": backlog["notifications"],
            "notices_delivered": by_status.get("sent", 0) + by_status.get("delivered", 0),
            "notices_by_status": by_status,
            "log_leaves": backlog["log_leaves_all"],
            "log_leaves_sequenced": backlog["log_leaves_sequenced"],
        }
    log(f"round {round_no} {variant.name}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
        f"{result.rps:.1f} req/s, server CPU {figures['server_cpu_ms_per_request']:.2f} ms/req, generator CPU "
        f"{figures['generator_cpu_ms_per_request']:.2f} ms/req, machine busy {figures['machine_cpu_busy']:.0%}, "
        f"other processes {figures['other_processes_cpu_share']:.0%}"
        + (f", at window end {figures['at_window_end']}" if backlog is not None else ""))
    return figures


SUMMARY_SKIP = ("requests_in_window", "rows_in_database", "machine_busy_before", "at_window_end")


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rounds[0] if k not in SUMMARY_SKIP]
    out: dict[str, Any] = {k: round(load.median([r[k] for r in rounds]), 3) for k in keys}
    out["rounds"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rounds]
    return out


@dataclass
class MLServerSetup:
    venv: Path
    model_path: Path  # the fitted pipeline, saved with joblib for MLServer's scikit-learn runtime
    parallel_workers: int | None


@dataclass
class Context:
    tmp: Path
    model_dir: Path
    template: Instance
    bodies: list[bytes]
    infer_bodies: list[bytes]
    first_score: float  # the pipeline's probability of the positive class for the first application
    positive_index: int
    mlserver: MLServerSetup | None


def infer_body(row: dict[str, Any], names: list[str], numeric: set[str]) -> dict[str, Any]:
    """The OIP v2 inference request for one application, as the gateway's oip_v2 adapter builds it: one input
    per raw feature ([1, 1]; FP64 numbers, BYTES strings), the pandas content type, predict_proba asked for."""
    inputs = []
    for name in names:
        if name in numeric:
            inputs.append({"name": name, "shape": [1, 1], "datatype": "FP64", "data": [float(row[name])]})
        else:
            inputs.append({"name": name, "shape": [1, 1], "datatype": "BYTES", "data": [str(row[name])],
                           "parameters": {"content_type": "str"}})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": [{"name": "predict_proba"}]}


def prepare_mlserver(args: argparse.Namespace, tmp: Path, pipeline: Any) -> tuple[MLServerSetup | None, str | None]:
    """MLServer's virtualenv (built now from tests/peers/mlserver.txt when missing, as the tests build it) and
    the pipeline saved for it; or None and why not."""
    if not args.mlserver:
        return None, "--no-mlserver"
    import joblib

    log("MLServer's virtualenv (built from tests/peers/mlserver.txt when missing: minutes)")
    try:
        venv = peer_venv("mlserver")
    except pytest.skip.Exception as exc:
        return None, str(exc)
    model_path = tmp / "mlserver-model" / "model.joblib"
    model_path.parent.mkdir(parents=True)
    joblib.dump(pipeline, model_path)
    return MLServerSetup(venv, model_path, args.mlserver_parallel_workers), None


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import tomllib

    import pandas as pd
    import skops.io as sio

    load_at_start = os.getloadavg()
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
    with open(manifest, "rb") as fh:
        spec = tomllib.load(fh)
    inputs = [f for f in spec["features"] if not f.get("monitor_only")]
    names = [f["name"] for f in inputs]
    numeric = {f["name"] for f in inputs if f["type"] == "number"}
    pipeline = sio.load(manifest.parent / spec["artifact"], trusted=floor_app.TRUSTED_TYPES)
    positive_index = list(pipeline.classes_).index(spec["policy"]["positive_class"])
    first = pd.DataFrame.from_records([[float(rows[0][n]) if n in numeric else rows[0][n] for n in names]],
                                      columns=names)
    first_score = float(pipeline.predict_proba(first)[0, positive_index])
    infer_bodies = [json.dumps(infer_body(row, names, numeric)).encode() for row in rows]
    mlserver, mlserver_skipped = prepare_mlserver(args, tmp, pipeline)
    ctx = Context(tmp, manifest.parent, template, bodies, infer_bodies, first_score, positive_index, mlserver)

    variants = [
        Variant("floor", "floor", {}, "bench/floor_app.py: parse, the row built by hand as numpy, the estimator's "
                "predict_proba, one durable insert"),
        Variant("gateway", "gateway", {}, "`gateway serve` as configured by default: the jobs engine's thread in "
                "one worker (GATEWAY_JOBS_THREAD_WORKERS=1) delivers the notices and sequences the audit log"),
    ]
    if args.without_jobs_thread:
        variants.append(Variant("gateway_without_jobs_thread", "gateway", {"GATEWAY_JOBS_THREAD": "0"},
                                "`gateway serve` with GATEWAY_JOBS_THREAD=0 and no worker: the decision path alone "
                                "(notices wait, the log is not sequenced)"))
    if args.separate_worker:
        variants.append(Variant("gateway_separate_worker", "gateway", {"GATEWAY_JOBS_THREAD": "0"},
                                "`gateway serve` with GATEWAY_JOBS_THREAD=0 plus one `gateway worker` process on "
                                "the same database (all job kinds); its CPU is counted with the server's",
                                separate_worker=True))
    for spec in args.extra:
        name, _, assignments = spec.partition(":")
        env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
        separate = env.pop("SEPARATE_WORKER", "") == "1"
        workers = int(env.pop("WORKERS", WORKERS))
        kind = "floor" if env.pop("FLOOR", "") == "1" else "gateway"
        variants.append(Variant(name, kind, env, f"`{'floor' if kind == 'floor' else 'gateway serve'}` with {env}, "
                                f"{workers} workers (an experiment: --extra)", separate_worker=separate, workers=workers))
    if mlserver is not None:
        settings = ("default settings" if mlserver.parallel_workers is None
                    else f"parallel_workers={mlserver.parallel_workers}")
        variants.append(Variant("mlserver", "mlserver", {}, f"MLServer 1.7.1 + mlserver-sklearn, {settings}, "
                                "serving the same fitted pipeline (joblib) as model `credit`: POST "
                                f"/v2/models/{MLSERVER_MODEL}/infer, predict_proba; records nothing"))

    log("raw predict_proba in process")
    wait_for_quiet(args.quiet_wait, args.quiet_threshold)
    raw = raw_predict_proba_us(manifest.parent, rows[0])
    gateway_raw = gateway_in_process_us(template, rows[0])

    log("load generator ceiling: closed loop against the floor's no-op endpoint")
    with contextlib.ExitStack() as stack:
        floor = start_fresh(variants[0], ctx, "noop", stack)
        noop = load.closed_loop(floor.port, load.get_template(floor.port, "/noop"), key_prefix="noop",
                                clients=args.clients, processes=args.processes, warmup_s=0.5, window_s=3.0)

    results: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for variant in order:
            results[variant.name].append(measure(variant, ctx, args, r))

    summary = {name: summarise(rounds) for name, rounds in results.items()}
    floor_s = summary["floor"]
    per_process = args.clients // args.processes
    load_at_end = os.getloadavg()
    out: dict[str, Any] = {
        "benchmark": "decision_latency",
        "taken_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": {"start": [round(x, 2) for x in load_at_start], "end": [round(x, 2) for x in load_at_end],
                         "per_round_1min": {name: [round(r["load_average_1min"], 2) for r in rounds]
                                            for name, rounds in results.items()}},
        "code": code_fingerprint(),
        "setup": {
            "model": "examples/german_credit (GradientBoosting 100 trees, depth 3, in a Pipeline), skops",
            "servers": (f"floor and gateway: gunicorn, {WORKERS} sync workers each, app preloaded; MLServer: its own "
                        "server (uvicorn); all on 127.0.0.1"),
            "database": "SQLite per server, WAL, synchronous=FULL, writes under BEGIN IMMEDIATE",
            "gateway_env": {**UNLIMITED_RATES, **NOTICES_ENV, "GATEWAY_NOTIFY_FILE_DIR": "<instance>/notices",
                            "why": "the rate limiter runs but must not refuse the benchmark's load; notices are "
                                   "rendered as emails and written (delivered), not attempted and postponed"},
            "fresh": "every measurement starts a fresh server on a fresh database and stops it afterwards",
            "variants": {v.name: v.description for v in variants},
            "skipped": {"mlserver": mlserver_skipped} if mlserver_skipped else {},
            "rounds": args.rounds,
            "order": "variants in one order in even rounds, reversed in odd rounds",
            "latency": f"1 client, {args.warmup_requests} warm-up then {args.latency_requests} sequential requests",
            "throughput": f"{args.clients} closed-loop clients, {args.warmup:g} s warm-up, {args.window:g} s window",
            "figures": ("median over rounds; server CPU = user+system time of the server's process tree (and of the "
                        "separate `gateway worker`) in the window / requests answered in it"),
        },
        "load_generator": {
            "how": (f"raw sockets, requests pre-encoded (only the Idempotency-Key spliced in), one connection per "
                    f"request (Connection: close); {args.processes} processes x {per_process} "
                    "threads for throughput, 1 thread for latency; the same code for every server"),
            "noop_ceiling_rps": round(noop.rps, 1),
            "noop_generator_cpu_ms_per_request": round(noop.generator_cpu_s / max(noop.completed, 1) * 1000, 3),
            "note": ("every process shares the machine's cores: the generator's CPU per request is reported with each "
                     "server's figures; the no-op ceiling is what gunicorn + this generator reach with no work"),
        },
        **{k: round(v, 1) for k, v in raw.items()},
        "gateway_in_process_us": gateway_raw,
        **summary,
    }
    ratios: dict[str, Any] = {}
    for name in [n for n in summary if n != "floor"]:  # every variant measured, --extra ones included
        if name in summary:
            ratios[f"{name}_to_floor_throughput"] = ratio(summary[name]["throughput_rps"], floor_s["throughput_rps"])
            ratios[f"{name}_p50_minus_floor_p50_ms"] = round(summary[name]["p50_ms"] - floor_s["p50_ms"], 3)
            ratios[f"floor_to_{name}_cpu_per_request"] = ratio(floor_s["server_cpu_ms_per_request"],
                                                               summary[name]["server_cpu_ms_per_request"])
    if "mlserver" in summary:
        ml = summary["mlserver"]
        for name in ("gateway", "gateway_without_jobs_thread", "gateway_separate_worker"):
            if name in summary:
                ratios[f"{name}_to_mlserver_throughput"] = ratio(summary[name]["throughput_rps"], ml["throughput_rps"])
                ratios[f"{name}_p50_to_mlserver_p50"] = ratio(summary[name]["p50_ms"], ml["p50_ms"])
    out["ratios"] = ratios
    met: dict[str, bool | None] = {
        "gateway_throughput": ratios["gateway_to_floor_throughput"] >= TARGETS["gateway_throughput_ratio_min"],
        "gateway_p50": ratios["gateway_p50_minus_floor_p50_ms"] <= TARGETS["p50_delta_ms_max"],
        "separate_worker_throughput": (
            ratios["gateway_separate_worker_to_floor_throughput"] >= TARGETS["separate_worker_throughput_ratio_min"]
            if "gateway_separate_worker_to_floor_throughput" in ratios else None),
    }
    out["targets"] = {
        **TARGETS,
        "what": ("issue 17: 16-client throughput, default configuration >= 0.6x the floor, background work in a "
                 "separate `gateway worker` >= 0.8x; 1-client p50 <= floor p50 + 2 ms (default configuration)"),
        "met": met,
        "all_met": all(v is True for v in met.values()),
    }
    out["noise_resistant"] = {
        "note": ("on a shared machine wall-clock figures move with other processes' load. These pair each "
                 "round with the floor round next to it in time, and use CPU per request, which "
                 "sets throughput on a CPU-bound machine and is less disturbed by others"),
        **{name: paired(results["floor"], results[name]) for name in results if name != "floor"},
    }
    return out


def paired(floor: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of per-round ratios and deltas, and the ratio of CPU per request."""
    tp = [ratio(o["throughput_rps"], f["throughput_rps"]) for f, o in zip(floor, other, strict=True)]
    p50 = [o["p50_ms"] - f["p50_ms"] for f, o in zip(floor, other, strict=True)]
    cpu = [ratio(f["server_cpu_ms_per_request"], o["server_cpu_ms_per_request"]) for f, o in zip(floor, other, strict=True)]
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
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each measurement, wait up to this many seconds for the machine to be idle")
    parser.add_argument("--quiet-threshold", type=float, default=0.2,
                        help="'idle': at most this share of all cores busy over one second")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    parser.add_argument("--without-jobs-thread", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the gateway with its jobs thread off and no worker (default: yes)")
    parser.add_argument("--separate-worker", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the gateway with its jobs thread off and one `gateway worker` (default: yes)")
    parser.add_argument("--mlserver", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure MLServer 1.7.1 serving the same pipeline (default: yes; its virtualenv is "
                             "built under GATEWAY_TEST_PEERS_DIR or .cache/peers when missing)")
    parser.add_argument("--mlserver-parallel-workers", type=int, default=None,
                        help="MLServer's parallel_workers (default: MLServer's own default)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="also measure a gateway variant with this environment (repeatable; SEPARATE_WORKER=1 "
                             "adds a `gateway worker`, WORKERS=N sets gunicorn's workers (default 2), FLOOR=1 "
                             "measures the floor instead), e.g. switch:PYTHONPATH=/tmp/site")
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
