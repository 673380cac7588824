"""CPU of a batch's intake and of its run, per row, in one process: for paired A/B runs against another checkout.

    .venv/bin/python bench/batch_cpu.py [--rows 3000] [--repeat 2]
    /work/main/.venv/bin/python bench/batch_cpu.py --root /work/main      # the same, with another checkout's code

The set-up of bench/batch_decisions.py (SQLite WAL synchronous=FULL, the German-credit example served as the
tests serve it). A warm-up batch, then --repeat batches of --rows rows, each submitted (`batches.submit`) and
decided (`batches.run_chunk` until done); this process's CPU time (time.process_time) for each part, per row.
CPU rather than wall time: on a machine shared with other work the wall clock follows the neighbours. Alternate
the two checkouts (A, B, A, B, ...) and compare medians. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose code is measured (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))

    import gateway
    from bench.batch_decisions import MODEL, batch_app, request
    from gateway import batches

    assert str(args.root) in gateway.__file__, f"measuring {gateway.__file__}, not {args.root}"
    n = args.rows
    with batch_app(n * (args.repeat + 1), 500) as (_app, people, _model, who, _loaded):
        intake, run = [], []
        for k in range(args.repeat + 1):
            rows = [{"idempotency_key": f"r{k}-{i}", **request(people[i % len(people)], k * n + i)} for i in range(n)]
            c0 = time.process_time()
            batch = batches.submit(who, MODEL, batches.Upload("json", rows=rows))
            c1 = time.process_time()
            while batches.run_chunk(batch.id, None) == batches.Chunk.MORE:
                pass
            c2 = time.process_time()
            if k:  # the first batch warms up (compiled code, the key store's tables)
                intake.append((c1 - c0) / n * 1e6)
                run.append((c2 - c1) / n * 1e6)
    print(json.dumps({"root": str(args.root), "rows": n, "intake_cpu_us_per_row": [round(x, 1) for x in intake],
                      "run_cpu_us_per_row": [round(x, 1) for x in run],
                      "intake_median": round(statistics.median(intake), 1), "run_median": round(statistics.median(run), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
