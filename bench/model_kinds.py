"""In-process LightGBM decision latency against the scikit-learn example, measured in the same run.

    python bench/model_kinds.py [--requests 200] [--rounds 3]

Trains the German-credit example (scikit-learn GradientBoosting pipeline, skops) and a LightGBM booster on
the same data, features and preprocessing (100 trees, depth 3; a zip bundle with its text model, the skops
preprocessing and the class labels), registers both in one gateway instance (SQLite WAL, synchronous=FULL)
and times POST /v1/models/{m}/decisions through the Flask test client, interleaved per round: the whole
decision path (validation, scoring, exact TreeSHAP in the transaction, the durable commit). Also the raw
scoring of one row by each model (the baseline of the baseline). And a LightGBM regressor of the loan amount
(examples/more_kinds' german-credit-amount features, preprocessing and bands; 100 trees, depth 3), whose
decisions are explained exactly in the transaction too (TreeSHAP in DM).

Prints one JSON object (also written to bench/results/model_kinds.json). Figures are medians over rounds.
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
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lightgbm_bundle(train: Any) -> bytes:
    """LightGBM on the example's data behind the example's own preprocessing, saved without pickle."""
    import lightgbm as lgb
    import skops.io

    from tests.support.boosting import bundle

    X, y = train.load_data(schema=train.load_schema())
    prep = train.make_pipeline()[:-1].fit(X, y)
    model = lgb.LGBMClassifier(n_estimators=100, max_depth=3, num_leaves=8, random_state=0, verbose=-1)
    model.fit(prep.transform(X).astype(float), (y == "good").astype(int))
    return bundle({"model.txt": model.booster_.model_to_string().encode(), "preprocessing.skops": skops.io.dumps(prep),
                   "classes.json": json.dumps(["bad", "good"]).encode()})


def _lightgbm_amount(folder: Path) -> tuple[Any, bytes, bytes]:
    """The amount example's manifest, background and a LightGBM regressor bundle on its features."""
    import lightgbm as lgb
    import skops.io

    from gateway.manifest import load_manifest
    from tests.support.boosting import bundle

    kinds = _module(ROOT / "examples" / "more_kinds" / "train.py", "more_kinds_bench")
    manifest, mfolder = load_manifest(kinds.train_amount(folder))
    g = kinds.german()
    X, _ = g.load_data(schema=g.load_schema())
    features = [f.name for f in manifest.features]
    prep = kinds._preprocess(g.CATEGORICAL, [c for c in g.NUMERIC if c != "credit_amount"]).fit(X[features])
    model = lgb.LGBMRegressor(n_estimators=100, max_depth=3, num_leaves=8, random_state=0, verbose=-1)
    model.fit(prep.transform(X[features]).astype(float), X["credit_amount"].astype(float))
    data = bundle({"model.txt": model.booster_.model_to_string().encode(), "preprocessing.skops": skops.io.dumps(prep)})
    assert manifest.explanation.background
    return manifest, data, (mfolder / manifest.explanation.background).read_bytes()


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered) * 1e3, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import hashlib

    import pandas as pd
    from flask_migrate import upgrade

    from gateway import create_app, registry, runtime
    from gateway.auth import create_key
    from gateway.db import write_transaction
    from gateway.extensions import db
    from gateway.features import to_frame
    from gateway.manifest import Manifest, load_manifest

    train = _module(ROOT / "examples" / "german_credit" / "train.py", "german_train_bench")
    sample = json.loads((ROOT / "examples" / "german_credit" / "sample_request.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest, mfolder = load_manifest(train.train(folder / "model", verbose=False))
        assert manifest.artifact and manifest.explanation.background
        artifact = (mfolder / manifest.artifact).read_bytes()
        background = (mfolder / manifest.explanation.background).read_bytes()
        lgbm = _lightgbm_bundle(train)
        data = tomllib.loads((mfolder / "manifest.toml").read_text())
        data |= {"name": "german-credit-lightgbm", "adapter": "lightgbm", "sha256": hashlib.sha256(lgbm).hexdigest()}
        lgbm_manifest = Manifest.model_validate(data)
        amount_manifest, amount, amount_background = _lightgbm_amount(folder / "kinds")
        amount_manifest = amount_manifest.model_copy(update={
            "name": "german-credit-amount-lightgbm", "adapter": "lightgbm", "sha256": hashlib.sha256(amount).hexdigest()})

        instance = folder / "instance"
        instance.mkdir()
        app = create_app({"DATABASE_URL": f"sqlite:///{instance / 'gw.db'}", "SUBJECT_KEY": secrets.token_hex(32),
                          "CONTACT_KEY": secrets.token_hex(32), "SECRET_KEY": secrets.token_hex(32)})
        with app.app_context():
            upgrade()
            with write_transaction():
                registry.register(manifest, artifact, background, activate=True, registered_by="bench")
                registry.register(lgbm_manifest, lgbm, background, activate=True, registered_by="bench")
                registry.register(amount_manifest, amount, amount_background, activate=True, registered_by="bench")
                _, key = create_key(name="bench", role="agency")
            models = {name: runtime.cache().get(registry.public_model(name).id)
                      for name in ("german-credit", "german-credit-lightgbm", "german-credit-amount-lightgbm")}
            methods = {name: m.explanation.explainer.method_name if m.explanation else None for name, m in models.items()}
            row = to_frame(manifest, [sample["features"]])
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}

        amount_sample = {**sample, "features": {k: v for k, v in sample["features"].items() if k != "credit_amount"}}

        def decide(model: str) -> float:
            t0 = time.perf_counter()
            body = amount_sample if model == "german-credit-amount-lightgbm" else sample
            resp = client.post(f"/v1/models/{model}/decisions", json=body,
                               headers=headers | {"Idempotency-Key": secrets.token_hex(8)})
            elapsed = time.perf_counter() - t0
            assert resp.status_code == 201, resp.get_json()
            return elapsed

        names = {"sklearn": "german-credit", "lightgbm": "german-credit-lightgbm",
                 "lightgbm_regression": "german-credit-amount-lightgbm"}
        for name in names.values():
            for _ in range(20):
                decide(name)
        rounds: dict[str, list[dict[str, float]]] = {k: [] for k in names}
        raw: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.rounds):
            order = list(names.items()) if r % 2 == 0 else list(reversed(names.items()))
            for label, name in order:
                rounds[label].append(_percentiles([decide(name) for _ in range(args.requests)]))
                adapter = models[name].adapter
                frame = pd.DataFrame(row)
                if label == "lightgbm_regression":
                    frame = frame.drop(columns=["credit_amount"])
                times = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    adapter.score(frame)
                    times.append(time.perf_counter() - t0)
                raw[label].append(statistics.median(times) * 1e3)
        with app.app_context():
            db.engine.dispose()

    def median(label: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rounds[label]), 3)

    result = {
        "benchmark": "model_kinds",
        "what": "POST /v1/models/{m}/decisions in process (Flask test client, one client, SQLite WAL "
                "synchronous=FULL; exact TreeSHAP in the transaction), LightGBM vs the scikit-learn example",
        "lightgbm": {"decision_p50_ms": median("lightgbm", "p50_ms"), "decision_p99_ms": median("lightgbm", "p99_ms"),
                     "raw_adapter_score_p50_ms": round(statistics.median(raw["lightgbm"]), 3),
                     "explainer": methods["german-credit-lightgbm"]},
        "lightgbm_regression": {"decision_p50_ms": median("lightgbm_regression", "p50_ms"),
                                "decision_p99_ms": median("lightgbm_regression", "p99_ms"),
                                "raw_adapter_score_p50_ms": round(statistics.median(raw["lightgbm_regression"]), 3),
                                "explainer": methods["german-credit-amount-lightgbm"]},
        "baseline_sklearn": {"decision_p50_ms": median("sklearn", "p50_ms"), "decision_p99_ms": median("sklearn", "p99_ms"),
                             "raw_adapter_score_p50_ms": round(statistics.median(raw["sklearn"]), 3),
                             "explainer": methods["german-credit"]},
        "p50_ratio_lightgbm_vs_sklearn": round(median("lightgbm", "p50_ms") / median("sklearn", "p50_ms"), 3),
        "p50_ratio_lightgbm_regression_vs_sklearn": round(median("lightgbm_regression", "p50_ms")
                                                          / median("sklearn", "p50_ms"), 3),
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model_kinds.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
