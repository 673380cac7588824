"""The audit log: sequencer throughput, and proof latency in a tree of 10^6 leaves, with baselines.

    python bench/audit_log.py [--leaves 1000000] [--sequence 20000]

1. Sequencer: --sequence leaf rows are inserted unsequenced (as decisions write them), then the
   `sequence` kind appends them in its batches (index, nodes, one signed checkpoint), SQLite WAL
   synchronous=FULL: leaves per second. Baseline, same run: hashing the same leaves into the tree in
   memory (merkle.CompactTree), no database — what the sequencer would cost if storage were free.
2. Proofs: a tree of --leaves leaves is stored (nodes written in bulk, the way the sequencer stores them),
   then inclusion proofs for random leaves and consistency proofs between random sizes are read through
   gateway.auditlog.store (the code behind /v1/log/proof/*): p50 / p99 per proof. Baseline: the same
   proofs from the nodes held in a dict in memory.

Prints one JSON object and writes it to bench/results/audit_log.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from gateway import create_app  # noqa: E402
from gateway.audit import leaf_values  # noqa: E402
from gateway.auditlog import merkle, store  # noqa: E402
from gateway.auditlog.sequencer import SequenceKind  # noqa: E402
from gateway.db import write_transaction  # noqa: E402
from gateway.extensions import db  # noqa: E402
from gateway.models import LogLeaf, LogNode, table  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "audit_log.json"
SECRETS = {"SUBJECT_KEY": "a1" * 32, "CONTACT_KEY": "b2" * 32, "SECRET_KEY": "c3" * 32}


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def app_on(path: Path) -> Any:
    from flask_migrate import upgrade

    app = create_app({"DATABASE_URL": f"sqlite:///{path}", "PUBLIC_BASE_URL": "https://gateway.bench",
                      "LOG_CHECKPOINT_INTERVAL_S": 0.0, **SECRETS})
    with app.app_context():
        upgrade()
    return app


def leaves(n: int, start: int = 0) -> list[dict[str, Any]]:
    at = dt.datetime.now(dt.UTC)
    return [leaf_values("decision:recorded", f"dec_{i}", {"decision_id": f"dec_{i}", "n": i}, at)
            for i in range(start, start + n)]


def bench_sequencer(folder: Path, n: int) -> dict[str, Any]:
    app = app_on(folder / "sequence.db")
    rows = leaves(n)
    with app.app_context(), write_transaction() as session:
        session.execute(insert(table(LogLeaf)), rows)
    kind = SequenceKind(app, settings=SequenceKind.read_settings(app.config))
    started = time.perf_counter()
    done = 0
    while (k := kind.run_once()) > 0:
        done += k
    took = time.perf_counter() - started
    hashes = [bytes.fromhex(r["leaf_hash"]) for r in rows]
    started = time.perf_counter()
    tree = merkle.CompactTree()
    for h in hashes:
        tree.append(h)
    memory = time.perf_counter() - started
    with app.app_context():
        assert store.tree_size() == n and store.latest_checkpoint().root == tree.root()
    return {"leaves": done, "seconds": round(took, 3), "leaves_per_s": round(done / took),
            "baseline_in_memory_leaves_per_s": round(n / memory), "ratio_to_in_memory": round(memory / took, 3)}


def bench_proofs(folder: Path, n: int, samples: int) -> dict[str, Any]:
    app = app_on(folder / "proofs.db")
    rng = random.Random(20260711)
    tree = merkle.CompactTree()
    nodes: dict[tuple[int, int], bytes] = {}
    say(f"building a tree of {n} leaves")
    with app.app_context():
        batch: list[dict[str, Any]] = []
        for i in range(n):
            for level, index, h in tree.append(merkle.leaf_hash(i.to_bytes(8, "big"))):
                nodes[level, index] = h
                batch.append({"level": level, "idx": index, "hash": h})
            if len(batch) >= 50_000:
                with write_transaction() as session:
                    session.execute(insert(table(LogNode)), batch)
                batch = []
        with write_transaction() as session:
            if batch:
                session.execute(insert(table(LogNode)), batch)
            # The tree's size is the highest sequenced index + 1: one leaf row at the end stands for them all.
            session.execute(insert(table(LogLeaf)), leaves(1, n - 1)[0] | {"seq": n - 1})
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        say("proofs")
        inc_db, inc_mem, con_db, con_mem = [], [], [], []
        for _ in range(samples):
            index, size = rng.randrange(n), n
            t = time.perf_counter()
            proof = store.inclusion(index, size)["proof"]
            inc_db.append(time.perf_counter() - t)
            t = time.perf_counter()
            expected = merkle.inclusion_proof(lambda lv, ix: nodes[lv, ix], index, size)
            inc_mem.append(time.perf_counter() - t)
            assert proof == [p.hex() for p in expected]
            first = rng.randrange(1, n)
            t = time.perf_counter()
            store.consistency(first, n)
            con_db.append(time.perf_counter() - t)
            t = time.perf_counter()
            merkle.consistency_proof(lambda lv, ix: nodes[lv, ix], first, n)
            con_mem.append(time.perf_counter() - t)
            db.session.commit()
    ms = 1000.0
    return {
        "leaves": n, "samples": samples,
        "inclusion_ms": {"p50": round(statistics.median(inc_db) * ms, 3), "p99": round(pct(inc_db, 0.99) * ms, 3)},
        "consistency_ms": {"p50": round(statistics.median(con_db) * ms, 3), "p99": round(pct(con_db, 0.99) * ms, 3)},
        "baseline_in_memory_inclusion_ms_p50": round(statistics.median(inc_mem) * ms, 4),
        "baseline_in_memory_consistency_ms_p50": round(statistics.median(con_mem) * ms, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--sequence", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        say(f"sequencing {args.sequence} leaves")
        sequencer = bench_sequencer(folder, args.sequence)
        proofs = bench_proofs(folder, args.leaves, args.samples)
    result = {
        "benchmark": "audit_log", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
        "sequencer": sequencer, "proofs": proofs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
