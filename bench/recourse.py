"""Cost of recourse per adverse decision of the German credit example, as the gateway computes it.

    python bench/recourse.py [--rows N]   (default: every adverse row of the data)

CPU time of this process (time.process_time: the machine is shared, wall time measures the neighbours). In
process, the example model registered in a temporary SQLite instance (WAL, synchronous=FULL) with the
manifest's own recourse metadata (features.toml: steps of 6 months and 500 DM, age never offered). For
each of the first N adverse applications of the data, in the same run:

- ``recourse``: ``gateway.recourse.compute`` - the search and the verification of every option with the
  loaded model version (its verified fast scorer) - and the row's digest (``recourse.row_values``), i.e. what
  an adverse decision of a cheap model adds;
- baseline ``decision_compute``: what the decision computes without recourse (score with the same loaded
  model + the exact explanation, ``decisions.score_and_explain`` minus recourse);
- ``decision_post_adverse``: the whole POST /v1/models/german-credit/decisions of the same application
  (validation, score, explanation, recourse, one durable transaction), and ``decision_post_favourable``
  for favourable applications (no recourse), both through the Flask test client.

Prints one JSON object and writes bench/results/recourse.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def _train_module() -> Any:
    spec = importlib.util.spec_from_file_location("train", ROOT / "examples" / "german_credit" / "train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(times_s: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times_s)
    return {"p50_ms": round(statistics.median(ms), 3), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=230)  # the example's data has 230 adverse rows
    args = parser.parse_args()

    from flask_migrate import upgrade

    from gateway import create_app, explanations, recourse, registry, runtime
    from gateway.auth import create_key
    from gateway.contacts import commitment
    from gateway.db import write_transaction
    from gateway.ids import utcnow
    from gateway.manifest import load_manifest

    train = _train_module()
    X, _ = train.load_data()
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in X.to_dict("records")]
    sample = json.loads((ROOT / "examples" / "german_credit" / "sample_request.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest_path = train.train(folder / "model", verbose=False)
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
                model_row, _ = registry.register(manifest, (mfolder / manifest.artifact).read_bytes(),
                                              (mfolder / manifest.explanation.background).read_bytes(),
                                              activate=True, registered_by="bench")
                _, key = create_key(name="bench", role="agency")
            loaded = runtime.cache().get(model_row.id)
            assert recourse.cheap(loaded), "the example model is explained exactly, so recourse is computed inline"
            scores = loaded.score(records)
            adverse = [r for r, s in zip(records, scores, strict=True) if loaded.manifest.policy.decide(float(s))[1]]
            favourable = [r for r, s in zip(records, scores, strict=True) if not loaded.manifest.policy.decide(float(s))[1]]
            adverse, favourable = adverse[: args.rows], favourable[: args.rows]
            recourse.compute(loaded, adverse[0])  # warm
            data_key = secrets.token_bytes(32)

            def commit(value: Any) -> str:
                return commitment(data_key, value)

            t_recourse, t_base, counts = [], [], []
            for row in adverse:
                t0 = time.process_time()
                score = float(loaded.score([row])[0])
                explanations.values_for_decision(loaded.explanation, row, score, utcnow())
                t1 = time.process_time()
                values = recourse.row_values("bench", recourse.compute(loaded, row, score), commit)
                t2 = time.process_time()
                t_base.append(t1 - t0)
                t_recourse.append(t2 - t1)
                counts.append(len(values["options"]))

        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}

        def post(rows: list[dict[str, Any]], tag: str) -> list[float]:
            times = []
            for i, row in enumerate(rows):
                body = {**sample, "features": row}
                t0 = time.process_time()
                resp = client.post("/v1/models/german-credit/decisions", json=body,
                                   headers={**headers, "Idempotency-Key": f"{tag}-{i}"})
                times.append(time.process_time() - t0)
                assert resp.status_code == 201, resp.get_json()
            return times

        post(favourable[:3], "warm")
        t_post_adverse = post(adverse, "adverse")
        t_post_favourable = post(favourable, "favourable")
    recourse_p50 = statistics.median(t_recourse)
    result = {
        "benchmark": "recourse",
        "model": "examples/german_credit GradientBoosting (100 trees, depth 3), manifest steps (features.toml)",
        "offered_features": len(recourse.offered(manifest)),
        "adverse_rows": len(adverse),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "recourse": _summary(t_recourse),
        "baseline_decision_compute": _summary(t_base),
        "recourse_over_decision_compute": round(recourse_p50 / statistics.median(t_base), 2),
        "decision_post_adverse": _summary(t_post_adverse),
        "decision_post_favourable": _summary(t_post_favourable),
        "rows_with_options": sum(1 for c in counts if c),
        "options_per_row_mean": round(sum(counts) / len(counts), 2),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recourse.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
