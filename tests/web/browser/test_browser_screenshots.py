"""Screenshots of the decision page (kk) and the explanation page (ru) for people to look at.

Saved to tests/artifacts/ (git-ignored) on every run; with GATEWAY_UPDATE_SCREENSHOTS=1 also copied to
examples/screenshots/decision-kk.png and examples/screenshots/explanation-ru.png, which the README shows.
Beside each README screenshot, `<name>.headings.json` lists the page's headings when it was taken: a page
that gains or loses a section no longer matches it, and the test says the README's picture is out of date.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from .conftest import CHROMIUM, NO_CHROMIUM, README_SCREENSHOTS, save_screenshot
from .live import LiveGateway
from .pages import open_link

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]


@pytest.fixture
def desktop_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
    yield context.new_page()
    context.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize(("lang", "next_page", "name", "ready"), [
    ("kk", "", "decision-kk.png", "section#outcome"),
    ("ru", "explanation", "explanation-ru.png", "figure#chart svg"),
])
def test_screenshot(live: LiveGateway, desktop_page: Page, lang: str, next_page: str, name: str, ready: str) -> None:
    made = live.decide(lang)
    live.wait_mail(made["email"], "decision_notice")  # the page lists the notice as delivered
    open_link(desktop_page, made["links"]["citizen"] + (f"&next={next_page}" if next_page else ""))
    desktop_page.locator(ready).wait_for()
    desktop_page.evaluate("() => document.fonts.ready")
    path = save_screenshot(desktop_page, name)
    width, height = _png_size(path.read_bytes())
    assert width == 1100 and height >= 600, (width, height)
    assert (README_SCREENSHOTS / name).exists(), f"examples/screenshots/{name} (shown in the README) is missing"
    headings = desktop_page.locator("main#main").locator("h1, h2").all_inner_texts()
    sidecar = README_SCREENSHOTS / name.replace(".png", ".headings.json")
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
        sidecar.write_text(json.dumps(headings, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    shown = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else None
    assert shown == headings, (
        f"the README's {name} is out of date: the page's sections are now {headings}, the screenshot shows "
        f"{shown}; run GATEWAY_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest {__file__} and look at it")
