"""Running task kinds: threads of a `gateway worker` process, or a thread in every `gateway serve` worker.

Each kind gets ``settings.concurrency`` runner threads; each thread claims a batch, works it off, and
polls again (at once after a full batch, after the kind's poll interval otherwise, slower after errors).
SIGTERM (or ``Runner.stop``) lets every thread finish the job in hand and give back the rest of its batch.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from flask import Flask

from gateway.errors import ConfigError
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
    app.extensions[REGISTRY] = registry


def loop(kind: TaskKind) -> None:
    """Run one kind until its stop event is set: poll, at once again after a full batch."""
    s = kind.settings
    log.info("%s jobs: %s %s started (batch %d, lease %.0f s)", kind.name, kind.worker_role, kind.owner,
             s.batch_size, s.lease_s)
    kind.on_start()
    errors = 0
    try:
        while not kind.stopping.is_set():
            try:
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

    def __init__(self, app: Flask, names: Sequence[str] | None = None, *, yield_to: threading.Event | None = None,
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
                self.kinds.append(cls(app, settings=settings, stop=self.stop_event, yield_to=yield_to))
        self.threads = [threading.Thread(target=loop, args=(kind,), name=f"gateway-jobs-{kind.name}-{i}", daemon=True)
                        for i, kind in enumerate(self.kinds)]

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


class RequestGate:
    """WSGI middleware that keeps `idle` set while the process handles no request (runners yield to them)."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app
        self.idle = threading.Event()
        self.idle.set()
        self._active = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        with self._lock:
            self._active += 1
            self.idle.clear()
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            with self._lock:
                self._active -= 1
                if not self._active:
                    self.idle.set()


def thread_kinds(app: Flask) -> list[str]:
    """The kinds a serving process runs in its thread (GATEWAY_JOBS_THREAD_KINDS; deliver only while
    GATEWAY_NOTIFY_DISPATCHER_THREAD is on, as before the engine existed)."""
    if not app.config["JOBS_THREAD"]:
        return []
    names = [kinds(app).get(name).name for name in app.config["JOBS_THREAD_KINDS"]]
    if not app.config["NOTIFY_DISPATCHER_THREAD"]:
        names = [n for n in names if n != "deliver"]
    return names


def start_thread(app: Flask) -> Runner | None:
    """Start the jobs runner of a serving process (after fork) unless the config turns every kind off."""
    names = thread_kinds(app)
    if not names:
        return None
    ensure_logging()
    gate = RequestGate(app.wsgi_app)
    app.wsgi_app = gate  # type: ignore[method-assign]
    return Runner(app, names, yield_to=gate.idle).start()


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
