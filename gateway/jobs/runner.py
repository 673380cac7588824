"""Running task kinds: threads of a `gateway worker` process, or a thread in one `gateway serve` worker.

Each kind gets ``settings.concurrency`` runner threads; each thread claims a batch, works it off, and
polls again (at once after a full batch, after the kind's poll interval otherwise, slower after errors).
SIGTERM (or ``Runner.stop``) lets every thread finish the job in hand and give back the rest of its batch.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from types import FrameType
from typing import Any

from flask import Flask

from gateway.errors import ConfigError
from gateway.gate import RequestGate
from gateway.jobs.base import KindRegistry, KindSettings, TaskKind, UnknownTaskKind

log = logging.getLogger("gateway.jobs")
REGISTRY = "gateway.jobs"
LOGGERS = ("gateway.jobs", "gateway.notifications")


def kinds(app: Flask) -> KindRegistry:
    """The app's task kinds (registered by create_app)."""
    found: KindRegistry = app.extensions[REGISTRY]
    return found


def init_app(app: Flask, registry: KindRegistry) -> None:
    """Keep the app's task kinds and check every kind's settings now (a bad one stops the start)."""
    registry.check_config(app.config)
    names = app.config["JOBS_THREAD_KINDS"]
    if not isinstance(names, list | tuple):
        raise ConfigError('GATEWAY_JOBS_THREAD_KINDS must be a JSON list of task kinds, e.g. ["deliver", "explain"]')
    for name in names:
        try:
            registry.get(name)
        except UnknownTaskKind as exc:
            raise ConfigError(f"GATEWAY_JOBS_THREAD_KINDS: {exc}") from None
    slots = app.config["JOBS_THREAD_WORKERS"]
    if slots != "all" and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 1):
        raise ConfigError(f'GATEWAY_JOBS_THREAD_WORKERS must be a positive integer (how many `gateway serve` workers '
                          f'run the jobs thread) or "all", not {slots!r}')
    app.extensions[REGISTRY] = registry


def loop(kind: TaskKind, gate: RequestGate | None = None) -> None:
    """Run one kind until its stop event is set: poll, at once again after a full batch.

    `gate`: a serving process's (the jobs thread): each batch is marked as background work on it."""
    s = kind.settings
    log.info("%s jobs: %s %s started (batch %d, lease %.0f s)", kind.name, kind.worker_role, kind.owner,
             s.batch_size, s.lease_s)
    kind.on_start()
    errors = 0
    try:
        while not kind.stopping.is_set():
            try:
                with gate.background() if gate is not None else nullcontext():
                    claimed = kind.run_once()
                errors = 0
            except Exception:  # the database went away: keep trying, slower
                errors += 1
                log.exception("%s jobs: %s %s: a batch failed (%d in a row)", kind.name, kind.worker_role,
                              kind.owner, errors)
                claimed = 0
            if claimed < s.batch_size:
                kind.stopping.wait(s.poll_interval_s * min(2 ** errors, 60))
    finally:
        kind.close()
        log.info("%s jobs: %s %s stopped", kind.name, kind.worker_role, kind.owner)


