"""Cost of explaining one decision with raw features as players (grouped TreeSHAP) against today's method.

    python bench/grouped_shap.py [--rounds N]

The German credit example (GradientBoosting, 100 trees of depth 3, one-hot categoricals, 100 background
rows), explained in its manifest's space (probability) and in log-odds. Baseline, measured interleaved in
the same run: the former method (shap's interventional TreeExplainer per transformed column, summed per
raw feature; `TreeExplainer(players="columns")`). Both are timed end to end on one record, as the
decision path calls them. Also reports how far the former numbers were from the raw features' Shapley
values on held-out rows. Prints one JSON object (also written to bench/results/grouped_shap.json).
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


def _train_module() -> Any:
    spec = importlib.util.spec_from_file_location("train", ROOT / "examples" / "german_credit" / "train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()

    from explainers import TreeExplainer

    train = _train_module()
    X, y = train.load_data()
    pipeline = train.make_pipeline().fit(X, y)
    background = train.background_rows(X, y)
    rows = X.sample(50, random_state=1)
    records = rows.to_dict("records")
    result: dict[str, Any] = {
        "benchmark": "grouped_shap",
        "model": "examples/german_credit GradientBoosting (100 trees, depth 3)",
        "background_rows": len(background),
        "raw_features": X.shape[1],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "rounds": args.rounds,
        "spaces": {},
    }
    for space in ("probability", "log_odds"):
        ours = TreeExplainer(pipeline, output_space=space, positive_class="good").fit(background)
        before = TreeExplainer(pipeline, output_space=space, positive_class="good", players="columns").fit(background)
        ours.explain(records[:1])
        before.explain(records[:1])
        t_ours, t_before = [], []
        for i in range(args.rounds):
            record = records[i % len(records)]
            t0 = time.perf_counter()
            ours.explain([record])
            t1 = time.perf_counter()
            before.explain([record])
            t_before.append(time.perf_counter() - t1)
            t_ours.append(t1 - t0)
        a = ours.explain(records)
        b = before.explain(records)
        gap = max(abs(x.attributions[f] - z.attributions[f]) for x, z in zip(a, b, strict=True) for f in x.attributions)
        med_ours, med_before = statistics.median(t_ours) * 1e3, statistics.median(t_before) * 1e3
        result["spaces"][space] = {
            "method": ours.method_name,
            "baseline_method": before.method_name,
            "explain_one_ms_p50": round(med_ours, 3),
            "baseline_explain_one_ms_p50": round(med_before, 3),
            "ratio_to_baseline": round(med_ours / med_before, 3),
            "max_abs_difference_from_baseline": gap,
            "max_additivity_error": max(x.additivity_error for x in a),
        }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grouped_shap.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
