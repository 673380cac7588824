"""Remote models: the gateway's overhead in front of a real MLServer, and remote explanation time against shap.

    python bench/remote_models.py [--requests 200] [--explanations 5] [--step-requests 100]

The model is a scikit-learn pipeline on five German-credit features (tests/support/remote_models.py)
served by a real MLServer 1.7.1 (its virtualenv under .cache/peers, built like the tests' one) on
127.0.0.1, behind the OIP v2 adapter.

1. Decision overhead, for three remote models on the same MLServer: the binary pipeline above, and the
   multi-class (risk tiers, every class's probability) and regression (credit amount) models of
   tests/support/remote_kinds.py. For each: the same applications (the background rows, in turn) are sent,
   interleaved (kind after kind, so that every figure sees the same machine), (a)
   as decisions to the gateway (the Flask app in this process: validation, the remote call, the policy,
   one durable SQLite transaction with WAL and synchronous=FULL, the explanation queued as a job) and (b)
   as the same OIP v2 inference request by a pooled httpx client calling MLServer directly (status checked, the
   JSON answer read, as a client that uses it does). Overhead =
   p50(a) - p50(b). The HTTP hop from an agency to the gateway is not in (a). Also interleaved: (c) the
   OIP v2 adapter alone (request built from the validated values as a decision builds it, the pooled
   client, the answer checked), so that
   p50(c) - p50(b) is the remote call's own overhead and p50(a) - p50(c) the recording's. Each figure also
   has its CPU time in this process (`cpu_p50_ms`, time.process_time): on a machine other processes load, wall
   times stretch with every wait for a core or the disk, the CPU time a request costs does not. Then, for the
   binary model, `steps`: the wall and CPU time of each step of a decision (functions of the request path
   timed by wrapping them, in a phase of their own after the interleaved one): p50 of one call, and the
   time per decision (the sum over all calls / decisions, which adds up where p50s do not). And the disk's fsync time
   (a 4 KiB write next to the database, interleaved): a decision is answered once its transaction is
   durable, so at least one fsync is part of the overhead by design.
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

from tests.remote.conftest import KindsMLServer, peer_venv
from tests.support.remote_kinds import AMOUNT, TIERS, kind_models
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


def overhead_of(requests: int, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict[str, Any]:
    """The overhead figures of one model kind from its interleaved wall and CPU times (seconds)."""
    found: dict[str, Any] = {"requests": requests}
    for path in ("gateway", "direct_to_mlserver", "adapter_only"):
        found[path] = summary(wall[path]) | {"cpu_p50_ms": round(percentile(cpu[path], 50) * 1000, 3)}
    gateway, straight, adapted = found["gateway"], found["direct_to_mlserver"], found["adapter_only"]
    return found | {
        "overhead_p50_ms": round(gateway["p50_ms"] - straight["p50_ms"], 3),
        "adapter_overhead_p50_ms": round(adapted["p50_ms"] - straight["p50_ms"], 3),
        "recording_p50_ms": round(gateway["p50_ms"] - adapted["p50_ms"], 3),
        "overhead_cpu_p50_ms": round(gateway["cpu_p50_ms"] - straight["cpu_p50_ms"], 3),
        "ratio_p50": round(gateway["p50_ms"] / straight["p50_ms"], 3),
    }


# (step, module, attribute): functions of the request path, timed by wrapping them in place (nested steps are
# indented: their time is part of their parent's).
STEPS = [
    (". record_decision (everything but Flask, body validation and authentication)", "gateway.decisions",
     "record_decision"),
    (".. serving model (process cache)", "gateway.decisions", "serving_model"),
    (".. feature validation", "gateway.decisions", "validate_features"),
    (".. score, decide, explanation and recourse rows", "gateway.decisions", "score_and_explain"),
    ("... remote call (request built, HTTP to MLServer, answer checked)", None, "record_answers"),
    (".. data key (key store, committed ahead)", "gateway.keystore", "take"),
    (".. response body", "gateway.decisions", "decision_body"),
    (".. write transaction (BEGIN IMMEDIATE, inserts, guarded INSERT, durable commit)", "gateway.decisions",
     "write_transaction"),
    ("... decision rows (explanation, notices, audit leaf) inserted", "gateway.decisions", "add_decision"),
    ("(across the steps above) SQLite COMMITs: the read transaction's end, the write's durable commit",
     "sqlalchemy.engine.default", "DefaultDialect.do_commit"),
]


def timed_steps(n: int, decide: Any, call_direct: Any, adapter: Any, n_rows: int) -> list[dict[str, Any]]:
    """Wall and CPU p50 of each step of `n` decisions (alternating with direct calls), and of the whole."""
    import contextlib
    import functools
    import importlib

    times: dict[str, list[tuple[float, float]]] = {step: [] for step, _, _ in STEPS}

    def wrap(step: str, function: Any, manager: bool) -> Any:
        if manager:
            @contextlib.contextmanager
            def timed_cm(*a: Any, **k: Any) -> Any:
                t, c = time.perf_counter(), time.process_time()
                with function(*a, **k) as value:
                    yield value
                times[step].append((time.perf_counter() - t, time.process_time() - c))
            return timed_cm

        @functools.wraps(function)
        def timed(*a: Any, **k: Any) -> Any:
            t, c = time.perf_counter(), time.process_time()
            try:
                return function(*a, **k)
            finally:
                times[step].append((time.perf_counter() - t, time.process_time() - c))
        return timed

    originals = []
    for step, module_name, path in STEPS:
        owner = adapter if module_name is None else importlib.import_module(module_name)
        *classes, attribute = path.split(".")
        for name in classes:
            owner = getattr(owner, name)
        function = getattr(owner, attribute)
        originals.append((owner, attribute, function, module_name is None))
        setattr(owner, attribute, wrap(step, function, attribute == "write_transaction"))
    whole: list[tuple[float, float]] = []
    straight: list[tuple[float, float]] = []
    try:
        for i in range(n):
            for target, fn in ((whole, decide), (straight, call_direct)):
                t, c = time.perf_counter(), time.process_time()
                fn(i % n_rows)
                target.append((time.perf_counter() - t, time.process_time() - c))
    finally:
        for owner, attribute, function, instance in originals:
            if instance:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, function)

    def row(step: str, values: list[tuple[float, float]]) -> dict[str, Any]:
        # p50 of one call, and the time per decision (all calls' sum / decisions: these add up, p50s do not).
        return {"step": step, "calls_per_decision": round(len(values) / n, 2),
                "wall_p50_ms": round(percentile([w for w, _ in values], 50) * 1000, 3),
                "cpu_p50_ms": round(percentile([c for _, c in values], 50) * 1000, 3),
                "wall_per_decision_ms": round(sum(w for w, _ in values) / n * 1000, 3),
                "cpu_per_decision_ms": round(sum(c for _, c in values) / n * 1000, 3)}

    found = [row("whole decision (test client to 201)", whole)] + [row(step, times[step]) for step, _, _ in STEPS
                                                                   if times[step]]
    return found + [row("(for comparison) the same call direct to MLServer", straight)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--explanations", type=int, default=5)
    parser.add_argument("--step-requests", type=int, default=100)
    parser.add_argument("--output", type=Path, default=RESULTS / "remote_models.json")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from explainers import PermutationExplainer
    from gateway import create_app, registry
    from gateway.auth import create_key
    from gateway.db import write_transaction
    from gateway.decisions import serving_model
    from gateway.extensions import db
    from gateway.features import to_records
    from gateway.manifest import Manifest

    model = SmallModel()
    kinds = kind_models()
    try:
        venv = peer_venv("mlserver")
    except pytest.skip.Exception as exc:
        print(json.dumps({"skipped": str(exc)}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "mlserver").mkdir()
        # One MLServer serves the three models (as `credit`, and the kinds by their names), version v1 each.
        server = KindsMLServer(venv, folder / "mlserver", {"credit": model, **kinds})
        app: Any = None
        progress("starting MLServer")
        server.start()
        try:
            keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
            app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'gateway.db'}", **keys,
                              "MODEL_ALLOW_PRIVATE": True, "RATELIMIT_ENABLED": False, "JOBS_THREAD": False,
                              "NOTIFY_DISPATCHER_THREAD": False, "NOTIFY_ROUTES": {"email": "log"}})
            manifests = {
                "binary": (NAME, model.manifest({"protocol": "oip_v2", "url": server.url, "model": "credit",
                                                 "positive_index": model.positive_index})),
                "multiclass": (TIERS, kinds[TIERS].manifest(kinds[TIERS].source("oip_v2", server.url, model=TIERS))),
                "regression": (AMOUNT, kinds[AMOUNT].manifest(kinds[AMOUNT].source("oip_v2", server.url, model=AMOUNT))),
            }
            csv = {"binary": model.background_csv, "multiclass": kinds[TIERS].background_csv,
                   "regression": kinds[AMOUNT].background_csv}
            requests = {"binary": model.request, "multiclass": kinds[TIERS].request, "regression": kinds[AMOUNT].request}
            with app.app_context():
                upgrade()
                for kind, (_, manifest) in manifests.items():
                    with write_transaction():
                        registry.register(Manifest.model_validate(manifest), None, csv[kind], activate=True,
                                          registered_by="bench")
                with write_transaction():
                    _, key = create_key(name="bench", role="agency")
                loaded = {kind: serving_model(name) for kind, (name, _) in manifests.items()}
            adapters: dict[str, Any] = {kind: m.adapter for kind, m in loaded.items()}
            adapter = adapters["binary"]
            client = app.test_client()
            auth = {"Authorization": f"Bearer {key}"}
            direct = httpx.Client(timeout=5.0)
            n_rows = len(model.background)
            bodies = {kind: [requests[kind](i) for i in range(n_rows)] for kind in manifests}
            frames = {kind: [pd.DataFrame([b["features"]])[adapters[kind].feature_names] for b in bodies[kind]]
                      for kind in manifests}
            records = {kind: [to_records(loaded[kind].manifest, [b["features"]]) for b in bodies[kind]]
                       for kind in manifests}
            direct_bodies = {kind: [{"parameters": {"content_type": "pd"}, "inputs": adapters[kind]._inputs(f),
                                     "outputs": [{"name": adapters[kind].source.output}]} for f in frames[kind]]
                             for kind in manifests}
            infer_urls = {kind: f"{server.url}/v2/models/{adapters[kind].source.model}/infer" for kind in manifests}
            sent = {"n": 0}

            def decide(kind: str, j: int) -> None:
                sent["n"] += 1
                resp = client.post(f"/v1/models/{manifests[kind][0]}/decisions", json=bodies[kind][j],
                                   headers={**auth, "Idempotency-Key": f"bench-{sent['n']}"})
                assert resp.status_code == 201, resp.get_json()

            def call_direct(kind: str, j: int) -> None:  # a client that uses the answer: status checked, JSON read
                answer = direct.post(infer_urls[kind], json=direct_bodies[kind][j])
                answer.raise_for_status()
                answer.json()

            def call_adapter(kind: str, j: int) -> None:  # as a decision calls it: from the validated values
                adapters[kind].record_answers(records[kind][j])

            progress(f"decisions: {args.requests} per model kind through the gateway, direct and through the "
                     "adapter alone, interleaved")
            for i in range(20):  # warm every path
                for kind in manifests:
                    call_direct(kind, i % n_rows)
                    decide(kind, i % n_rows)
            paths = {"gateway": decide, "direct_to_mlserver": call_direct, "adapter_only": call_adapter}
            wall: dict[str, dict[str, list[float]]] = {kind: {p: [] for p in paths} for kind in manifests}
            cpu: dict[str, dict[str, list[float]]] = {kind: {p: [] for p in paths} for kind in manifests}
            fsyncs: list[float] = []
            with open(folder / "fsync-probe", "wb") as probe:
                for i in range(args.requests):
                    for kind in manifests:
                        for path in ("adapter_only", "gateway", "direct_to_mlserver"):
                            t, c = time.perf_counter(), time.process_time()
                            paths[path](kind, i % n_rows)
                            wall[kind][path].append(time.perf_counter() - t)
                            cpu[kind][path].append(time.process_time() - c)
                    probe.write(b"\0" * 4096)
                    probe.flush()
                    t = time.perf_counter()
                    os.fsync(probe.fileno())  # what every decision's durable commit waits for at least once
                    fsyncs.append(time.perf_counter() - t)
            overhead = {kind: overhead_of(args.requests, wall[kind], cpu[kind]) for kind in manifests}

            progress(f"steps: {args.step_requests} binary decisions with the request path's steps timed")
            steps = timed_steps(args.step_requests, lambda j: decide("binary", j), lambda j: call_direct("binary", j),
                                adapter, n_rows)

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
        "decision_overhead": overhead["binary"],
        "decision_overhead_by_kind": overhead,
        "steps": steps,
        # A decision is answered after its transaction is durable (WAL, synchronous=FULL: at least one fsync of
        # the WAL per commit); a direct call to MLServer writes nothing. The disk's fsync time, measured
        # interleaved with the decisions on a file next to the database, is part of the overhead by design.
        "fsync_4kib_next_to_the_database": summary(fsyncs),
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