class Runner:
    """Runner threads for the named kinds of one app, sharing one stop event."""

    def __init__(self, app: Flask, names: Sequence[str] | None = None, *, gate: RequestGate | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        registry = kinds(app)
        names = list(names) if names is not None else registry.names()
        self.stop_event = threading.Event()
        self.kinds: list[TaskKind] = []
        for name in names:
            cls = registry.get(name)
            settings: KindSettings = dataclasses.replace(
                cls.read_settings(app.config), **{k: v for k, v in (overrides or {}).items() if v is not None})
            for _ in range(settings.concurrency):
                self.kinds.append(cls(app, settings=settings, stop=self.stop_event,
                                      yield_to=gate.idle if gate is not None else None))
        self.threads = [threading.Thread(target=loop, args=(kind, gate), name=f"gateway-jobs-{kind.name}-{i}",
                                         daemon=True) for i, kind in enumerate(self.kinds)]

    def start(self) -> Runner:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask every thread to finish the job in hand; True when all ended within `timeout` (seconds)."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self.threads)


def ensure_logging() -> None:
    """Show the runners' INFO lines when nothing else configured logging (gunicorn, `gateway worker`)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # Flask's handler on "gateway" would print every line a second time


def thread_kinds(app: Flask) -> list[str]:
    """The kinds a serving process runs in its thread (GATEWAY_JOBS_THREAD_KINDS; deliver only while
    GATEWAY_NOTIFY_DISPATCHER_THREAD is on, as before the engine existed)."""
    if not app.config["JOBS_THREAD"]:
        return []
    names = [kinds(app).get(name).name for name in app.config["JOBS_THREAD_KINDS"]]
    if not app.config["NOTIFY_DISPATCHER_THREAD"]:
        names = [n for n in names if n != "deliver"]
    return names


class SlotRunner:
    """The jobs runner of a serving worker, run only while the worker holds one of its instance's slots.

    The serving workers of an instance share ``GATEWAY_JOBS_THREAD_WORKERS`` slots (default 1): lock files
    ``jobs-thread-<i>.lock`` in the instance folder, each held (``flock``) by the worker whose thread runs the
    background kinds. A worker that finds every slot taken waits in a thread, trying again every ``retry_s``,
    and starts its runner when a holder is gone (the kernel drops a dead process's locks), so background work
    goes on while any worker lives.

    Why not a thread in every worker: on SQLite every writing connection makes every other connection drop
    its page cache, and a jobs thread competes with its worker's requests for the interpreter lock; with one
    thread per instance (measured, bench/decision_latency.py on 2 cores, SQLite) the default's throughput rose
    about 10 % for the same notices delivered. Workers of other instances on the same folder share the slots.
    """

    def __init__(self, app: Flask, names: Sequence[str], gate: RequestGate, folder: str, slots: int,
                 retry_s: float = 1.0) -> None:
        self.app, self.names, self.gate = app, list(names), gate
        self.paths = [os.path.join(folder, f"jobs-thread-{i}.lock") for i in range(slots)]
        self.retry_s = retry_s
        self.runner: Runner | None = None
        self.slot: int | None = None
        self.stop_event = threading.Event()
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.waiter = threading.Thread(target=self._wait, name="gateway-jobs-slot", daemon=True)
        self.folder = folder

    def _start_runner(self) -> None:
        self.runner = Runner(self.app, self.names, gate=self.gate).start()

    def _take(self) -> bool:
        """Hold a free slot and start the runner; False when every slot is held by another worker.

        A folder where the slots cannot be made (read-only, missing) must not stop background work: the worker
        then runs its thread without a slot, as every worker did before slots, and says so."""
        for i, path in enumerate(self.paths):
            try:
                os.makedirs(self.folder, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.warning("jobs: worker %d cannot use the jobs-thread slots in %s (%s): it runs its jobs thread "
                            "without one", os.getpid(), self.folder, exc)
                with self._lock:
                    if not self.stop_event.is_set():
                        self._start_runner()
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            with self._lock:
                if self.stop_event.is_set():  # stopped meanwhile: start nothing
                    os.close(fd)
                    return True
                self._fd, self.slot = fd, i
                self._start_runner()
            return True
        return False

    def _wait(self) -> None:
        while not self.stop_event.wait(self.retry_s):
            if self._take():
                log.info("jobs: worker %d took jobs-thread slot %d of %d", os.getpid(), self.slot, len(self.paths))
                return

    def start(self) -> SlotRunner:
        if not self._take():
            log.info("jobs: worker %d runs no jobs thread: the %d jobs-thread slot(s) of this instance are held "
                     "(GATEWAY_JOBS_THREAD_WORKERS); it takes one if a holder exits", os.getpid(), len(self.paths))
            self.waiter.start()
        return self

    @property
    def running(self) -> bool:
        return self.runner is not None

    def stop(self, timeout: float | None = None) -> bool:
        """Stop waiting for a slot, or stop the runner and give its slot back; True when it ended in time."""
        with self._lock:
            self.stop_event.set()
            runner = self.runner
        ended = runner.stop(timeout) if runner is not None else True
        if ended and self._fd is not None:
            os.close(self._fd)  # closing the last descriptor of the file releases the lock
            self._fd = None
        return ended


def start_thread(app: Flask) -> Runner | SlotRunner | None:
    """Start the jobs runner of a serving process (after fork) unless the config turns every kind off:
    in at most GATEWAY_JOBS_THREAD_WORKERS workers of the instance (`SlotRunner`), or in every one ("all")."""
    names = thread_kinds(app)
    if not names:
        return None
    ensure_logging()
    gate = RequestGate(app.wsgi_app)
    app.wsgi_app = gate  # type: ignore[method-assign]
    slots = app.config["JOBS_THREAD_WORKERS"]
    if slots == "all":
        return Runner(app, names, gate=gate).start()
    return SlotRunner(app, names, gate, app.instance_path, int(slots)).start()


def run_worker(app: Flask, names: Sequence[str] | None = None, **overrides: Any) -> None:
    """Run the named kinds (default: all) in this process until SIGTERM or SIGINT; jobs in hand are finished."""
    ensure_logging()
    runner = Runner(app, names, overrides=overrides)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("worker: %s received, finishing the jobs in hand", signal.Signals(signum).name)
        runner.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runner.start()
    runner.stop_event.wait()
    runner.stop()
