"""A serving process's requests and its background work, kept out of each other's way.

`RequestGate` wraps the WSGI app: background work (the jobs thread) sees when no request is being handled, and
the worker sees when background work is running, so that it can leave new connections to an idle worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class RequestGate:
    """WSGI middleware that keeps `idle` set while the process handles no request (runners yield to them),
    and `background_free` set while no background work runs in the process (`background()`)."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app
        self.idle = threading.Event()
        self.idle.set()
        self.background_free = threading.Event()
        self.background_free.set()
        self._active = 0
        self._working = 0
        self._lock = threading.Lock()

    @contextmanager
    def background(self) -> Iterator[None]:
        """Mark a unit of background work (a runner's batch) for as long as it runs."""
        with self._lock:
            self._working += 1
            self.background_free.clear()
        try:
            yield
        finally:
            with self._lock:
                self._working -= 1
                if not self._working:
                    self.background_free.set()

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
