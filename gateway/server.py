"""Run the app under gunicorn, preloaded so model loading and compiled code are shared by workers."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


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
        "worker_class": "sync",
        "graceful_timeout": 20,
    }
    if access_log:
        options["accesslog"] = "-"
    GatewayServer(options).run()
