"""Real dispatcher processes for tests and benchmarks: an instance made in-process, `gateway worker` slots."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import create_app
from gateway.extensions import db
from tests.support.gateway_server import GATEWAY, ROOT, Instance


@dataclass
class Worker:
    """One `gateway worker` slot: a process that is killed and started again."""

    index: int
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    _log: Any = None

    def start(self) -> None:
        path = self.folder / f"worker-{self.index}-{len(self.logs)}.log"
        self.logs.append(path)
        self._log = open(path, "wb")  # noqa: SIM115 (closed when the process is reaped)
        self.process = subprocess.Popen([str(GATEWAY), "worker"], env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def started(self) -> bool:
        return "started (batch" in self.logs[-1].read_text(errors="replace")

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.started():
            assert self.process is not None and self.process.poll() is None, self.logs[-1].read_text()
            assert time.monotonic() < deadline, f"worker {self.index} did not start: {self.logs[-1].read_text()}"
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def kill_group(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self._log is not None and not self._log.closed:
            self._log.close()

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)


def provision_instance(folder: Path, manifest_path: Path, database_url: str | None = None, *, agency: str,
                       env: dict[str, str] | None = None) -> Instance:
    """An instance folder with secrets, a migrated database, the example model and one agency key.

    Done in this process (seconds) rather than with the CLI (tests/support/gateway_server.provision, which
    tests/reliability covers): what is under test here is the `gateway worker` and `gateway serve` processes.
    """
    from flask_migrate import upgrade

    from gateway import registry
    from gateway.auth import create_key
    from gateway.db import write_transaction
    from gateway.manifest import load_manifest
    from tests.support.registration import SERVED_AS

    folder.mkdir(parents=True)
    keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
    (folder / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in keys.items()))
    url = database_url or f"sqlite:///{folder / 'gateway.db'}"
    app = create_app({"DATABASE_URL": url, **keys})
    manifest, manifest_folder = load_manifest(manifest_path)
    manifest = manifest.model_copy(update=SERVED_AS)  # every decision (a decline too) is notified at once
    assert manifest.artifact and manifest.explanation.background
    with app.app_context():
        upgrade()
        with write_transaction():
            registry.register(manifest, (manifest_folder / manifest.artifact).read_bytes(),
                              (manifest_folder / manifest.explanation.background).read_bytes(), activate=True,
                              registered_by="tests")
        with write_transaction():
            _, key = create_key(name=agency, role="agency")
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(folder), **(env or {})}
    env.pop("GATEWAY_DATABASE_URL", None)
    if database_url is not None:
        env["GATEWAY_DATABASE_URL"] = database_url
    return Instance(folder=folder, env=env, key=key, database_url=database_url)
