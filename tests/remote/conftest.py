"""Real model servers for the remote adapters: MLServer and MLflow, each in a virtualenv of its own.

The virtualenvs are built once (then reused) under .cache/peers from the project's own requirement files
(tests/peers/*.txt) with pip as configured on the machine, with scikit-learn, numpy and pandas pinned to
this environment's versions so that the pipeline the tests save loads there as fitted. A virtualenv that
cannot be built skips the tests that need it, saying why. Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.support import remote_kinds
from tests.support.remote_kinds import KindModel
from tests.support.remote_models import SmallModel

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("GATEWAY_TEST_PEERS_DIR", ROOT / ".cache" / "peers"))
REQUIREMENTS = ROOT / "tests" / "peers"
BUILD_TIMEOUT_S = 1500


def _pins() -> list[str]:
    return [f"{name}=={version(name)}" for name in ("scikit-learn", "numpy", "pandas", "joblib")]


def peer_venv(name: str) -> Path:
    """The virtualenv of one peer server, built from tests/peers/NAME.txt unless already built from it.

    Test processes running side by side (`make test` runs several) take turns on a lock file: one builds,
    the others wait for it and then find the virtualenv built."""
    PEERS.mkdir(parents=True, exist_ok=True)
    with open(PEERS / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        return _build_peer_venv(name)


def _build_peer_venv(name: str) -> Path:
    requirements = REQUIREMENTS / f"{name}.txt"
    folder = PEERS / name
    key = hashlib.sha256(json.dumps([requirements.read_text(), _pins(), sys.version]).encode()).hexdigest()
    stamp = folder / ".built"
    if stamp.exists() and stamp.read_text() == key:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    log = PEERS / f"{name}-build.log"
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        with open(log, "wb") as out:
            subprocess.run([base, "-m", "venv", str(folder)], check=True, stdout=out, stderr=subprocess.STDOUT,
                           timeout=120)
            subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r",
                            str(requirements), *_pins()], check=True, stdout=out, stderr=subprocess.STDOUT,
                           timeout=BUILD_TIMEOUT_S)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        pytest.skip(f"the {name} peer virtualenv could not be built from tests/peers/{name}.txt ({exc}): {tail}")
    stamp.write_text(key)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


class PeerServer:
    """A model server process started in a session of its own (stopped with its whole process group)."""

    def __init__(self, name: str, venv: Path, folder: Path, port: int, ready_path: str) -> None:
        self.name, self.venv, self.folder, self.port, self.ready_path = name, venv, folder, port, ready_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 120) -> PeerServer:
        env = {**os.environ, "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}",
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_TRACKING_URI": str(self.folder / "mlruns")}
        env.pop("VIRTUAL_ENV", None)
        out = open(self.log, "ab")  # noqa: SIM115 - the child holds it; closed when the process ends
        self.process = subprocess.Popen(self.command(), cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while _get(self.url + self.ready_path) != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                pytest.fail(f"{self.name} did not start: {tail}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        deadline = time.monotonic() + 10
        while _get(self.url + self.ready_path, timeout=0.5) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)


class MLServer(PeerServer):
    """MLServer 1.7.1 with its scikit-learn runtime serving the small pipeline as model `credit`."""

    def __init__(self, venv: Path, folder: Path, model: SmallModel) -> None:
        super().__init__("mlserver", venv, folder, free_port(), "/v2/models/credit/ready")
        (folder / "credit").mkdir(parents=True, exist_ok=True)
        (folder / "credit" / "model.joblib").write_bytes(model.joblib_bytes())
        (folder / "settings.json").write_text(json.dumps({
            "http_port": self.port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
            "parallel_workers": 0, "debug": False}))
        self.set_version("v1")

    def set_version(self, model_version: str) -> None:
        (self.folder / "credit" / "model-settings.json").write_text(json.dumps({
            "name": "credit", "implementation": "mlserver_sklearn.SKLearnModel", "platform": "sklearn",
            "versions": [model_version], "parameters": {"uri": "./model.joblib", "version": model_version}}))

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "mlserver"), "start", "."]


class MlflowServer(PeerServer):
    """`mlflow models serve --env-manager local` serving the small pipeline (skops format, with signature)."""

    def __init__(self, venv: Path, folder: Path, model: Any) -> None:
        super().__init__("mlflow", venv, folder, free_port(), "/ping")
        self.model_dir = folder / "model-a"
        self.save(model.pipeline, self.model_dir, model)

    def save(self, pipeline: Any, target: Path, model: Any) -> None:
        """Save `pipeline` as an MLflow model answering `model.method` (predict_proba unless it says)."""
        import joblib

        joblib.dump(pipeline, self.folder / "pipeline.joblib")
        (self.folder / "example.csv").write_bytes(model.background_csv)
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([str(self.venv / "bin" / "python"), str(REQUIREMENTS / "save_mlflow_model.py"),
                        str(self.folder / "pipeline.joblib"), str(self.folder / "example.csv"), str(target),
                        getattr(model, "method", "predict_proba")],
                       check=True, cwd=self.folder, timeout=300, capture_output=True,
                       env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "mlflow"), "models", "serve", "-m", str(self.model_dir), "--env-manager",
                "local", "-h", "127.0.0.1", "-p", str(self.port), "-w", "1"]


class KindsMLServer(PeerServer):
    """MLServer serving the multi-class and regression models (tests/support/remote_kinds.py) by their names."""

    def __init__(self, venv: Path, folder: Path, models: dict[str, Any]) -> None:
        super().__init__("mlserver", venv, folder, free_port(), "/v2/health/ready")
        for name, model in models.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / "model.joblib").write_bytes(model.joblib_bytes())
            (folder / name / "model-settings.json").write_text(json.dumps({
                "name": name, "implementation": "mlserver_sklearn.SKLearnModel", "platform": "sklearn",
                "versions": ["v1"], "parameters": {"uri": "./model.joblib", "version": "v1"}}))
        (folder / "settings.json").write_text(json.dumps({
            "http_port": self.port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
            "parallel_workers": 0, "debug": False}))

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "mlserver"), "start", "."]


@pytest.fixture(scope="session")
def kind_models() -> dict[str, KindModel]:
    return remote_kinds.kind_models()


@pytest.fixture(scope="session")
def kinds_mlserver(tmp_path_factory: pytest.TempPathFactory, kind_models: dict[str, KindModel]) -> Iterator[KindsMLServer]:
    server = KindsMLServer(peer_venv("mlserver"), tmp_path_factory.mktemp("kinds-mlserver"), kind_models)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kinds_mlflow(tmp_path_factory: pytest.TempPathFactory,
                 kind_models: dict[str, KindModel]) -> Iterator[dict[str, MlflowServer]]:
    """One MLflow scoring server per model (a server serves one model)."""
    venv = peer_venv("mlflow")
    servers: dict[str, MlflowServer] = {}
    try:
        for name, model in kind_models.items():
            servers[name] = MlflowServer(venv, tmp_path_factory.mktemp(f"kinds-mlflow-{name}"), model).start()  # type: ignore[assignment]
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def small_model() -> SmallModel:
    return SmallModel()


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory, small_model: SmallModel) -> Iterator[MLServer]:
    server = MLServer(peer_venv("mlserver"), tmp_path_factory.mktemp("mlserver"), small_model)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, small_model: SmallModel) -> Iterator[MlflowServer]:
    server = MlflowServer(peer_venv("mlflow"), tmp_path_factory.mktemp("mlflow"), small_model)
    server.start()
    yield server
    server.stop()
