"""Remote models: the gateway's overhead in front of a real MLServer, and remote explanation time against shap.

    python bench/remote_models.py [--requests 200] [--explanations 5]

The model is a scikit-learn pipeline on five German-credit features (tests/support/remote_models.py)
served by a real MLServer 1.7.1 (its virtualenv under .cache/peers, built like the tests' one) on
127.0.0.1, behind the OIP v2 adapter.

1. Decision overhead: the same applications (the background rows, in turn) are sent, interleaved, (a)
   as decisions to the gateway (the Flask app in this process: validation, the remote call, the policy,
   one durable SQLite transaction with WAL and synchronous=FULL, the explanation queued as a job) and (b)
   as the same OIP v2 inference request by a pooled httpx client calling MLServer directly. Overhead =
   p50(a) - p50(b). The HTTP hop from an agency to the gateway is not in (a). Also interleaved: (c) the
   OIP v2 adapter alone (request built from the row, the pooled client, the answer checked), so that
   p50(c) - p50(b) is the remote call's own overhead and p50(a) - p50(c) the recording's.
2. Explanation time: the project's permutation SHAP (explainers.PermutationExplainer, as the explain job
   runs it, seeded) against shap's PermutationExplainer, both calling the same remote model through the
   same adapter, with the same budget of coalition evaluations (ours is run to its evaluation cap; shap
   gets that number as max_evals) and the same 20 background rows; time per explanation and the number
   of remote calls each makes.

Prints one JSON object and writes it to bench/results/remote_models.json; progress on stderr.
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.remote.conftest import MLServer, peer_venv
from tests.support.remote_models import FEATURES, NAME, SmallModel


def progress(message: str) -> None:
    print(f"[remote_models] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50_ms": round(percentile(ms, 50), 3), "p90_ms": round(percentile(ms, 90), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--explanations", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS / "remote_models.json")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from explainers import PermutationExplainer
    from gateway import create_app, registry
    from gateway.auth import create_key
    from gateway.db import write_transaction
    from gateway.decisions import serving_model
    from gateway.extensions import db
    from gateway.manifest import Manifest

    model = SmallModel()
    try:
        venv = peer_venv("mlserver")
    except pytest.skip.Exception as exc:
        print(json.dumps({"skipped": str(exc)}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "mlserver").mkdir()
        server = MLServer(venv, folder / "mlserver", model)
        app: Any = None
        progress("starting MLServer")
        server.start()
        try:
            source = {"protocol": "oip_v2", "url": server.url, "model": "credit",
                      "positive_index": model.positive_index}
            keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
            app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'gateway.db'}", **keys,
                              "MODEL_ALLOW_PRIVATE": True, "RATELIMIT_ENABLED": False, "JOBS_THREAD": False,
                              "NOTIFY_DISPATCHER_THREAD": False, "NOTIFY_ROUTES": {"email": "log"}})
            with app.app_context():
                upgrade()
                with write_transaction():
                    registry.register(Manifest.model_validate(model.manifest(source)), None, model.background_csv,
                                      activate=True, registered_by="bench")
                with write_transaction():
                    _, key = create_key(name="bench", role="agency")
                adapter: Any = serving_model(NAME).adapter
            client = app.test_client()
            auth = {"Authorization": f"Bearer {key}"}
            bodies = [model.request(i) for i in range(len(model.background))]
            direct_bodies = [{"parameters": {"content_type": "pd"},
                              "inputs": adapter._inputs(pd.DataFrame([b["features"]])),
                              "outputs": [{"name": "predict_proba"}]} for b in bodies]
            direct = httpx.Client(timeout=5.0)
            infer_url = f"{server.url}/v2/models/credit/infer"
            progress(f"decisions: {args.requests} through the gateway, {args.requests} direct, interleaved")
            for i in range(20):  # warm both paths
                direct.post(infer_url, json=direct_bodies[i % len(bodies)]).raise_for_status()
                assert client.post(f"/v1/models/{NAME}/decisions", json=bodies[i % len(bodies)],
                                   headers={**auth, "Idempotency-Key": f"warm-{i}"}).status_code == 201
            through, straight, adapted = [], [], []
            frames = [pd.DataFrame([b["features"]])[FEATURES] for b in bodies]
            for i in range(args.requests):
                j = i % len(bodies)
                t = time.perf_counter()
                adapter.score(frames[j])
                adapted.append(time.perf_counter() - t)
                t0 = time.perf_counter()
                resp = client.post(f"/v1/models/{NAME}/decisions", json=bodies[j],
                                   headers={**auth, "Idempotency-Key": f"bench-{i}"})
                t1 = time.perf_counter()
                assert resp.status_code == 201, resp.get_json()
                r = direct.post(infer_url, json=direct_bodies[j])
                t2 = time.perf_counter()
                r.raise_for_status()
                through.append(t1 - t0)
                straight.append(t2 - t1)
            gateway_s, direct_s, adapter_s = summary(through), summary(straight), summary(adapted)

            progress(f"explanations: {args.explanations} rows, ours vs shap.PermutationExplainer")
            import shap

            calls = {"n": 0}

            def f(frame: pd.DataFrame) -> np.ndarray:
                calls["n"] += 1
                return np.asarray(adapter.score(pd.DataFrame(frame, columns=FEATURES) if not isinstance(
                    frame, pd.DataFrame) else frame), dtype=float)

            background = model.background[FEATURES]
            ours = PermutationExplainer(f, random_state=0, target_error=1e-9, max_evals_cap=2000).fit(background)
            rows = background.iloc[: args.explanations]
            ours_times, ours_calls = [], []
            for i in range(len(rows)):
                calls["n"] = 0
                t0 = time.perf_counter()
                ours.explain(rows.iloc[[i]])
                ours_times.append(time.perf_counter() - t0)
                ours_calls.append(calls["n"])
            m = len(FEATURES)
            pairs = (2000 - 2) // (2 * (m - 1))
            budget = pairs * 2 * (m - 1) + 2  # coalition evaluations ours spends per row at its cap

            # shap's maskers work on numbers: categories are coded and decoded around the remote call.
            codes = {c: sorted(set(background[c])) for c in FEATURES if background[c].dtype == object}

            def encode(frame: pd.DataFrame) -> np.ndarray:
                out = frame.copy()
                for c, cats in codes.items():
                    out[c] = [cats.index(v) if v in cats else len(cats) for v in out[c]]
                return out.to_numpy(dtype=float)

            extended = {c: [*cats, *sorted(set(rows[c]) - set(cats))] for c, cats in codes.items()}

            def f_coded(array: np.ndarray) -> np.ndarray:
                frame = pd.DataFrame(array, columns=FEATURES)
                for c, cats in extended.items():
                    frame[c] = [cats[int(v)] for v in frame[c]]
                return f(frame)

            theirs = shap.PermutationExplainer(f_coded, shap.maskers.Independent(encode(background),
                                                                                  max_samples=len(background)),
                                               seed=0)
            theirs_times, theirs_calls = [], []
            for i in range(len(rows)):
                calls["n"] = 0
                t0 = time.perf_counter()
                theirs(encode(rows.iloc[[i]]), max_evals=budget, silent=True)
                theirs_times.append(time.perf_counter() - t0)
                theirs_calls.append(calls["n"])
        finally:
            server.stop()
            if app is not None:
                with app.app_context():
                    db.engine.dispose()

    result = {
        "benchmark": "remote_models",
        "decision_overhead": {
            "requests": args.requests, "gateway": gateway_s, "direct_to_mlserver": direct_s,
            "adapter_only": adapter_s,
            "overhead_p50_ms": round(gateway_s["p50_ms"] - direct_s["p50_ms"], 3),
            "adapter_overhead_p50_ms": round(adapter_s["p50_ms"] - direct_s["p50_ms"], 3),
            "ratio_p50": round(gateway_s["p50_ms"] / direct_s["p50_ms"], 3),
        },
        "explanation": {
            "rows": len(rows), "features": m, "background_rows": len(background), "budget_evaluations": budget,
            "ours": {**summary(ours_times), "remote_calls_per_row": statistics.fmean(ours_calls)},
            "shap_permutation": {**summary(theirs_times), "remote_calls_per_row": statistics.fmean(theirs_calls)},
            "ratio_p50_ours_to_shap": round(percentile(ours_times, 50) / percentile(theirs_times, 50), 3),
        },
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "shap": shap.__version__,
                    "platform": platform.platform()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = args.output.with_suffix(".json.tmp")
    tmp_path.write_text(text + "\n")
    tmp_path.replace(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
