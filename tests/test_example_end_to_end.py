"""The `make run` path on a fresh instance: init, migrate, train + register the example, key, decide."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import create_app
from tests.conftest import ROOT, SAMPLE_REQUEST

BIN = Path(sys.executable).parent


def run(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def instance(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_INSTANCE_PATH"] = str(tmp_path)
    return env


def test_make_run_setup_then_a_decision(instance: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = str(BIN / "gateway")
    assert "wrote" in run([gw, "init"], instance)
    config = tmp_path / "config.py"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    before = config.read_text()
    assert "keeping it" in run([gw, "init"], instance) and config.read_text() == before

    run([gw, "db", "upgrade"], instance)
    first = run([sys.executable, "examples/setup_demo.py"], instance)
    assert "trained and registered" in first
    key = re.search(r"^\s+(gwk_\S+)$", first, re.M)
    assert key, first
    assert f"Bearer {key.group(1)}" in first and "/v1/models/german-credit/decisions" in first

    second = run([sys.executable, "examples/setup_demo.py"], instance)
    assert "already registered" in second and "gwk_" not in second  # a key is shown only when created

    assert re.search(r"^german-credit\t1\.0\.0\tactive\thigh\t", run([gw, "models", "list"], instance), re.M)

    for name, value in instance.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    resp = app.test_client().post(
        "/v1/models/german-credit/decisions",
        json=SAMPLE_REQUEST,
        headers={"Authorization": f"Bearer {key.group(1)}", "Idempotency-Key": "e2e-1"},
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["links"]["decision"].startswith("http://127.0.0.1:8080/v1/decisions/")
    # The example as shipped is high-risk: the sample's decline waits for an officer before any notice.
    assert resp.get_json()["outcome"] == "declined" and resp.get_json()["confirmation"] == "pending_confirmation"


def test_keys_are_shown_once_stored_hashed_and_revocable(instance: dict[str, str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    gw = str(BIN / "gateway")
    run([gw, "init"], instance)
    run([gw, "db", "upgrade"], instance)
    key = run([gw, "keys", "create", "--role", "auditor", "--name", "audit-office"], instance).strip()
    assert key.startswith("gwk_") and len(key) > 40
    listing = run([gw, "keys", "list"], instance)
    assert "audit-office\tauditor" in listing and key not in listing
    dump = "\n".join(sqlite3.connect(tmp_path / "gateway.db").iterdump())
    assert key not in dump and key[4:] not in dump

    duplicate = subprocess.run([gw, "keys", "create", "--role", "auditor", "--name", "audit-office"],
                               cwd=ROOT, env=instance, capture_output=True, text=True)
    assert duplicate.returncode != 0 and "exists already" in duplicate.stderr

    for name, value in instance.items():
        monkeypatch.setenv(name, value)
    client = create_app().test_client()
    assert client.get("/v1/decisions/dec_x", headers={"Authorization": f"Bearer {key}"}).status_code == 404
    run([gw, "keys", "revoke", "audit-office"], instance)
    assert client.get("/v1/decisions/dec_x", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert "revoked" in run([gw, "keys", "list"], instance)


def test_commands_fail_clearly_without_secrets(instance: dict[str, str]) -> None:
    proc = subprocess.run([str(BIN / "gateway"), "models", "list"], cwd=ROOT, env=instance, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "GATEWAY_SUBJECT_KEY is not set: run `gateway init`" in proc.stderr
    assert "Traceback" not in proc.stderr
