"""Browser tests of the person's pages: a real served gateway, a real SMTP server, Debian's Chromium.

- `live`: `gateway serve` (2 gunicorn workers, dispatcher thread on) for the whole session, its email
  notices going to an aiosmtpd server on 127.0.0.1; the example model registered; agency and reviewer keys.
- `browser`: pytest-playwright's, launched from /usr/bin/chromium (never `playwright install`).
- `axe_violations`: axe-core as bundled by axe-playwright-python, only WCAG 2.1 A and AA rules.

Screenshots go to tests/artifacts/ (git-ignored); with GATEWAY_UPDATE_SCREENSHOTS=1 they are also
copied to examples/screenshots/ for the README.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.notifications.conftest import SMTPServer

from .live import LiveGateway, start_gateway

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
README_SCREENSHOTS = ROOT / "examples" / "screenshots"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
LANGUAGES = ("kk", "ru", "en")
NO_CHROMIUM = "no /usr/bin/chromium (apt-get install chromium); browser tests need Debian's Chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, never a downloaded one."""
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": ["--disable-gpu"]}


@pytest.fixture(scope="session")
def base_url() -> None:
    """No base URL: tests open absolute URLs of the served gateway. (Also replaces pytest-playwright's own
    fixture, a method of a class that pytest 9 warns about, and warnings are errors here.)"""
    return


@pytest.fixture(scope="session")
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, german_manifest: Path, smtp: SMTPServer) -> Iterator[LiveGateway]:
    """One served gateway for the session; tests make decisions about people of their own."""
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    folder = tmp_path_factory.mktemp("live-gateway")
    gateway = start_gateway(folder, german_manifest, smtp)
    try:
        yield gateway
    finally:
        gateway.http.close()
        gateway.server.stop()


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run the bundled axe-core on the page, WCAG 2.1 A/AA rules only; return its violations."""
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    options = {"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]}
    results = Axe().run(page, options=options)
    violations: list[dict[str, Any]] = results.response["violations"]
    return violations


def describe_violations(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v.get('impact')}): {v['help']} [{', '.join(t for t in v['tags'] if t.startswith('wcag'))}]")
        for node in v["nodes"][:8]:
            lines.append(f"    {' '.join(map(str, node['target']))}: {node['html'][:200]}")
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            if summary:
                lines.append(f"      {summary[:300]}")
        if len(v["nodes"]) > 8:
            lines.append(f"    … and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


@pytest.fixture
def check_axe() -> Callable[[Page, str], None]:
    def check(page: Page, what: str) -> None:
        violations = axe_violations(page)
        assert not violations, f"axe-core (WCAG 2.1 A/AA) on {what} ({page.url}):\n{describe_violations(violations)}"

    return check


def save_screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as tests/artifacts/<name>; copy it to examples/screenshots when asked to."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SCREENSHOTS / name)
    return path
