"""Where a decision batch's time goes: intake and chunks profiled with cProfile, per row.

    python bench/profile_batch.py [--rows 5000] [--chunk 500] [--top 40]

The set-up of bench/batch_decisions.py (SQLite WAL synchronous=FULL, the German-credit example served as the
tests serve it, real applications). Intake (`batches.submit`) and the chunks (`batches.run_chunk`) are
measured once without a profiler (CPU and wall per row), then run again under cProfile on a second batch;
the report lists the functions with the most inclusive and own time, in microseconds per row.
Prints one JSON object (a tool for reading, not a result file).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.batch_decisions import MODEL, batch_app, request  # noqa: E402


def _top(stats: pstats.Stats, rows: int, key: int, top: int) -> list[dict[str, Any]]:
    entries = []
    for (path, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append({"fn": f"{Path(path).name}:{line}:{name}", "calls_per_row": round(ncalls / rows, 2),
                        "own_us_per_row": round(tottime / rows * 1e6, 1), "incl_us_per_row": round(cumtime / rows * 1e6, 1)})
    field = "own_us_per_row" if key == 0 else "incl_us_per_row"
    return sorted(entries, key=lambda e: -e[field])[:top]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()

    from gateway import batches
    from gateway.extensions import db

    with batch_app(args.rows, args.chunk) as (_app, people, _model, who, _loaded):

        def one_batch(tag: str, profile: cProfile.Profile | None) -> tuple[float, float, float, float]:
            rows = [{"idempotency_key": f"{tag}-{i}", **request(people[i % len(people)], i)}
                    for i in range(args.rows)]
            c0, w0 = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            batch = batches.submit(who, MODEL, batches.Upload("json", rows=rows))
            if profile:
                profile.disable()
            c1, w1 = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            while batches.run_chunk(batch.id, None) == batches.Chunk.MORE:
                pass
            if profile:
                profile.disable()
            c2, w2 = time.process_time(), time.perf_counter()
            return c1 - c0, w1 - w0, c2 - c1, w2 - w1

        one_batch_rows = args.rows
        args.rows = args.chunk
        one_batch("warm", None)  # compiled code and first-use costs (the key store's tables) out of the figures
        args.rows = one_batch_rows
        ic, iw, rc, rw = one_batch("plain", None)
        intake_profile, run_profile = cProfile.Profile(), cProfile.Profile()
        # Profile intake and the run separately: a second batch, each part under its own profiler.
        rows = [{"idempotency_key": f"prof-{i}", **request(people[i % len(people)], i)} for i in range(args.rows)]
        intake_profile.enable()
        batch = batches.submit(who, MODEL, batches.Upload("json", rows=rows))
        intake_profile.disable()
        run_profile.enable()
        while batches.run_chunk(batch.id, None) == batches.Chunk.MORE:
            pass
        run_profile.disable()
        db.session.remove()

    n = args.rows
    report = {
        "rows": n, "chunk": args.chunk,
        "unprofiled_us_per_row": {"intake_cpu": round(ic / n * 1e6, 1), "intake_wall": round(iw / n * 1e6, 1),
                                  "run_cpu": round(rc / n * 1e6, 1), "run_wall": round(rw / n * 1e6, 1),
                                  "decisions_per_s": round(n / (iw + rw), 1)},
        "intake_inclusive": _top(pstats.Stats(intake_profile), n, 1, args.top),
        "intake_own": _top(pstats.Stats(intake_profile), n, 0, args.top),
        "run_inclusive": _top(pstats.Stats(run_profile), n, 1, args.top),
        "run_own": _top(pstats.Stats(run_profile), n, 0, args.top),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
