"""Decision latency with the audit log on and off, in the same run (issue 15: at most +0.2 ms at p50).

    python bench/decision_log.py [--decisions 400] [--block 25]

The example model is trained and a fresh instance provisioned (SQLite, WAL, synchronous=FULL). Decisions
are posted through the app in this process (Flask test client: request parsing, scoring, the exact
explanation, the one durable transaction with its outbox rows and audit leaf), in alternating blocks:

- off: no sequencer runs — the decision path only inserts its leaf, as it always does;
- on:  the `sequence` kind of the jobs engine runs in a thread of the same process behind the request gate,
       as in `gateway serve` (default settings: poll 0.5 s, a signed checkpoint at least every 5 s): the tree
       work happens beside the decisions.

Reported: p50 / p99 of each, and the difference of the p50s. Also the CPU the log adds to each decision
before its insert (data key, its wrapping, the commitments and the leaf record's canonical JSON and hash),
measured alone, beside the p50 of a whole decision.

Prints one JSON object and writes it to bench/results/decision_log.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from gateway import create_app, runtime  # noqa: E402
from gateway.audit import leaf_values  # noqa: E402
from gateway.auditlog import store  # noqa: E402
from gateway.contacts import encrypt_contact, new_data_key  # noqa: E402
from gateway.extensions import db  # noqa: E402
from gateway.gate import RequestGate  # noqa: E402
from gateway.jobs.runner import Runner  # noqa: E402
from tests.support.gateway_server import (  # noqa: E402
    decision_body,
    example_rows,
    provision,
    train_example_model,
    valid_iin,
)

RESULTS = ROOT / "bench" / "results" / "decision_log.json"


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def leaf_work_us(row: dict[str, Any], repeats: int = 5000) -> float:
    """Median µs of what the log adds to a decision before its insert: key, wrap, commitments, leaf record."""
    key = bytes.fromhex("b2" * 32)
    contact = {"email": "person@example.kz"}
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        data_key = new_data_key(key, f"dec_{i}")
        encrypt_contact(data_key, contact)
        record = {"decision_id": f"dec_{i}", "inputs_commitment": data_key.commitment(row),
                  "contact_commitment": data_key.commitment(contact), "score": 0.5, "outcome": "approved",
                  "explanation": {"attributions_commitment": data_key.commitment(row)}}
        leaf_values("decision:recorded", f"dec_{i}", record, dt.datetime.now(dt.UTC))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=400, help="decisions per variant")
    parser.add_argument("--block", type=int, default=25, help="decisions per block; variants alternate by block")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        say("training the example model")
        manifest = train_example_model(folder / "model")
        say("provisioning the instance")
        instance = provision(folder / "gateway", manifest, client_name="bench-agency")
        rows = example_rows(manifest)
        os.environ["GATEWAY_INSTANCE_PATH"] = str(instance.folder)
        # The log's settings as `gateway serve` runs them (checkpoint at least every 5 s, poll every 0.5 s), and
        # its runner thread behind the same request gate (it appends between requests).
        app = create_app({"RATELIMIT_ENABLED": False})
        gate = RequestGate(app.wsgi_app)
        app.wsgi_app = gate  # type: ignore[method-assign]
        client = app.test_client()
        with app.app_context():
            runtime.warm(app)
        headers = {"Authorization": f"Bearer {instance.key}"}
        bodies = [decision_body(row, iin=valid_iin(i), language="kk", contact={"email": f"person{i}@example.kz"})
                  for i, row in enumerate(rows)]

        def decide(i: int) -> float:
            body = copy.deepcopy(bodies[i % len(bodies)])
            t0 = time.perf_counter()
            resp = client.post("/v1/models/german-credit/decisions", json=body,
                               headers=headers | {"Idempotency-Key": f"bench-{i}"})
            took = time.perf_counter() - t0
            assert resp.status_code == 201, resp.get_json()
            return took

        say("warming up")
        n = 0
        for _ in range(50):
            decide(n)
            n += 1
        times: dict[str, list[float]] = {"off": [], "on": []}
        runner: Runner | None = None
        blocks = (2 * args.decisions) // args.block
        for b in range(blocks):
            variant = ("off", "on")[b % 2] if (b // 2) % 2 == 0 else ("on", "off")[b % 2]  # ABBA: drift cancels
            if variant == "on" and runner is None:
                runner = Runner(app, ["sequence"], gate=gate).start()
            if variant == "off" and runner is not None:
                runner.stop(30)
                runner = None
            for _ in range(args.block):
                times[variant].append(decide(n))
                n += 1
        if runner is not None:
            runner.stop(30)
        with app.app_context():
            sequenced = store.tree_size()
            total = db.session.execute(text("SELECT count(*) FROM log_leaves")).scalar_one()
            db.engine.dispose()
        work = leaf_work_us(rows[0])
    ms = 1000.0
    off_p50, on_p50 = statistics.median(times["off"]) * ms, statistics.median(times["on"]) * ms
    result = {
        "benchmark": "decision_log", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
        "decisions_per_variant": args.decisions, "block": args.block,
        "log_off_ms": {"p50": round(off_p50, 3), "p99": round(pct(times["off"], 0.99) * ms, 3)},
        "log_on_ms": {"p50": round(on_p50, 3), "p99": round(pct(times["on"], 0.99) * ms, 3)},
        "p50_difference_ms": round(on_p50 - off_p50, 3),
        "target_ms": 0.2,
        "leaves_sequenced_during_run": sequenced, "leaves_total": total,
        "leaf_work_us_p50": round(work, 1),
        "leaf_work_share_of_decision_p50": round(work / (off_p50 * 1000.0), 4),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
