"""The floor: the least a durable scoring service must do per decision, served the way the gateway is.

One endpoint, ``POST /decide``: parse the JSON body, build the model's input row by hand as numpy (the
pipeline's fitted preprocessing -- one-hot categories, passed-through numbers -- read once at start and
checked against scikit-learn's own ``transform`` on every background row), call the final estimator's
``predict_proba`` on it, insert one row (id, score, inputs JSON, created_at) into its own SQLite file in
WAL mode with ``synchronous=FULL`` under ``BEGIN IMMEDIATE``, answer 201 JSON. No validation, no
authentication, no idempotency, no notice, no audit log: everything the gateway adds is measured against
this. ``--frame`` serves the former floor instead: a one-row pandas DataFrame through the whole
pipeline's ``predict_proba`` (scikit-learn validates every column of it on every call).

    python bench/floor_app.py --model DIR --db FILE [--bind 127.0.0.1:0] [--workers 2] [--frame]

Served by gunicorn with the gateway's options: sync workers, app preloaded (the model is loaded once,
before fork), the same timeouts. The project's package is not imported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]  # what skops reports as untrusted for the example pipeline


def hand_built_row(pipeline: Any, names: list[str], numeric: set[str], background: Path | None) -> Any:
    """Return row(features) -> the final estimator's input as a 1 x k float array, built by hand.

    Supports what a ColumnTransformer of OneHotEncoder(handle_unknown="ignore"), StandardScaler,
    "passthrough" and "drop" makes; anything else, or a row that differs from scikit-learn's own
    transform on a background row, stops the server (the floor must score exactly as the pipeline does).
    """
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    preprocess = pipeline[:-1]
    if len(preprocess) != 1 or not isinstance(preprocess[0], ColumnTransformer):
        raise SystemExit("the floor builds rows for a Pipeline(ColumnTransformer, estimator) only")
    steps: list[Any] = []  # (kind, columns, parameters) in the ColumnTransformer's output order
    width = 0
    for _, transformer, columns in preprocess[0].transformers_:
        cols = [names[c] if isinstance(c, int) else str(c) for c in columns]
        if isinstance(transformer, str) and transformer == "drop" or not cols:
            continue
        # A fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer.
        if isinstance(transformer, str) and transformer == "passthrough" or \
                isinstance(transformer, FunctionTransformer) and transformer.func is None:
            steps.append(("pass", cols, None))
            width += len(cols)
        elif isinstance(transformer, StandardScaler):
            mean = transformer.mean_ if transformer.with_mean else np.zeros(len(cols))
            scale = transformer.scale_ if transformer.with_std else np.ones(len(cols))
            steps.append(("scale", cols, (mean, scale)))
            width += len(cols)
        elif isinstance(transformer, OneHotEncoder) and transformer.handle_unknown == "ignore" \
                and transformer.drop is None:
            offsets = []
            for categories in transformer.categories_:
                offsets.append((width, {c: i for i, c in enumerate(categories.tolist())}))
                width += len(categories)
            steps.append(("onehot", cols, offsets))
        else:
            raise SystemExit(f"the floor does not build rows for {transformer!r}")

    def row(features: dict[str, Any]) -> Any:
        out = np.zeros((1, width))
        at = 0
        for kind, cols, params in steps:
            if kind == "onehot":
                for name, (offset, index) in zip(cols, params, strict=True):
                    hit = index.get(features[name])
                    if hit is not None:
                        out[0, offset + hit] = 1.0
                at = params[-1][0] + len(params[-1][1])
            else:
                values = [float(features[name]) for name in cols]
                if kind == "scale":
                    mean, scale = params
                    values = [(v - m) / s for v, m, s in zip(values, mean, scale, strict=True)]
                out[0, at:at + len(cols)] = values
                at += len(cols)
        return out

    if background is not None:  # the proof that the hand-built row is the pipeline's row
        import pandas as pd

        frame = pd.read_csv(background)[names]
        expected = preprocess.transform(frame)
        expected = expected.toarray() if hasattr(expected, "toarray") else np.asarray(expected, dtype=float)
        for i, record in enumerate(frame.to_dict("records")):
            typed = {n: (float(v) if n in numeric else str(v)) for n, v in record.items()}
            if not np.allclose(row(typed)[0], expected[i], rtol=0, atol=1e-12):
                raise SystemExit(f"the hand-built row {i} differs from the pipeline's transform")
    return row


def create_app(model_dir: Path, db_path: Path, *, frame: bool = False) -> Any:
    import pandas as pd
    import skops.io as sio
    from flask import Flask, Response, request

    with open(model_dir / "manifest.toml", "rb") as fh:
        manifest = tomllib.load(fh)
    inputs = [f for f in manifest["features"] if not f.get("monitor_only")]  # the model's inputs
    names = [f["name"] for f in inputs]
    numeric = {f["name"] for f in inputs if f["type"] == "number"}
    pipeline = sio.load(model_dir / manifest["artifact"], trusted=TRUSTED_TYPES)
    positive = list(pipeline.classes_).index(manifest["policy"]["positive_class"])
    estimator = pipeline[-1]
    background = manifest.get("explanation", {}).get("background")
    row = None if frame else hand_built_row(pipeline, names, numeric, model_dir / background if background else None)

    def score_of(features: dict[str, Any]) -> float:
        if row is not None:
            return float(estimator.predict_proba(row(features))[0, positive])
        one = pd.DataFrame.from_records([[float(features[n]) if n in numeric else features[n] for n in names]],
                                        columns=names)
        return float(pipeline.predict_proba(one)[0, positive])

    with sqlite3.connect(db_path) as conn:  # made before fork; each worker opens its own connection
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS decisions (id TEXT PRIMARY KEY, score REAL NOT NULL, inputs TEXT NOT NULL, "
            "created_at TEXT NOT NULL)"
        )
    conn.close()

    local: dict[str, Any] = {"pid": None, "conn": None}

    def connection() -> sqlite3.Connection:
        if local["pid"] != os.getpid():
            conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            local["pid"], local["conn"] = os.getpid(), conn
        found: sqlite3.Connection = local["conn"]
        return found

    app = Flask("floor")

    @app.post("/decide")
    def decide() -> Response:
        body = request.get_json()
        features = body["features"]
        score = score_of(features)
        decision_id = "dec_" + secrets.token_urlsafe(16)
        created = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        conn = connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO decisions (id, score, inputs, created_at) VALUES (?, ?, ?, ?)",
                (decision_id, score, json.dumps(features, separators=(",", ":")), created),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        out = json.dumps({"decision_id": decision_id, "score": score, "created_at": created})
        return Response(out, status=201, mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response('{"status":"ok"}', status=200, mimetype="application/json")

    @app.get("/noop")
    def noop() -> Response:
        """Does nothing: measures what the load generator and gunicorn can do at most."""
        return Response("{}", status=200, mimetype="application/json")

    return app


def serve(model_dir: Path, db_path: Path, *, bind: str, workers: int, timeout: int, frame: bool) -> None:
    from gunicorn.app.base import BaseApplication

    class FloorServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            # The gateway's options (gateway/server.py), so only the app differs.
            options = {
                "bind": bind,
                "workers": workers,
                "timeout": timeout,
                "preload_app": True,
                "worker_class": "sync",
                "graceful_timeout": 20,
            }
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return create_app(model_dir, db_path, frame=frame)

    FloorServer().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="folder with manifest.toml and the skops artifact")
    parser.add_argument("--db", type=Path, required=True, help="SQLite file to write decisions to")
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=30)
    parser.add_argument("--frame", action="store_true",
                        help="the former floor: a one-row DataFrame through the whole pipeline's predict_proba")
    args = parser.parse_args()
    serve(args.model, args.db, bind=args.bind, workers=args.workers, timeout=args.timeout, frame=args.frame)


if __name__ == "__main__":
    main()
