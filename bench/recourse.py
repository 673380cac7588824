"""Cost of finding verified recourse options for adverse decisions of the German credit example.

    python bench/recourse.py [--rows N]

Mutable features from the example's manifest (features.toml), steps of 6 months and 500 DM for the
duration and the amount, 1 for other numbers. Baseline in the same run: one exact explanation of the same
row (grouped TreeSHAP, the decision path's explainer). Prints one JSON object (bench/results/recourse.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=40)
    args = parser.parse_args()

    from explainers import MutableFeature, RecourseSearch, TreeExplainer

    spec = importlib.util.spec_from_file_location("train", ROOT / "examples" / "german_credit" / "train.py")
    assert spec and spec.loader
    train: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    X, y = train.load_data()
    pipeline = train.make_pipeline().fit(X, y)
    schema = train.load_schema()
    mutable = []
    for f in schema["features"]:
        if not f.get("mutable") or f.get("disclosure") == "withhold":
            continue
        if f["type"] == "number":
            step = {"duration_months": 6.0, "credit_amount": 500.0}.get(f["name"], 1.0)
            mutable.append(MutableFeature(f["name"], "number", f.get("min"), f.get("max"), step=step))
        else:
            mutable.append(MutableFeature(f["name"], "category", categories=tuple(f["categories"])))
    search = RecourseSearch(pipeline, mutable, positive_class="good").fit()
    explainer = TreeExplainer(pipeline, positive_class="good").fit(train.background_rows(X, y))
    scores = pipeline.predict_proba(X)[:, 1]
    rows = X[scores < 0.5].head(args.rows).to_dict("records")
    explainer.explain(rows[:1])
    t_recourse, t_explain, counts = [], [], []
    for row in rows:
        t0 = time.perf_counter()
        options = search.explain(row)
        t1 = time.perf_counter()
        explainer.explain([row])
        t_explain.append(time.perf_counter() - t1)
        t_recourse.append(t1 - t0)
        counts.append(len(options))
    result = {
        "benchmark": "recourse",
        "model": "examples/german_credit GradientBoosting (100 trees, depth 3)",
        "mutable_features": len(mutable),
        "adverse_rows": len(rows),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "recourse_ms_p50": round(statistics.median(t_recourse) * 1e3, 2),
        "recourse_ms_p90": round(sorted(t_recourse)[int(0.9 * len(t_recourse))] * 1e3, 2),
        "baseline_explain_one_ms_p50": round(statistics.median(t_explain) * 1e3, 3),
        "rows_with_options": sum(1 for c in counts if c),
        "options_per_row_mean": round(sum(counts) / len(counts), 2),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recourse.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
