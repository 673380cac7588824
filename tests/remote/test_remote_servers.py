"""Remote models on real servers: MLServer 1.7.1 (OIP v2, scikit-learn runtime) and MLflow's scoring server.

For each: decisions scored by the server, explanations computed by a real `gateway worker` process, the
server stopped mid-run (503, nothing recorded; the breaker opens and shows on /readyz; decisions recover
when the server is back), and the server's model changed (refused until the new version is registered).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from sklearn.base import clone

from gateway import create_app, registry
from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.manifest import Manifest
from tests.conftest import Gateway
from tests.remote.conftest import PeerServer
from tests.support.gateway_server import GATEWAY, ROOT, UNLIMITED_RATES
from tests.support.remote_models import FEATURES, NAME, SmallModel, _train_module

pytestmark = [pytest.mark.slow, pytest.mark.gateway_config(MODEL_ALLOW_PRIVATE=True)]
KINDS = ["mlserver", "mlflow"]
TABLES = ("decisions", "explanations", "notifications", "log_leaves", "idempotency_keys")


def server_for(request: pytest.FixtureRequest, kind: str) -> PeerServer:
    found: PeerServer = request.getfixturevalue("mlserver" if kind == "mlserver" else "mlflow_server")
    return found


def source_for(server: PeerServer, model: SmallModel, **extra: Any) -> dict[str, Any]:
    if server.name == "mlserver":
        return {"protocol": "oip_v2", "url": server.url, "model": "credit", "positive_index": model.positive_index,
                **extra}
    return {"protocol": "mlflow", "url": server.url, "positive_index": model.positive_index, **extra}


def register_http(gw: Gateway, model: SmallModel, source: dict[str, Any], version: str = "1") -> Any:
    sha = hashlib.sha256(model.background_csv).hexdigest()
    put = gw.client.put(f"/v1/blobs/{sha}", data=model.background_csv,
                        headers={**gw.auth("admin"), "Content-Type": "application/octet-stream"})
    assert put.status_code in (200, 201), put.get_json()
    return gw.client.post("/v1/models", json=model.manifest(source, version=version) | {"activate": True},
                          headers=gw.auth("admin"))


def counts(gw: Gateway) -> dict[str, int]:
    return {t: gw.count(t) for t in TABLES}


def expected_score(model: SmallModel, body: dict[str, Any], pipeline: Any = None) -> float:
    frame = pd.DataFrame([body["features"]])
    proba = (pipeline or model.pipeline).predict_proba(frame[list(model.background.columns)])
    return float(proba[0, model.positive_index])


# --- decisions explained by a real worker process ----------------------------------------------------

def provision(folder: Path, model: SmallModel, source: dict[str, Any]) -> tuple[Any, str, dict[str, str]]:
    """An instance folder (SQLite) with the remote model registered and active; (app, agency key, env)."""
    folder.mkdir(parents=True)
    keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
    (folder / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in keys.items())
                                      + "MODEL_ALLOW_PRIVATE = True\n")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'gateway.db'}", **keys, "MODEL_ALLOW_PRIVATE": True,
                      "RATELIMIT_ENABLED": False, "NOTIFY_ROUTES": {"email": "log"}})
    with app.app_context():
        upgrade()
        with write_transaction():
            registry.register(Manifest.model_validate(model.manifest(source)), None, model.background_csv,
                              activate=True, registered_by="tests")
        with write_transaction():
            _, key = create_key(name="remote-agency", role="agency")
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(folder), **UNLIMITED_RATES,
           "GATEWAY_NOTIFY_ROUTES": '{"email": "log"}', "GATEWAY_JOBS_EXPLAIN_POLL_INTERVAL_S": "0.05"}
    env.pop("GATEWAY_DATABASE_URL", None)
    return app, key, env


@contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen([str(GATEWAY), "worker", "--kinds", "explain"], env=env, cwd=ROOT,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.mark.parametrize("kind", KINDS)
def test_decisions_on_a_real_server_are_explained_by_a_worker_process(
        kind: str, request: pytest.FixtureRequest, small_model: SmallModel, tmp_path: Path) -> None:
    server = server_for(request, kind)
    app, key, env = provision(tmp_path / "instance", small_model, source_for(server, small_model))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    decided = {}
    for n in range(3):
        body = small_model.request(n)
        resp = client.post(f"/v1/models/{NAME}/decisions", json=body, headers={**auth, "Idempotency-Key": f"r{n}"})
        assert resp.status_code == 201, resp.get_json()
        assert resp.get_json()["score"] == pytest.approx(expected_score(small_model, body), abs=1e-12)
        decided[resp.get_json()["decision_id"]] = body
    for did in decided:
        assert client.get(f"/v1/decisions/{did}/explanation", headers=auth).status_code == 202
    log = tmp_path / "worker.log"
    with worker(env, log) as process:
        deadline = time.monotonic() + 120
        while True:
            with app.app_context():
                rows = db.session.execute(sa.text("SELECT decision_id, status, additivity_error, method, output "
                                                  "FROM explanations")).mappings().all()
                db.session.commit()
            if all(r["status"] == "ready" for r in rows):
                break
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not explained within 120 s: {log.read_text()[-3000:]}"
            time.sleep(0.2)
    for r in rows:
        assert r["method"] == "permutation_shap_estimate"
        assert r["additivity_error"] <= 1e-12
        assert r["output"] == pytest.approx(expected_score(small_model, decided[r["decision_id"]]), abs=1e-12)
    for did in decided:
        got = client.get(f"/v1/decisions/{did}/explanation?lang=ru", headers=auth)
        assert got.status_code == 200, got.get_json()
    with app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


# --- the server stopped mid-run -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_a_server_stopped_mid_run_refuses_decisions_opens_the_breaker_and_recovers(
        kind: str, request: pytest.FixtureRequest, gateway: Gateway, small_model: SmallModel) -> None:
    server = server_for(request, kind)
    source = source_for(server, small_model, breaker_failures=2, breaker_cooldown_s=3.0, connect_timeout_s=0.5)
    assert register_http(gateway, small_model, source).status_code == 201
    assert gateway.decide(small_model.request(0), model=NAME).status_code == 201
    before = counts(gateway)
    server.stop()
    try:
        codes = [gateway.decide(small_model.request(i), model=NAME) for i in range(3)]
        assert [r.status_code for r in codes] == [503, 503, 503]
        assert [r.get_json()["error"]["code"] for r in codes] == ["model_unreachable", "model_unreachable",
                                                                 "model_circuit_open"]
        assert counts(gateway) == before  # nothing recorded
        ready = gateway.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["models"][f"{NAME} 1"].startswith("circuit open: 2 consecutive")
    finally:
        server.start()
    time.sleep(3.05)  # the cool-down (3 s: slack for a loaded machine between the failures and the checks)
    body = small_model.request(5)
    resp = gateway.decide(body, model=NAME)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["score"] == pytest.approx(expected_score(small_model, body), abs=1e-12)
    assert gateway.client.get("/readyz").status_code == 200


# --- the server's model changed -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_a_changed_model_on_the_server_is_refused_until_registered(
        kind: str, request: pytest.FixtureRequest, gateway: Gateway, small_model: SmallModel) -> None:
    server: Any = server_for(request, kind)  # MLServer or MlflowServer (conftest)
    assert register_http(gateway, small_model, source_for(server, small_model)).status_code == 201
    assert gateway.decide(small_model.request(1), model=NAME).status_code == 201
    before = counts(gateway)
    other = clone(small_model.pipeline).set_params(model__C=0.01)
    Xall, y = _train_module().load_data(schema=small_model.schema)
    other.fit(Xall[FEATURES], y)  # another model of the same features: its answers differ
    server.stop()
    try:
        if server.name == "mlserver":
            server.set_version("v2")
        else:
            original = server.model_dir
            server.model_dir = server.folder / "model-b"
            server.save(other, server.model_dir, small_model)
        server.start()
        refused = gateway.decide(small_model.request(1), model=NAME)
        assert refused.status_code == 503, refused.get_json()
        assert refused.get_json()["error"]["code"] == "model_changed"
        assert counts(gateway) == before
        # An admin registers what the server now serves, as a new version: decisions go on with it.
        reg = register_http(gateway, small_model, source_for(server, small_model), version="2")
        assert reg.status_code == 201, reg.get_json()
        body = small_model.request(1)
        resp = gateway.decide(body, model=NAME)
        assert resp.status_code == 201, resp.get_json()
        assert resp.get_json()["model"]["version"] == "2"
        pipeline = small_model.pipeline if server.name == "mlserver" else other
        assert resp.get_json()["score"] == pytest.approx(expected_score(small_model, body, pipeline), abs=1e-12)
    finally:
        server.stop()
        if server.name == "mlserver":
            server.set_version("v1")
        else:
            server.model_dir = original
        server.start()
    assert counts(gateway)["decisions"] == before["decisions"] + 1
