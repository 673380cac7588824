"""The floor: the least a durable scoring service must do per decision, served the way the gateway is.

One endpoint, ``POST /decide``: parse the JSON body, build the same one-row pandas DataFrame the gateway
builds (manifest column order, numbers as float), call the same pipeline's ``predict_proba``, insert one
row (id, score, inputs JSON, created_at) into its own SQLite file in WAL mode with ``synchronous=FULL``
under ``BEGIN IMMEDIATE``, answer 201 JSON. No validation, no authentication, no idempotency, no
notice, no audit log: everything the gateway adds is measured against this.

    python bench/floor_app.py --model DIR --db FILE [--bind 127.0.0.1:0] [--workers 2]

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


def create_app(model_dir: Path, db_path: Path) -> Any:
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
        frame = pd.DataFrame.from_records(
            [[float(features[n]) if n in numeric else features[n] for n in names]], columns=names
        )
        score = float(pipeline.predict_proba(frame)[0, positive])
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


def serve(model_dir: Path, db_path: Path, *, bind: str, workers: int, timeout: int) -> None:
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
            return create_app(model_dir, db_path)

    FloorServer().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="folder with manifest.toml and the skops artifact")
    parser.add_argument("--db", type=Path, required=True, help="SQLite file to write decisions to")
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=30)
    args = parser.parse_args()
    serve(args.model, args.db, bind=args.bind, workers=args.workers, timeout=args.timeout)


if __name__ == "__main__":
    main()
