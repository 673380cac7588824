"""The auditors' export: streamed CSV and Parquet at 10^5 decisions, time and peak Python memory.

    python bench/audit_export.py [--rows N]

In process (Flask test client, SQLite WAL synchronous=FULL, the example model): N copies of a real decision,
an auditor signed in with a one-time link, GET /audit/export.csv and /audit/export.parquet read chunk by
chunk as a browser would. Each export also records its reads in the access log (N access events), as in
production. Baseline measured in the same run: the same rows read in one query and written as one CSV text
(what an export that holds every row would do). Peak memory is tracemalloc's (Python allocations), measured
in a second pass so the timings are not slowed by it. Prints one JSON object and writes
bench/results/audit_export.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import io
import json
import os
import platform
import re
import secrets
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def _train(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("train", ROOT / "examples" / "german_credit" / "train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.train(folder, verbose=False)
    return path


def _measure(fn: Any) -> tuple[float, float, Any]:
    """(seconds, peak MiB of Python allocations, result): timed alone, then again under tracemalloc."""
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return round(seconds, 3), round(peak / 2**20, 2), result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    import sqlalchemy as sa
    from flask_migrate import upgrade

    from gateway import create_app, officials, registry
    from gateway.auth import create_key
    from gateway.db import write_transaction
    from gateway.extensions import db
    from gateway.manifest import load_manifest
    from gateway.models import Decision, table
    from gateway.records import EXPORT_COLUMNS

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest_path = _train(folder / "model")
        config = {"DATABASE_URL": f"sqlite:///{folder / 'bench.db'}", "PUBLIC_BASE_URL": "https://gateway.bench",
                  "SUBJECT_KEY": secrets.token_hex(32), "CONTACT_KEY": secrets.token_hex(32),
                  "SECRET_KEY": secrets.token_hex(32), "RATELIMIT_ENABLED": False, "NOTIFY_DISPATCHER_THREAD": False,
                  "JOBS_THREAD": False}
        app = create_app(config)
        with app.app_context():
            upgrade()
            manifest, mfolder = load_manifest(manifest_path)
            assert manifest.artifact and manifest.explanation.background
            with write_transaction():
                registry.register(manifest, (mfolder / manifest.artifact).read_bytes(),
                                  (mfolder / manifest.explanation.background).read_bytes(), activate=True,
                                  registered_by="bench")
            with write_transaction():
                _, key = create_key(name="bench-agency", role="agency")
                auditor, _ = create_key(name="bench-auditor", role="auditor")
                link = officials.sign_in_path(officials.issue_link(auditor))
        client = app.test_client()
        sample = json.loads((ROOT / "examples" / "german_credit" / "sample_request.json").read_text())
        did = client.post("/v1/models/german-credit/decisions", json=sample,
                          headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "bench-1"}).get_json()["decision_id"]
        decisions = table(Decision)
        with app.app_context():
            row = dict(db.session.execute(sa.select(decisions).where(decisions.c.id == did)).mappings().one())
            start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
            for first in range(0, args.rows - 1, 10_000):
                batch = [dict(row, id=f"dec_bench{i:07d}", created_at=start + dt.timedelta(seconds=i), score=i / args.rows)
                         for i in range(first, min(first + 10_000, args.rows - 1))]
                db.session.execute(sa.insert(decisions), batch)
                db.session.commit()
        browser = app.test_client()
        page = browser.get(link).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        assert browser.post(link, data={"csrf_token": token.group(1)}).status_code == 303

        def export(kind: str) -> tuple[int, int]:
            resp = browser.get(f"/audit/export.{kind}")
            assert resp.status_code == 200
            size = chunks = 0
            for chunk in resp.response:  # as the server hands it to the client, chunk by chunk
                size += len(chunk)
                chunks += 1
            resp.close()
            return size, chunks

        def all_at_once() -> int:
            with app.app_context():
                rows = [dict(r) for r in db.session.execute(sa.select(decisions).order_by(
                    decisions.c.created_at.desc(), decisions.c.id.desc())).mappings()]
                out = io.StringIO()
                writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, extrasaction="ignore", lineterminator="\n")
                writer.writeheader()
                writer.writerows({**r, "decision_id": r["id"], "reviewed": False, "overturned": False} for r in rows)
                return len(out.getvalue())

        csv_s, csv_mib, (csv_bytes, csv_chunks) = _measure(lambda: export("csv"))
        pq_s, pq_mib, (pq_bytes, pq_chunks) = _measure(lambda: export("parquet"))
        base_s, base_mib, base_bytes = _measure(all_at_once)

    result = {
        "rows": args.rows,
        "csv_streamed": {"seconds": csv_s, "rows_per_s": round(args.rows / csv_s), "peak_python_mib": csv_mib,
                         "bytes": csv_bytes, "chunks": csv_chunks},
        "parquet_streamed": {"seconds": pq_s, "rows_per_s": round(args.rows / pq_s), "peak_python_mib": pq_mib,
                             "bytes": pq_bytes, "chunks": pq_chunks},
        "baseline_all_rows_in_memory_csv": {"seconds": base_s, "peak_python_mib": base_mib, "bytes": base_bytes},
        "note": "in-process; each streamed export also writes one access event per row (the baseline writes none); "
                "peak memory is Python allocations under tracemalloc; 2 shared cores: compare within the run",
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audit_export.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
