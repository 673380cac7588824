"""The floor of a durable decision, and the gateway against it, in one process and one run.

    python bench/floor.py [--decisions 300] [--rounds 3]

- ``floor``: what no durable scoring service can skip — the row as numpy (the model's verified compiled
  preprocessing of the raw values), the final estimator's ``predict_proba``, and one INSERT (id, score,
  inputs JSON, time) committed in its own SQLite file (WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE``)
  through the standard library's sqlite3. No validation, authentication, explanation, notice, audit log.
- ``service``: ``decisions.record_decision`` on the gateway's SQLite database (WAL, synchronous=FULL):
  validation, idempotency, scoring, exact explanation, one transaction with decision, explanation,
  notice row, audit leaf and idempotency record.
- ``request``: the whole request path through the Flask test client (authentication, rate limit, body
  validation, the service, the response) — no HTTP server, no socket.

The variants run interleaved, --rounds times --decisions each, on the same payloads (the example's real
applications, each a new person and key). Reported: p50 / p99 per decision and the ratios to the floor.
Prints one JSON object and writes bench/results/floor.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

import numpy as np

from tests.support.gateway_server import example_rows, train_example_model, valid_iin

MODEL = "german-credit"


def progress(message: str) -> None:
    print(f"[floor] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from flask_migrate import upgrade

    from gateway import create_app, decisions, registry, runtime
    from gateway.auth import Principal, create_key
    from gateway.db import write_transaction
    from gateway.extensions import db
    from gateway.manifest import load_manifest

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"floor": [], "service": [], "request": []}
    cpu: dict[str, float] = dict.fromkeys(times, 0.0)  # this process's CPU seconds per variant (less noisy)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest_path = train_example_model(folder / "model")
        people = example_rows(manifest_path)
        app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'gateway.db'}", "SUBJECT_KEY": "a1" * 32,
                          "CONTACT_KEY": "b2" * 32, "SECRET_KEY": "c3" * 32, "RATELIMIT_DECISIONS": "1000000/minute",
                          "RATELIMIT_PER_CALLER": "1000000/minute", "JOBS_THREAD": False})
        with app.app_context():
            upgrade()
            manifest, mfolder = load_manifest(manifest_path)
            assert manifest.artifact and manifest.explanation.background
            with write_transaction():
                model, _ = registry.register(manifest, (mfolder / manifest.artifact).read_bytes(),
                                             (mfolder / manifest.explanation.background).read_bytes(), activate=True,
                                             registered_by="bench")
                client, key = create_key(name="bench-agency", role="agency")
            who = Principal(client.id, client.name, client.body, client.role)
            loaded = runtime.cache().get(model.id)
        assert loaded.explanation is not None
        explainer: Any = loaded.explanation.explainer
        transform, estimator = explainer._fast_transform, explainer._estimator
        assert transform is not None, "the example's preprocessing compiles (the floor's numpy row)"
        names = explainer.feature_names_
        positive = explainer.class_index_

        floor_db = sqlite3.connect(folder / "floor.db", isolation_level=None, check_same_thread=False)
        floor_db.execute("PRAGMA journal_mode=WAL")
        floor_db.execute("PRAGMA synchronous=FULL")
        floor_db.execute("CREATE TABLE decisions (id TEXT PRIMARY KEY, score REAL, inputs TEXT, created_at TEXT)")

        def floor(features: dict[str, Any]) -> None:
            row = np.empty((1, len(names)), dtype=object)
            row[0] = [features[n] for n in names]
            score = float(estimator.predict_proba(transform(row))[0, positive])
            floor_db.execute("BEGIN IMMEDIATE")
            floor_db.execute("INSERT INTO decisions VALUES (?, ?, ?, ?)",
                             (secrets.token_urlsafe(16), score, json.dumps(features),
                              dt.datetime.now(dt.UTC).isoformat()))
            floor_db.execute("COMMIT")

        def body(i: int) -> dict[str, Any]:
            return {"subject": {"iin": valid_iin(i), "language": "kk", "contact": {"email": f"p{i}@example.kz"}},
                    "features": dict(people[i % len(people)]), "reference": f"application-{i}"}

        def service(i: int) -> None:
            b = body(i)
            data = decisions.DecisionInput(iin=b["subject"]["iin"], language="kk", contact=b["subject"]["contact"],
                                           features=b["features"], reference=b["reference"])
            with app.app_context():
                stored = decisions.record_decision(who, MODEL, data, idempotency_key=f"service-{i}",
                                                   request_hash=decisions.request_hash(MODEL, b))
            assert stored.status == 201

        http = app.test_client()
        auth = {"Authorization": f"Bearer {key}"}

        def request(i: int) -> None:
            resp = http.post(f"/v1/models/{MODEL}/decisions", json=body(i),
                             headers={**auth, "Idempotency-Key": f"request-{i}"})
            assert resp.status_code == 201, resp.get_json()

        variants = {"floor": lambda i: floor(people[i % len(people)]), "service": service, "request": request}
        for name, call in variants.items():  # warm every path once (imports, caches, compiled statements)
            call(9_000_000 + len(name))
        n = 0
        for round_ in range(args.rounds):
            for name, call in variants.items():
                progress(f"round {round_ + 1}: {name}")
                for _ in range(args.decisions):
                    n += 1
                    c0, t0 = time.process_time(), time.perf_counter()
                    call(n)
                    times[name].append(time.perf_counter() - t0)
                    cpu[name] += time.process_time() - c0
        floor_db.close()
        with app.app_context():
            db.engine.dispose()

    def summary(name: str) -> dict[str, float]:
        values = times[name]
        return {"p50_ms": round(statistics.median(values) * 1000, 3), "p99_ms": round(percentile(values, 99) * 1000, 3),
                "per_s_one_client": round(len(values) / sum(values), 1),
                "cpu_ms_mean": round(cpu[name] / len(values) * 1000, 3)}

    result: dict[str, Any] = {
        "benchmark": "floor",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "decisions_per_variant": args.decisions * args.rounds,
        "floor": summary("floor") | {"what": "numpy row + predict_proba + one durable sqlite3 insert"},
        "service": summary("service") | {"what": "decisions.record_decision (no HTTP)"},
        "request": summary("request") | {"what": "the whole request path through the Flask test client"},
    }
    floor_p50 = result["floor"]["p50_ms"]
    result["ratios"] = {
        "service_p50_over_floor": round(result["service"]["p50_ms"] / floor_p50, 2),
        "request_p50_over_floor": round(result["request"]["p50_ms"] / floor_p50, 2),
        "request_p50_minus_floor_ms": round(result["request"]["p50_ms"] - floor_p50, 3),
        "request_throughput_over_floor": round(result["request"]["per_s_one_client"]
                                               / result["floor"]["per_s_one_client"], 2),
        # CPU moves less than wall time on a shared machine; the fsync wait is in wall time only.
        "request_cpu_minus_floor_cpu_ms": round(result["request"]["cpu_ms_mean"] - result["floor"]["cpu_ms_mean"], 3),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "floor.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
