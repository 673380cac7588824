"""Cost of a /metrics scrape at 10^5 decisions: before (the figures computed on every scrape, as the endpoint
did) and after (cached, computed at most once per METRICS_MAX_AGE_S), in the same run; and decision p50
while three loops scrape, each way.

    python bench/metrics_scrape.py [--decisions 100000] [--scrapes 30] [--out bench/results/metrics_scrape.json]

Prints one JSON object. "before" calls the registry's collectors directly (what every anonymous scrape
cost until issue 11); "after" is GET /metrics through the app with a metrics key.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from prometheus_client import generate_latest

from gateway import create_app
from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from tests.conftest import SAMPLE_REQUEST, load_train_module, make_config, seed


def copy_rows(conn: Any, table: str, source_where: str, count: int, prefix: str, replace: dict[str, str]) -> None:
    """Insert `count` copies of one row of `table` with new ids (and other columns set by SQL expressions)."""
    columns = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})").all()]
    values = [replace.get(c, f"t.{c}") for c in columns]
    conn.exec_driver_sql(
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {table} t, n WHERE {source_where}"
    )


def timings(fn: Any, n: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `n` calls."""
    wall, cpu = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def decision_p50(app: Any, headers: dict[str, str], scrape: Any, n: int) -> float:
    """Median decision latency while three threads scrape in a loop (`scrape` None: no scraping)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            scrape()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(3)] if scrape else []
    for t in threads:
        t.start()
    client = app.test_client()
    latencies = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            resp = client.post("/v1/models/german-credit/decisions", json=SAMPLE_REQUEST,
                               headers={**headers, "Idempotency-Key": secrets.token_hex(8)})
            latencies.append(time.perf_counter() - started)
            assert resp.status_code == 201, resp.data
    finally:
        stop.set()
        for t in threads:
            t.join()
    return statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--loop-decisions", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    manifest = load_train_module().train(folder / "model", verbose=False)
    url = f"sqlite:///{folder / 'gateway.db'}"
    config = make_config(url, folder, METRICS_MAX_AGE_S=15.0, RATELIMIT_ENABLED=False,
                         NOTIFY_DISPATCHER_THREAD=False)
    keys = seed(create_app(config), manifest)
    app = create_app(config)
    client = app.test_client()
    agency = {"Authorization": f"Bearer {keys['agency_a']}"}
    first = client.post("/v1/models/german-credit/decisions", json=SAMPLE_REQUEST,
                        headers={**agency, "Idempotency-Key": "bench-1"}).get_json()["decision_id"]
    client.post(f"/v1/decisions/{first}/reviews", json={"point_of_view": "x", "contest_grounds": ["other"]},
                headers=agency)
    with app.app_context():
        with db.engine.begin() as conn:
            copy_rows(conn, "decisions", f"t.id = '{first}'", args.decisions - 1, "dec_b",
                      {"id": "'dec_b' || n.i"})
            copy_rows(conn, "notifications", f"t.decision_id = '{first}' AND t.kind = 'decision_notice'",
                      args.decisions - 1, "ntf_b", {"id": "'ntf_b' || n.i", "decision_id": "'dec_b' || n.i"})
            copy_rows(conn, "reviews", f"t.decision_id = '{first}'", args.decisions // 10,
                      "rev_b", {"id": "'rev_b' || n.i", "decision_id": "'dec_b' || n.i"})
        with write_transaction():
            _, scraper = create_key(name="scraper", role="metrics", body="Operations")
        counts = {t: db.session.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                  for t in ("decisions", "notifications", "reviews")}
    registry = app.extensions["gateway.metrics"]
    cache = app.extensions["gateway.metrics_cache"]
    key = {"Authorization": f"Bearer {scraper}"}
    before_wall, before_cpu = timings(lambda: generate_latest(registry), args.scrapes)
    assert client.get("/metrics", headers=key).status_code == 200  # the one computation of this interval
    computed = cache.computed
    after_wall, after_cpu = timings(lambda: client.get("/metrics", headers=key), args.scrapes)
    assert cache.computed == computed, "a cached scrape computed the figures again"
    during_timed = cache.computed - computed

    scrape_client = app.test_client()
    quiet = decision_p50(app, agency, None, args.loop_decisions)
    old_way = decision_p50(app, agency, lambda: generate_latest(registry), args.loop_decisions)
    new_way = decision_p50(app, agency, lambda: scrape_client.get("/metrics", headers=key), args.loop_decisions)
    result = {
        "benchmark": "metrics_scrape",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": counts,
        "scrape_before_uncached": {"p50_wall_ms": round(before_wall * 1000, 3), "p50_cpu_ms": round(before_cpu * 1000, 3)},
        "scrape_after_cached": {"p50_wall_ms": round(after_wall * 1000, 3), "p50_cpu_ms": round(after_cpu * 1000, 3),
                                "computations_during_timed_scrapes": during_timed,
                                "computations_during_decision_loops": cache.computed - computed},
        "speedup_p50_wall": round(before_wall / after_wall, 1) if after_wall else None,
        "decision_p50_ms": {"no_scraping": round(quiet * 1000, 2),
                            "three_loops_uncached_before": round(old_way * 1000, 2),
                            "three_loops_cached_after": round(new_way * 1000, 2)},
        "note": "in process (test client, threads share the GIL); SQLite; the same run for both",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
