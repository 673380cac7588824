"""Run the app under gunicorn, preloaded so model loading and compiled code are shared by workers."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.sync import SyncWorker


class GatewayServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.application: Any = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # gunicorn >= 24 opens a control socket in ~/.gunicorn by default: nothing here uses it, and two
        # servers on one machine would share its path.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        if self.application is None:
            from gateway import runtime
            from gateway.app import create_app
            from gateway.extensions import db
            from gateway.security import warn_unshared_limits

            app = create_app()
            warn_unshared_limits(app, int(self.options.get("workers") or 1))
            loaded = runtime.warm(app)
            app.logger.warning("gateway: models loaded before fork: %s", ", ".join(loaded) or "none")
            with app.app_context():
                db.engine.dispose()  # workers open their own connections
            self.application = app
        return self.application


class GatewayWorker(SyncWorker):  # type: ignore[misc]
    """Gunicorn's sync worker that leaves new connections to the instance's other workers while its own jobs
    thread is working.

    An instance's jobs thread runs in one of its workers (GATEWAY_JOBS_THREAD_WORKERS, fewer than the workers).
    A request that worker accepts while its thread renders notices or decides a batch chunk waits for the
    interpreter lock behind it (up to Python's 5 ms switch interval at a time), while another worker may be
    idle. So before it accepts, the worker holding the thread waits until the thread's batch is done, at most
    ``background_wait_s``: all workers listen on one socket, and an idle worker takes the connection meanwhile
    (this one then finds none and goes back to waiting). When every worker is busy, it accepts after the wait
    at most, as before. bench/decision_latency.py measures the effect.
    """

    background_wait_s = 0.02
    gateway_gate: Any = None  # the worker's RequestGate when its jobs thread should not share it with requests

    def accept(self, listener: Any) -> None:
        if self.gateway_gate is not None:
            self.gateway_gate.background_free.wait(self.background_wait_s)
        super().accept(listener)


def _post_fork(server: Any, worker: Any) -> None:
    from gateway.extensions import db
    from gateway.jobs import runner

    app = server.app.application
    with app.app_context():
        db.engine.dispose(close=False)
    # Threads don't survive fork: the jobs runner (deliver, explain, ...: GATEWAY_JOBS_THREAD_KINDS) starts after it,
    # in the worker that takes a free jobs-thread slot (GATEWAY_JOBS_THREAD_WORKERS; the others wait for one);
    # GATEWAY_JOBS_THREAD=0: none, GATEWAY_NOTIFY_DISPATCHER_THREAD=0: no delivery.
    worker.gateway_jobs = runner.start_thread(app)
    if isinstance(worker.gateway_jobs, runner.SlotRunner) and len(worker.gateway_jobs.paths) < server.cfg.workers:
        worker.gateway_gate = worker.gateway_jobs.gate  # other workers of the instance run no jobs thread


def _worker_exit(server: Any, worker: Any) -> None:
    jobs = getattr(worker, "gateway_jobs", None)
    if jobs is not None and not jobs.stop(timeout=15):
        server.log.warning("background jobs of worker %s did not stop in time; their claims expire", worker.pid)


def serve(*, bind: str, workers: int, timeout: int, access_log: bool) -> None:
    options: dict[str, Any] = {
        "bind": bind,
        "workers": workers,
        "timeout": timeout,
        "preload_app": True,
        "post_fork": _post_fork,
        "worker_exit": _worker_exit,
        "worker_class": GatewayWorker,
        "graceful_timeout": 20,
    }
    if access_log:
        options["accesslog"] = "-"
        # gunicorn's default line, then the answering worker's <pid> (the workers' own log lines carry it too)
        options["access_log_format"] = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(p)s'
    GatewayServer(options).run()
