"""Explanation jobs: model-agnostic explanations computed by a `gateway worker` process, against the raw explainer.

    python bench/explanation_jobs.py [--jobs 60] [--paced 30] [--interval 0.4]

The model is the German-credit example's data with an MLP (tests/support/agnostic.py): only the
model-agnostic explainer (Permutation SHAP, 500 evaluations, 100 background rows) can explain it, so
every decision's explanation is a job of the ``explain`` kind. Real applications (the example's rows).

1. Throughput: --jobs decisions are recorded first (SQLite, WAL, synchronous=FULL), then one
   `gateway worker --kinds explain` process is started; jobs per second = (jobs - 1) / (last stored -
   first stored), i.e. claim + compute + fenced write + audit leaf, per worker process.
2. Latency: with the worker running, --paced decisions are recorded one every 1.5x the measured time per
   job (at least --interval seconds), below the worker's capacity; decision to stored explanation =
   computed_at - created_at, p50 / p99.
3. Baseline, same run, same rows: the raw explainer (the fitted explainers.PermutationExplainer the
   worker uses) called directly in this process, one row at a time, no database, no process.

Prints one JSON object and writes it to bench/results/explanation_jobs.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from tests.support.agnostic import TRUSTED_TYPES, TRUSTED_TYPES_ENV, train_mlp
from tests.support.gateway_server import GATEWAY, decision_body, example_rows, valid_iin

MODEL = "german-credit-mlp"


def progress(message: str) -> None:
    print(f"[explanation_jobs] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--paced", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.4)
    args = parser.parse_args()

    import shap
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from gateway import create_app, registry, runtime
    from gateway.auth import create_key
    from gateway.db import write_transaction
    from gateway.extensions import db
    from gateway.features import to_frame
    from gateway.manifest import load_manifest

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest_path = train_mlp(folder / "model")
        rows = example_rows(manifest_path)
        instance = folder / "instance"
        instance.mkdir()
        keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
        (instance / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in keys.items()))
        app = create_app({"DATABASE_URL": f"sqlite:///{instance / 'gateway.db'}", **keys, "RATELIMIT_ENABLED": False,
                          "SKOPS_TRUSTED_TYPES": TRUSTED_TYPES})
        manifest, mfolder = load_manifest(manifest_path)
        assert manifest.artifact and manifest.explanation.background
        with app.app_context():
            upgrade()
            with write_transaction():
                row, _ = registry.register(manifest, (mfolder / manifest.artifact).read_bytes(),
                                           (mfolder / manifest.explanation.background).read_bytes(), activate=True,
                                           registered_by="bench")
                model_id = row.id
            with write_transaction():
                _, key = create_key(name="bench", role="agency")
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}
        counter = iter(range(1, 1_000_000))

        def decide(features: dict[str, Any]) -> str:
            n = next(counter)
            resp = client.post(f"/v1/models/{MODEL}/decisions", json=decision_body(features, iin=valid_iin(n)),
                               headers=headers | {"Idempotency-Key": f"bench-{n}"})
            assert resp.status_code == 201, resp.get_json()
            return str(resp.get_json()["decision_id"])

        def stored(ids: list[str]) -> dict[str, tuple[Any, Any]]:
            with app.app_context():
                found = db.session.execute(
                    sa.select(sa.text("e.decision_id, d.created_at, e.computed_at, e.status"))
                    .select_from(sa.text("explanations e JOIN decisions d ON d.id = e.decision_id"))
                ).all()
                db.session.commit()
            wanted = set(ids)
            return {r[0]: (r[1], r[2]) for r in found if r[0] in wanted and r[3] == "ready"}

        def parse(value: Any) -> float:
            import datetime as dt

            when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
            return when.replace(tzinfo=dt.UTC).timestamp() if when.tzinfo is None else when.timestamp()

        # 3. Baseline first (nothing else runs): the same explainer object the worker builds, on the same rows.
        with app.app_context():
            loaded = runtime.cache().get(model_id)
            assert loaded.explanation is not None and not loaded.explanation.exact
            explainer = loaded.explanation.explainer
            frames = [to_frame(manifest, [r]) for r in rows[: args.jobs]]
            explainer.explain(frames[0])
            t0 = time.perf_counter()
            per_row = []
            for frame in frames:
                t = time.perf_counter()
                explainer.explain(frame)
                per_row.append(time.perf_counter() - t)
            raw_elapsed = time.perf_counter() - t0
        progress(f"baseline: {len(frames)} rows in {raw_elapsed:.1f} s")

        # 1. Throughput: a queue of jobs, then one worker process.
        backlog = [decide(rows[i % len(rows)]) for i in range(args.jobs)]
        env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(instance), **TRUSTED_TYPES_ENV,
               "GATEWAY_JOBS_EXPLAIN_POLL_INTERVAL_S": "0.05", "GATEWAY_NOTIFY_ROUTES": '{"email": "log"}'}
        env.pop("GATEWAY_DATABASE_URL", None)
        log_path = folder / "worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen([str(GATEWAY), "worker", "--kinds", "explain"], env=env, cwd=ROOT,
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            try:
                deadline = time.monotonic() + 600
                while len(done := stored(backlog)) < len(backlog):
                    if worker.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"worker stopped or stalled:\n{log_path.read_text()[-3000:]}")
                    time.sleep(0.2)
                finished = sorted(parse(c) for _, c in done.values())
                throughput = (len(finished) - 1) / (finished[-1] - finished[0])
                progress(f"throughput: {len(finished)} jobs, {throughput:.2f} jobs/s")

                # 2. Latency: paced decisions while the worker runs, spaced at 1.5x the measured time per job
                #    (at least --interval) so that what is measured is the path, not a queue.
                interval = max(args.interval, 1.5 / throughput)
                paced = []
                for i in range(args.paced):
                    paced.append(decide(rows[(args.jobs + i) % len(rows)]))
                    time.sleep(interval)
                while len(done := stored(paced)) < len(paced):
                    if worker.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"worker stopped or stalled:\n{log_path.read_text()[-3000:]}")
                    time.sleep(0.2)
                latencies = [parse(c) - parse(d) for d, c in done.values()]
                progress(f"latency: p50 {statistics.median(latencies) * 1000:.0f} ms")
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(60)
        with app.app_context():
            db.engine.dispose()

    raw_per_s = len(per_row) / raw_elapsed
    results = {
        "model": "German credit, MLP (16 hidden units) in a scikit-learn Pipeline; 20 raw features",
        "explainer": {"method": "permutation_shap", "max_evals": explainer.max_evals,
                      "background_rows": explainer.background_size_},
        "worker": {
            "processes": 1,
            "jobs": args.jobs,
            "jobs_per_second": round(throughput, 2),
            "ms_per_job": round(1000 / throughput, 1),
        },
        "decision_to_stored_explanation": {
            "decisions": args.paced,
            "interval_s": round(interval, 3),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "note": "computed_at - created_at; includes the worker's poll interval (50 ms) and the durable commit",
        },
        "baseline_raw_explainer": {
            "rows": len(per_row),
            "rows_per_second": round(raw_per_s, 2),
            "p50_ms": round(statistics.median(per_row) * 1000, 1),
            "p99_ms": round(percentile(per_row, 99) * 1000, 1),
        },
        "ratio_worker_vs_raw_throughput": round(throughput / raw_per_s, 3),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "shap": shap.__version__,
                    "platform": platform.platform(), "database": "SQLite, WAL, synchronous=FULL",
                    "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
    }
    text = json.dumps(results, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS / "explanation_jobs.json.tmp"
    tmp_path.write_text(text + "\n")
    tmp_path.replace(RESULTS / "explanation_jobs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
