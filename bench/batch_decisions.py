"""Batch decisions: decisions per second of a decision batch, against single decisions, in the same run.

    python bench/batch_decisions.py [--rows 20000] [--chunk 500] [--singles 300] [--out FILE]

SQLite (WAL, synchronous=FULL), the German-credit example (GradientBoosting, exact TreeSHAP against its
background), real applications (the example's background rows, each a different person and key).

1. Baseline: --singles decisions through the decision service (`decisions.record_decision`: the whole
   single-decision path below HTTP — validation, scoring, exact explanation, one transaction with the
   decision, explanation, notice row, audit leaf and idempotency record), one after another.
2. Batch: the same kind of rows, --rows of them, submitted (`batches.submit`: validation of every row,
   subject references, contacts encrypted, rows stored) and decided chunk by chunk (`batches.run_chunk`,
   what the batch job kind calls): every row gets the same records, explanations stored, notices queued.
   Decisions/s = rows / (intake + run); per-chunk times are reported for the first and last tenth of the
   run (flat: their ratio stays near 1 as the tables grow). CPU time of this process per decision is
   reported too: on a shared machine it is less noisy than wall time.
3. The explainer alone (the ceiling): the exact TreeSHAP on a chunk of the same rows, three times, median;
   its share of the batch is the batch's rows at that rate over the batch's wall time.

Prints one JSON object and writes it to bench/results/batch_decisions.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from tests.support.gateway_server import example_rows, train_example_model, valid_iin
from tests.support.registration import SERVED_AS

MODEL = "german-credit"


def progress(message: str) -> None:
    print(f"[batch_decisions] {message}", file=sys.stderr, flush=True)


def request(features: dict[str, Any], i: int) -> dict[str, Any]:
    return {"subject": {"iin": valid_iin(i), "language": "kk", "contact": {"email": f"p{i}@example.kz"}},
            "features": dict(features), "reference": f"application-{i}"}


@contextlib.contextmanager
def batch_app(rows: int, chunk: int) -> Iterator[tuple[Any, list[dict[str, Any]], Any, Any, Any]]:
    """A fresh gateway app in this process (SQLite in a temporary folder, migrated) serving the example model as
    the tests serve it, with an agency key, inside its app context: (app, example rows, model row, the agency's
    principal, the loaded model). Shared with bench/profile_batch.py."""
    from flask_migrate import upgrade

    from gateway import create_app, registry, runtime
    from gateway.auth import Principal, create_key
    from gateway.db import write_transaction
    from gateway.extensions import db
    from gateway.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest_path = train_example_model(folder / "model")
        people = example_rows(manifest_path)
        app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'gateway.db'}", "SUBJECT_KEY": "a1" * 32,
                          "CONTACT_KEY": "b2" * 32, "SECRET_KEY": "c3" * 32, "BATCH_CHUNK_SIZE": chunk,
                          "BATCH_MAX_ROWS": max(rows, 1), "RATELIMIT_ENABLED": False})
        with app.app_context():
            upgrade()
            manifest, mfolder = load_manifest(manifest_path)
            # Served as the tests serve it (medium risk): every decision takes effect at once and is notified (the
            # example ships high-risk, where adverse outcomes wait for an officer and their notice with them).
            manifest = manifest.model_copy(update=SERVED_AS)
            assert manifest.artifact and manifest.explanation.background
            with write_transaction():
                model, _ = registry.register(manifest, (mfolder / manifest.artifact).read_bytes(),
                                          (mfolder / manifest.explanation.background).read_bytes(), activate=True,
                                          registered_by="bench")
                client, _ = create_key(name="bench-agency", role="agency")
            who = Principal(client.id, client.name, client.body, client.role)
            loaded = runtime.cache().get(model.id)  # loaded (explainer fitted, compiled code warm) before timing
            try:
                yield app, people, model, who, loaded
            finally:
                db.engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "batch_decisions.json",
                        help="where to write the result (a long flatness run: batch_decisions_long.json)")
    args = parser.parse_args()

    import sqlalchemy as sa

    from gateway import batches, decisions
    from gateway.extensions import db

    load_before = os.getloadavg()
    with batch_app(args.rows, args.chunk) as (_app, people, _model, who, loaded):
        # The ceiling: the exact explainer alone on chunks of the same rows (what no batch can beat).
        assert loaded.explanation is not None
        sample = [dict(people[i % len(people)]) for i in range(args.chunk)]
        ceiling_times = []
        for _ in range(3):
            c0 = time.perf_counter()
            loaded.explanation.explainer.explain(sample)
            ceiling_times.append(time.perf_counter() - c0)
        explainer_rows_per_s = args.chunk / statistics.median(ceiling_times)

        progress(f"baseline: {args.singles} single decisions through the service")
        single_times = []
        singles_cpu0 = time.process_time()
        for i in range(args.singles):
            body = request(people[i % len(people)], 10_000_000 + i)
            data = decisions.DecisionInput(iin=body["subject"]["iin"], language="kk",
                                           contact=body["subject"]["contact"], features=body["features"],
                                           reference=body["reference"])
            t0 = time.perf_counter()
            stored = decisions.record_decision(who, MODEL, data, idempotency_key=f"single-{i}",
                                               request_hash=decisions.request_hash(MODEL, body))
            single_times.append(time.perf_counter() - t0)
            assert stored.status == 201
        singles_cpu_s = time.process_time() - singles_cpu0
        singles_per_s = len(single_times) / sum(single_times)

        rows = [{"idempotency_key": f"batch-{i}", **request(people[i % len(people)], i)} for i in range(args.rows)]
        progress(f"batch: {args.rows} rows, chunks of {args.chunk}")
        cpu0, t0 = time.process_time(), time.perf_counter()
        batch = batches.submit(who, MODEL, batches.Upload("json", rows=rows))
        intake_s = time.perf_counter() - t0
        intake_cpu_s = time.process_time() - cpu0
        batch_id = batch.id
        assert batch.invalid_rows == 0, "the bench's rows must all be valid"
        chunk_times = []
        cpu1, t1 = time.process_time(), time.perf_counter()
        chunk_cpu = []
        while True:
            p0, c0 = time.process_time(), time.perf_counter()
            outcome = batches.run_chunk(batch_id, None)
            chunk_times.append(time.perf_counter() - c0)
            chunk_cpu.append(time.process_time() - p0)
            if outcome != batches.Chunk.MORE:
                break
            if len(chunk_times) % 10 == 0:
                progress(f"{len(chunk_times) * args.chunk} rows decided")
        run_s = time.perf_counter() - t1
        run_cpu_s = time.process_time() - cpu1
        assert outcome == batches.Chunk.DONE, outcome

        def count(sql: str) -> int:
            found = int(db.session.execute(sa.text(sql)).scalar_one())
            db.session.commit()
            return found

        decided = count(f"SELECT decided_rows FROM decision_batches WHERE id = '{batch_id}'")
        notices = count("SELECT count(*) FROM notifications WHERE status = 'pending'")
        ready = count("SELECT count(*) FROM explanations WHERE status = 'ready'")
        leaves = count("SELECT count(*) FROM log_leaves WHERE kind = 'decision:recorded'")
        by_status = db.session.execute(sa.text("SELECT status, count(*) FROM notifications GROUP BY status")).all()
        assert decided == args.rows and ready == args.rows + args.singles and leaves == ready and notices == ready, (
            decided, ready, leaves, notices, by_status)

    tenth = max(1, len(chunk_times) // 10)
    first, last = chunk_times[:tenth], chunk_times[-tenth - 1:-1] or chunk_times[-tenth:]  # the last may be short
    batch_per_s = args.rows / (intake_s + run_s)
    result = {
        "benchmark": "batch_decisions",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "database": "sqlite (WAL, synchronous=FULL)",
        "rows": args.rows,
        "chunk_size": args.chunk,
        "batch": {
            "decisions_per_s": round(batch_per_s, 1),
            "decisions_per_s_deciding_only": round(args.rows / run_s, 1),
            "cpu_us_per_decision": round((intake_cpu_s + run_cpu_s) / args.rows * 1e6, 1),
            "cpu_us_per_decision_intake": round(intake_cpu_s / args.rows * 1e6, 1),
            "cpu_us_per_decision_deciding": round(run_cpu_s / args.rows * 1e6, 1),
            "decisions_per_cpu_s": round(args.rows / (intake_cpu_s + run_cpu_s), 1),
            "intake_s": round(intake_s, 2),
            "run_s": round(run_s, 2),
            "chunk_ms_p50_first_tenth": round(statistics.median(first) * 1000, 1),
            "chunk_ms_p50_last_tenth": round(statistics.median(last) * 1000, 1),
            "chunk_time_last_over_first": round(statistics.median(last) / statistics.median(first), 3),
            "chunks": len(chunk_times),
            "chunk_ms_p50_by_tenth": [round(statistics.median(chunk_times[k * tenth:(k + 1) * tenth]) * 1000, 1)
                                      for k in range(min(10, len(chunk_times) // tenth))],
            "chunk_cpu_ms_p50_by_tenth": [round(statistics.median(chunk_cpu[k * tenth:(k + 1) * tenth]) * 1000, 1)
                                          for k in range(min(10, len(chunk_cpu) // tenth))],
            "explanations_stored": args.rows, "notices_queued": args.rows, "audit_leaves": args.rows,
        },
        "baseline_single_decisions": {
            "decisions": args.singles,
            "decisions_per_s": round(singles_per_s, 1),
            "p50_ms": round(statistics.median(single_times) * 1000, 2),
            "cpu_us_per_decision": round(singles_cpu_s / len(single_times) * 1e6, 1),
        },
        "baseline_explainer_only": {
            "what": "the exact TreeSHAP explainer alone on a chunk's matrix (interventional, against the model's "
                    "background): the ceiling of any batch that stores exact explanations",
            "rows_per_s": round(explainer_rows_per_s, 1),
            "us_per_row": round(1e6 / explainer_rows_per_s, 1),
            "share_of_batch_time": round(args.rows / explainer_rows_per_s / (intake_s + run_s), 3),
        },
        "batch_over_single": round(batch_per_s / singles_per_s, 2),
        "batch_over_explainer_only": round(batch_per_s / explainer_rows_per_s, 2),
        "batch_cpu_over_single_cpu": round((intake_cpu_s + run_cpu_s) / args.rows / (singles_cpu_s / len(single_times)), 3),
        "target_decisions_per_s": 2000,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
