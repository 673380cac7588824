"""Real gateway instances for reliability tests and benchmarks.

Everything here goes through the documented command line (``train.py --out``, ``gateway init``,
``gateway db upgrade``, ``gateway models register``, ``gateway keys create``, ``gateway serve``), so
what is tested and measured is what an operator runs. Servers are started in a session of their own
(``start_new_session=True``): stopping one signals its whole process group, master and workers. On
Linux a server also gets SIGTERM when the thread that started it ends, so a killed test run leaves none.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tests.support.registration import SERVED_AS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "german_credit"
TRAIN_SCRIPT = EXAMPLE / "train.py"
SAMPLE_REQUEST = EXAMPLE / "sample_request.json"
# The console scripts installed next to the interpreter that runs us (the project's virtualenv).
BIN = Path(sys.executable).parent
GATEWAY = BIN / "gateway"
MODEL_NAME = "german-credit"
DECISIONS_PATH = f"/v1/models/{MODEL_NAME}/decisions"
VALID_IINS = ("921029350851", "061211600012")
# Rate limits high enough never to refuse a test's or a benchmark's own traffic (the limiter still runs).
UNLIMITED_RATES = {"GATEWAY_RATELIMIT_DECISIONS": "100000000/minute", "GATEWAY_RATELIMIT_PER_CALLER": "100000000/minute"}

_LISTENING = re.compile(r"Listening at: http://[^\s:]+:(\d+)")


class ServerError(RuntimeError):
    """A server process did not start or stop as expected; the message ends with its log."""


# --------------------------------------------------------------------------------------------------
# the example model and requests for it


def train_example_model(out_dir: Path) -> Path:
    """Train the German-credit example into `out_dir` with its own script; return the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run([sys.executable, str(TRAIN_SCRIPT), "--out", str(out_dir)], env=dict(os.environ), timeout=300)
    manifest = out_dir / "manifest.toml"
    if not manifest.is_file():
        raise ServerError(f"{TRAIN_SCRIPT} --out {out_dir} wrote no manifest.toml")
    return manifest


