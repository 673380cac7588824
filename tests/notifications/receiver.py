"""A real webhook receiver (threaded http.server) for tests and benchmarks.

It verifies every request with the standardwebhooks verifier, answers a seeded share of requests with
500 on purpose, and records what it accepted: webhook-id, payload and time. Only the standard library
and standardwebhooks are imported, so benchmark and test processes can share it.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass(frozen=True)
class Delivery:
    """One accepted request."""

    webhook_id: str
    payload: dict[str, Any]
    at: float  # time.monotonic() when accepted


@dataclass
class WebhookReceiver:
    """Accept signed webhooks on 127.0.0.1; fail `fail_rate` of requests (seeded); verify every signature."""

    secret: str
    fail_rate: float = 0.0
    seed: int = 0
    verify: bool = True
    deliveries: list[Delivery] = field(default_factory=list)
    requests: int = 0
    failed_on_purpose: int = 0
    bad_signatures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._webhook = Webhook(self.secret)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/citizens"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver
            disable_nagle_algorithm = True  # headers and body go out in two writes: don't wait 40 ms for an ACK

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender was killed mid-request: nothing was delivered or forged
                    self.close_connection = True
                    return
                self._answer(*receiver.handle(body, {k.lower(): v for k, v in self.headers.items()}))

            def do_GET(self) -> None:  # the counts, for a receiver running in a process of its own
                self._answer(200, json.dumps(receiver.stats()).encode())

            def _answer(self, status: int, text: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A sender killed mid-request resets its connection: expected here, not worth a traceback."""

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
            fail = self._rng.random() < self.fail_rate
            if fail:
                self.failed_on_purpose += 1
        if fail:
            return 500, b"failing on purpose"
        if self.verify:
            try:
                payload = self._webhook.verify(body, headers)
            except WebhookVerificationError as exc:
                with self._lock:
                    self.bad_signatures.append(f"{headers.get('webhook-id')}: {exc}")
                return 401, b"bad signature"
        else:
            payload = json.loads(body)
        with self._lock:
            self.deliveries.append(Delivery(headers.get("webhook-id", ""), payload, time.monotonic()))
        return 200, b"ok"

    def accepted(self) -> int:
        with self._lock:
            return len(self.deliveries)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"accepted": len(self.deliveries), "distinct": len({d.webhook_id for d in self.deliveries}),
                    "requests": self.requests, "failed_on_purpose": self.failed_on_purpose,
                    "bad_signatures": len(self.bad_signatures)}

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """`python -m tests.notifications.receiver SECRET`: print the URL, serve until stdin closes."""
    receiver = WebhookReceiver(sys.argv[1]).start()
    print(receiver.url, flush=True)
    sys.stdin.read()
    receiver.stop()


if __name__ == "__main__":
    main()
