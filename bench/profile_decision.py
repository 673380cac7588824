"""Where a decision's time goes: the request path and the notification dispatcher, profiled in process.

    python bench/profile_decision.py [--decisions 400] [--profiler pyinstrument|cprofile]

Provisions a fresh instance (SQLite, WAL, synchronous=FULL) with the documented commands, then in this
process: sends decisions through the Flask test client (no HTTP server, no dispatcher thread), measures
CPU and wall time per decision without a profiler, then again under a profiler and attributes the
time to the steps of the request path (inclusive time of named functions; steps whose function is not
found are reported as missing, since the code moves). Then runs the dispatcher over the notification
rows those decisions left and does the same per notification.

Complements decision_latency.py (which measures, this explains). The sampling profiler pyinstrument
is used when installed (``pip install pyinstrument``: a tool for you, not a dependency of the
project); cProfile otherwise, which inflates Python-heavy steps. Both measure wall-clock time, so a
step's share includes its waits (fsync, locks, other processes taking the CPU); ``est_wall_ms`` scales
the share to the unprofiled wall time per item. ``unprofiled.cpu_ms`` is this process's CPU per item.

Prints one JSON object and writes bench/results/decision_profile.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.gateway_server import (
    DECISIONS_PATH,
    UNLIMITED_RATES,
    decision_body,
    example_rows,
    provision,
    train_example_model,
    valid_iin,
)

RESULTS = ROOT / "bench" / "results" / "decision_profile.json"

# (step, file suffix, function name): inclusive time of every call of that function. Steps may nest
# (a step's time includes its sub-steps'); the nesting is shown by indentation in the name.
REQUEST_STEPS = [
    ("whole request (Flask app)", "flask/app.py", "wsgi_app"),
    (". request body validation (pydantic, email)", "flask_openapi3/request.py", "_validate_body"),
    (". authenticate before the view (SELECT; not for a cached API key on the decision path)", "gateway/api/common.py",
     "_authenticated"),
    (". view create_decision", "gateway/api/decisions_api.py", "create_decision"),
    (".. record_decision", "gateway/decisions.py", "record_decision"),
    ("... idempotency lookup (SELECT; only on a conflict or a refusal)", "gateway/decisions.py", "_replay"),
    ("... serving model lookup (SELECT on a cache miss)", "gateway/decisions.py", "serving_model"),
    ("... feature validation", "gateway/features.py", "validate_features"),
    ("... score + explain", "gateway/decisions.py", "score_and_explain"),
    (".... score (model)", "gateway/runtime/__init__.py", "assess_rows_margins"),
    ("..... estimator predict_proba (not on the margin path)", "sklearn/ensemble/_gb.py", "predict_proba"),
    ("..... pipeline predict_proba (slow path)", "sklearn/pipeline.py", "predict_proba"),
    ("..... compiled preprocessing", "explainers/_transform.py", "transform"),
    (".... exact explanation", "gateway/explanations.py", "values_for_decisions"),
    ("..... grouped tree values", "explainers/_grouped_tree.py", "grouped_values"),
    ("..... explainer's own margin (predicts again; not when the scorer gave it)", "explainers/tree.py", "_margin"),
    ("..... explainer's own probability (predicts again)", "explainers/tree.py", "_probability1"),
    ("..... factor selection", "explainers/factors.py", "select"),
    (".... recourse search (adverse decisions only)", "gateway/recourse.py", "compute"),
    ("... data key from the key store's pool", "gateway/keystore.py", "take"),
    ("... insert rows (decision, explanation, notices, leaf, recourse)", "gateway/decisions.py", "add_decision"),
    ("... guarded idempotency INSERT (proves key and version)", "gateway/decisions.py", "_guarded_insert"),
    ("... write transaction begin + commit (fsync)", "gateway/db.py", "write_transaction"),
    ("... contact encryption", "gateway/contacts.py", "encrypt_contact"),
    ("... subject pseudonym (HMAC)", "gateway/identity.py", "subject_ref"),
    ("all SQLAlchemy Core execute", "sqlalchemy/engine/base.py", "execute"),
    ("all SQLite commits", "sqlalchemy/engine/default.py", "do_commit"),
    ("rate limiter", "flask_limiter/_extension.py", "_check_request_limit"),
    (". rate limiter: the caller's key (from the key cache)", "gateway/api/common.py", "rate_limit_key"),
]
DISPATCH_STEPS = [
    ("whole batch", "gateway/notifications/dispatcher.py", "run_once"),
    (". claim rows (write transaction)", "gateway/notifications/outbox.py", "claim"),
    (". attempt one row", "gateway/notifications/dispatcher.py", "attempt"),
    (". deliver one row (older name)", "gateway/notifications/dispatcher.py", "deliver"),
    (".. render the notice (Jinja + Babel)", "gateway/notifications/render.py", "message_for"),
    (".. email channel send", "gateway/notifications/channels/email.py", "send"),
    (". record the batch's outcomes (write transaction)", "gateway/notifications/outbox.py", "record"),
    (". record one failed attempt (write transaction)", "gateway/notifications/outbox.py", "record_failure"),
    (". mark one delivered (write transaction)", "gateway/notifications/outbox.py", "mark_delivered"),
    ("all SQLite commits", "sqlalchemy/engine/default.py", "do_commit"),
]


def log(message: str) -> None:
    print(f"[profile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], int], label: str) -> dict[str, float]:
    """Run fn (returns how many items it did); CPU and wall ms per item, without a profiler."""
    c0, w0 = time.process_time(), time.perf_counter()
    n = fn()
    c1, w1 = time.process_time(), time.perf_counter()
    if not n:
        raise RuntimeError(f"{label}: nothing was done")
    return {"items": n, "cpu_ms": (c1 - c0) / n * 1000, "wall_ms": (w1 - w0) / n * 1000}


def profile(fn: Callable[[], int], kind: str) -> tuple[int, dict[tuple[str, str], float], float]:
    """Run fn under a profiler; return items, inclusive seconds per (file, function), and the total."""
    if kind == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        n = fn()
        profiler.stop()
        root = profiler.last_session.root_frame() if profiler.last_session else None
        inclusive: dict[tuple[str, str], float] = {}

        def walk(frame: Any, active: frozenset[tuple[str, str]]) -> None:
            key = ((frame.file_path or "").replace("\\", "/"), frame.function or "")
            if key not in active:  # count a recursive function once
                inclusive[key] = inclusive.get(key, 0.0) + frame.time
            for child in frame.children:
                walk(child, active | {key})

        if root is not None:
            walk(root, frozenset())
        return n, inclusive, root.time if root is not None else 0.0
    prof = cProfile.Profile()
    prof.enable()
    n = fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    inclusive = {(file, func): ct for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items()}
    total = max(inclusive.values(), default=0.0)
    return n, inclusive, total


def attribute(steps: list[tuple[str, str, str]], inclusive: dict[tuple[str, str], float], total: float,
              items: int, wall_ms: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, suffix, function in steps:
        found = [t for (file, func), t in inclusive.items() if func == function and file.endswith(suffix)]
        if not found:
            out[name] = "not found (renamed or not called)"
            continue
        seconds = sum(found)
        share = seconds / total if total else 0.0
        out[name] = {"share": round(share, 3), "profiled_ms": round(seconds / items * 1000, 3),
                     "est_wall_ms": round(share * wall_ms, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=400)
    default = "pyinstrument"
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        default = "cprofile"
    parser.add_argument("--profiler", choices=["pyinstrument", "cprofile"], default=default)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        log("training and provisioning")
        manifest = train_example_model(tmp / "model")
        instance = provision(tmp / "instance", manifest, client_name="profile-agency", extra_env=UNLIMITED_RATES)
        os.environ.update({k: v for k, v in instance.env.items() if k.startswith("GATEWAY_")})
        os.environ["GATEWAY_NOTIFY_DISPATCHER_THREAD"] = "0"
        from gateway import create_app, runtime
        from gateway.notifications.dispatcher import Dispatcher

        app = create_app()
        runtime.warm(app)
        client = app.test_client()
        rows = example_rows(manifest)
        bodies = [json.dumps(decision_body(r, iin=valid_iin(i), language=("kk", "ru", "en")[i % 3],
                                           contact={"email": f"person{i}@example.kz"})).encode()
                  for i, r in enumerate(rows)]
        headers = {"Authorization": f"Bearer {instance.key}", "Content-Type": "application/json"}
        counter = [0]

        def decisions(n: int) -> Callable[[], int]:
            def run() -> int:
                for _ in range(n):
                    i = counter[0] = counter[0] + 1
                    r = client.post(DECISIONS_PATH, data=bodies[i % len(bodies)],
                                    headers={**headers, "Idempotency-Key": f"profile-{i}"})
                    if r.status_code != 201:
                        raise RuntimeError(f"decision answered {r.status_code}: {r.get_data(as_text=True)[:500]}")
                return n
            return run

        dispatcher = Dispatcher(app)

        def dispatch() -> int:
            done = 0
            while True:
                claimed = dispatcher.run_once()
                done += claimed
                if claimed == 0:
                    return done

        import logging

        logging.getLogger("gateway.notifications").setLevel(logging.ERROR)  # one warning per failed attempt
        app.logger.setLevel(logging.ERROR)

        log("warming up")
        decisions(100)()
        dispatch()
        log(f"{args.decisions} decisions without a profiler")
        plain = timed(decisions(args.decisions), "decisions")
        plain_dispatch = timed(dispatch, "dispatch")
        log(f"{args.decisions} decisions under {args.profiler}")
        n, inclusive, total = profile(decisions(args.decisions), args.profiler)
        request = attribute(REQUEST_STEPS, inclusive, total, n, plain["wall_ms"])
        n2, inclusive2, total2 = profile(dispatch, args.profiler)
        dispatch_steps = attribute(DISPATCH_STEPS, inclusive2, total2, n2, plain_dispatch["wall_ms"])
        with app.app_context():
            from gateway.extensions import db

            db.engine.dispose()
        smtp = app.config.get("SMTP_HOST")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "benchmark": "decision_profile",
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profiler": args.profiler,
        "load_average_at_start": os.getloadavg(),
        "decision": {"unprofiled": plain, "steps": request},
        "dispatcher": {
            "smtp_configured": bool(smtp),
            "note": "per notification row attempted; without SMTP every attempt fails and is rescheduled",
            "unprofiled": plain_dispatch,
            "steps": dispatch_steps,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp_out, RESULTS)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