def example_rows(manifest_path: Path) -> list[dict[str, Any]]:
    """Return the real applications of the model's background file, typed as a caller sends them (its
    `features`; no `monitoring` values, which are optional)."""
    with open(manifest_path, "rb") as fh:
        manifest = tomllib.load(fh)
    # The model's inputs only: monitor-only features (the example's `sex`) are not in the background file.
    types = {f["name"]: f for f in manifest["features"] if not f.get("monitor_only")}
    background = manifest_path.parent / manifest["explanation"]["background"]
    rows: list[dict[str, Any]] = []
    with open(background, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for name, feature in types.items():
                text = raw[name]
                if feature["type"] == "number":
                    number = float(text)
                    row[name] = int(number) if feature.get("integer") or number.is_integer() else number
                elif feature["type"] == "boolean":
                    row[name] = text.strip().lower() in ("1", "true", "yes")
                else:
                    row[name] = text
            rows.append(row)
    if not rows:
        raise ServerError(f"{background} has no rows")
    return rows


def valid_iin(n: int) -> str:
    """Return a valid IIN, different for each n (a real birth date, century digit 3-6, a check digit)."""
    from gateway.identity import iin_check_digit, validate_iin

    i = n
    while True:
        year = 50 + i % 50  # born 1950-1999 (digit 3/4) or 2000-2049 cut to the past below
        month = 1 + (i // 50) % 12
        day = 1 + (i // 600) % 28
        century_digit = "3" if i % 2 == 0 else "4"
        first11 = f"{year % 100:02d}{month:02d}{day:02d}{century_digit}{(i * 7919) % 10000:04d}"
        check = iin_check_digit(first11)
        if check is not None:
            return validate_iin(first11 + str(check))
        i += 100_003  # this serial has no valid check digit: try another one


def decision_body(
    features: dict[str, Any],
    *,
    iin: str = VALID_IINS[0],
    language: str = "kk",
    contact: dict[str, str] | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """Return the JSON body of a decision request (the shape of examples/german_credit/sample_request.json)."""
    body: dict[str, Any] = {
        "subject": {"iin": iin, "language": language, "contact": contact or {"email": "citizen@example.kz"}},
        "features": dict(features),
    }
    if reference is not None:
        body["reference"] = reference
    return body


# --------------------------------------------------------------------------------------------------
# instances


@dataclass
class Instance:
    """A provisioned gateway: its instance folder, its environment, its database and an agency key."""

    folder: Path
    env: dict[str, str]
    key: str
    database_url: str | None = None

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file (only when no GATEWAY_DATABASE_URL was given)."""
        if self.database_url is not None:
            raise ValueError("this instance uses GATEWAY_DATABASE_URL, not the instance folder's SQLite file")
        return self.folder / "gateway.db"


def run(argv: Sequence[str], *, env: dict[str, str], timeout: float = 120) -> str:
    """Run a command to completion; return its stdout, or raise ServerError with its output."""
    done = subprocess.run(list(argv), check=False, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise ServerError(f"{' '.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def served_as_medium_risk(manifest: Path) -> Path:
    """A copy of the example's manifest, beside it, served as medium-risk with every decision taking effect at
    once (SERVED_AS, as the in-process fixture serves it: tests/conftest.py); these instances stress the decision
    path."""
    data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    data.update(SERVED_AS)
    copy = manifest.with_name(manifest.stem + ".medium.toml")
    copy.write_text(tomli_w.dumps(data), encoding="utf-8")
    return copy


def provision(
    folder: Path,
    manifest: Path,
    *,
    database_url: str | None = None,
    client_name: str = "reliability-agency",
    extra_env: dict[str, str] | None = None,
) -> Instance:
    """Make a fresh instance: secrets, migrated database, the model registered and active, an agency key."""
    folder.mkdir(parents=True, exist_ok=True)
    # These instances measure and stress the decision path; one key sends far more than an agency's default
    # budget (RATELIMIT_DECISIONS), so raise it: the limiter still runs, nobody is refused.
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(folder), **UNLIMITED_RATES, **(extra_env or {})}
    env.pop("GATEWAY_DATABASE_URL", None)
    if database_url is not None:
        env["GATEWAY_DATABASE_URL"] = database_url
    gateway = str(GATEWAY)
    run([gateway, "init"], env=env)
    run([gateway, "db", "upgrade"], env=env)
    # Registering the model and creating the key are independent writes (the CLI takes the write
    # lock up front): run them side by side, each command costs seconds of imports.
    register = subprocess.Popen(
        [gateway, "models", "register", str(served_as_medium_risk(manifest)), "--activate"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        key = run([gateway, "keys", "create", "--role", "agency", "--name", client_name], env=env).strip()
    finally:
        out, err = register.communicate(timeout=120)
    if register.returncode != 0:
        raise ServerError(f"gateway models register exited {register.returncode}\n{out}\n{err}")
    if not key.startswith("gwk_"):
        raise ServerError(f"gateway keys create printed no key: {key!r}")
    return Instance(folder=folder, env=env, key=key, database_url=database_url)


# --------------------------------------------------------------------------------------------------
# server processes


def child_pids(pid: int) -> list[int]:
    """Return the direct children of `pid` (gunicorn's workers, when `pid` is its master)."""
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                children += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        return []
    return sorted(set(children))


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU time used so far by process `pid` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ServerProcess:
    """A gunicorn master started in its own session, its log file and the port it listens on."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_path: str = "/readyz"
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    _log: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        """Start the server and wait until it listens and its readiness endpoint answers 200."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> ServerProcess:
        """Start the server without waiting (several servers then start side by side). Launch from the thread
        that outlives the server: the server gets SIGTERM when that thread ends (see _die_with_parent)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent(),  # noqa: PLW1509 - one pre-resolved libc call
        )
        return self

    def wait_ready(self, timeout: float = 60) -> ServerProcess:
        """Wait until the launched server listens and its readiness endpoint answers 200."""
        deadline = time.monotonic() + timeout
        while not self.port:
            self._check_alive()
            found = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
            elif time.monotonic() > deadline:
                self._fail(f"did not listen within {timeout:.0f} s")
            else:
                time.sleep(0.05)
        while not self._ready():
            self._check_alive()
            if time.monotonic() > deadline:
                self._fail(f"{self.ready_path} did not answer 200 within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def workers(self) -> list[int]:
        """The master's current worker pids."""
        return child_pids(self.pid)

    def wait_workers(self, count: int, *, exclude: Sequence[int] = (), timeout: float = 20) -> list[int]:
        """Wait until `count` workers run, none of them in `exclude`; return their pids."""
        deadline = time.monotonic() + timeout
        while True:
            current = [p for p in self.workers() if p not in exclude]
            if len(current) >= count:
                return current
            self._check_alive()
            if time.monotonic() > deadline:
                self._fail(f"{count} workers not running within {timeout:.0f} s (have {current})")
            time.sleep(0.02)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left of it; return the master's exit code."""
        if self.process is None:
            return None
        try:
            if self.process.poll() is None:
                _signal_group(self.pid, signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=timeout)
        finally:
            _signal_group(self.pid, signal.SIGKILL)  # stragglers (workers) and a master that ignored SIGTERM
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self._log is not None:
                self._log.close()
                self._log = None
        return self.process.returncode

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + self.ready_path, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            self._fail(f"exited with code {self.process.returncode}")

    def _fail(self, what: str) -> None:
        raise ServerError(f"server {' '.join(self.argv)} {what}; log:\n{self.log_tail()}")


def _die_with_parent() -> Any:
    """A preexec_fn asking Linux to SIGTERM the child when the thread that started it ends.

    A test run or benchmark killed without cleanup (a CI timeout's SIGTERM, say) then leaves no server
    behind: gunicorn's master shuts its workers down on SIGTERM. Elsewhere: None (no such request).
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now: nothing is looked up after fork
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def gateway_server(instance: Instance, log_path: Path, *, workers: int = 2, timeout: int = 30) -> ServerProcess:
    """A `gateway serve` process for `instance` on a free port of 127.0.0.1 (not started yet)."""
    argv = [str(GATEWAY), "serve", "--bind", "127.0.0.1:0", "--workers", str(workers), "--timeout", str(timeout)]
    return ServerProcess(argv=argv, env=instance.env, log_path=log_path)


@contextmanager
def running(server: ServerProcess, timeout: float = 60) -> Iterator[ServerProcess]:
    """Start `server`, yield it, and always stop its whole process group."""
    try:
        yield server.start(timeout=timeout)
    finally:
        server.stop()


def sample_request() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SAMPLE_REQUEST.read_text(encoding="utf-8"))
    return loaded
