"""The bundled docs UI works in a real browser under its Content-Security-Policy (Debian's Chromium)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import Gateway

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"),
]


@pytest.fixture
def served(gateway: Gateway) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, gateway.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_swagger_ui_renders_every_operation_without_a_csp_violation(served: str) -> None:
    done = subprocess.run(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000",
         "--dump-dom", f"{served}/docs/swagger"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "Decision-rights gateway" in dom
    assert dom.count('class="opblock ') >= 20  # every operation of the document is listed
    violations = [line for line in done.stderr.splitlines() if "Content Security Policy" in line]
    assert not violations, "\n".join(violations)
