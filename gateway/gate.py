"""A WSGI middleware that tells background work in a serving process when no request is being handled."""

from __future__ import annotations

import threading
from typing import Any


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
