"""The person downloads everything held about their decision from the page (a#data-link)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import LiveGateway
from .pages import open_link, request_review

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]


def test_the_download_holds_the_decision_explanation_review_and_access_log_but_never_the_iin(
        live: LiveGateway, page: Page) -> None:
    iin = "061211600012"
    made = live.decide("ru", iin=iin)
    decision_id = made["decision_id"]
    open_link(page, made["links"]["citizen"])
    request_review(page, live.url, decision_id, "ru")
    page.goto(f"{live.url}/d/{decision_id}")
    with page.expect_download() as started:
        page.locator("a#data-link").click()
    download = started.value
    assert download.suggested_filename == f"decision-{decision_id}.json"
    raw = Path(download.path()).read_text(encoding="utf-8")
    held = json.loads(raw)
    assert held["decision"]["decision_id"] == decision_id and held["decision"]["outcome"] == "declined"
    assert made["email"] in json.dumps(held["contact"], ensure_ascii=False)
    assert [f["feature"] for f in held["explanation"]["factors"]], held["explanation"]
    assert held["reviews"][0]["corrected_data"] == {"savings": "500_to_1000"}
    assert {e["what"] for e in held["access_log"]["events"]} >= {"decision"}, held["access_log"]
    assert iin not in raw, "the raw IIN is in the download: the gateway must not hold it"
