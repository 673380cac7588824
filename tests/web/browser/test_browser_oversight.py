"""The confirmation queue and the oversight report in Chromium, on the served gateway: an officer takes the next
held decision, is refused a change without reasons, confirms it; an auditor opens the oversight report and
downloads it. axe-core finds nothing on any of these pages.

The held decisions are made by a low-autonomy copy of the model registered under a name of its own, so the
session's other browser tests (which decide with german-credit) are not held."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from gateway.manifest import load_manifest
from tests.support.gateway_server import GATEWAY, run, sample_request

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import LiveGateway
from .test_browser_console import new_official, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
HELD_MODEL = "german-credit-held"


def held_model(live: LiveGateway, german_manifest: Path) -> None:
    """Register (once per session) a low-autonomy copy of the German credit model: every decision is held."""
    if live.api("GET", f"/v1/models/{HELD_MODEL}", live.agency_key).status_code == 200:
        return
    admin = run([str(GATEWAY), "keys", "create", "--role", "admin", "--name", f"admin-{secrets.token_hex(4)}"],
                env=live.instance.env).strip()
    m, folder = load_manifest(german_manifest)
    body = m.model_dump(mode="json") | {"name": HELD_MODEL, "version": "1.0.0", "autonomy": "low", "activate": True}
    body.pop("role_of_ai")
    for data in ((folder / str(m.artifact)).read_bytes(), (folder / str(m.explanation.background)).read_bytes()):
        live.http.put(f"{live.url}/v1/blobs/{hashlib.sha256(data).hexdigest()}", content=data,
                      headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/octet-stream"})
    resp = live.api("POST", "/v1/models", admin, body)
    assert resp.status_code == 201, resp.text


def held_decision(live: LiveGateway) -> str:
    request = sample_request()
    request.pop("reference", None)
    resp = live.api("POST", f"/v1/models/{HELD_MODEL}/decisions", live.agency_key, request,
                    **{"Idempotency-Key": secrets.token_hex(12)})
    assert resp.status_code == 201, resp.text
    assert resp.json()["confirmation"] == "pending_confirmation"
    return str(resp.json()["decision_id"])


def test_an_officer_confirms_a_held_decision(live: LiveGateway, browser: Browser, german_manifest: Path,
                                             check_axe: Callable[[Page, str], None]) -> None:
    held_model(live, german_manifest)
    decision_id = held_decision(live)
    page = browser.new_context(locale="ru-RU").new_page()
    sign_in(page, new_official(live, "reviewer"), check_axe)
    page.goto(f"{live.url}/console/confirmations")
    assert page.locator("#confirmations").is_visible()
    check_axe(page, "the confirmation queue")
    page.locator("#take-next").click()
    page.wait_for_url("**/console/confirmations/rev_*")
    (review_id,), = live.query("SELECT id FROM reviews WHERE decision_id = ?", decision_id)
    assert page.url.endswith(f"/console/confirmations/{review_id}")
    assert page.locator("#lease-left").is_visible() and page.locator("tr.withheld").count() > 0
    check_axe(page, "the held decision")
    page.locator("#outcome-changed").check()
    page.locator("#new_outcome").select_option("approved")
    page.locator("#confirm-button").click()  # no reasons: refused, nothing recorded
    assert page.locator("#reasons_kk-error").is_visible()
    check_axe(page, "the held decision with errors")
    (status,), = live.query("SELECT status FROM reviews WHERE id = ?", review_id)
    assert status == "claimed"
    page.locator("#outcome-confirmed").check()
    page.locator("#confirm-button").click()
    page.wait_for_url("**confirmed=1")
    assert page.locator("#confirmed").is_visible()
    check_axe(page, "the confirmed decision")
    (confirmation,), = live.query("SELECT confirmation FROM decisions WHERE id = ?", decision_id)
    assert confirmation == "confirmed"


def test_an_auditor_reads_the_oversight_report(live: LiveGateway, browser: Browser, german_manifest: Path,
                                               check_axe: Callable[[Page, str], None]) -> None:
    held_model(live, german_manifest)
    held_decision(live)
    page = browser.new_context().new_page()
    sign_in(page, new_official(live, "auditor"), check_axe)
    page.goto(f"{live.url}/audit/report")
    check_axe(page, "the oversight report form")
    page.locator("#report-model").select_option(HELD_MODEL)
    page.locator("#report-button").click()  # no period: refused, each date named
    page.wait_for_load_state()
    assert page.locator("#error-summary").is_visible() and page.locator("#from-error").is_visible()
    check_axe(page, "the oversight report form with errors")
    today = dt.datetime.now(dt.UTC).date()
    page.locator("#report-from").fill((today - dt.timedelta(days=1)).isoformat())
    page.locator("#report-to").fill(today.isoformat())
    page.locator("#report-button").click()
    page.wait_for_url("**/audit/report?*")
    assert page.locator("#confirmations").is_visible() and page.locator("#incidents").is_visible()
    check_axe(page, "the oversight report")
    with page.expect_download() as got:
        page.locator("#report-json").click()
    report = json.loads(Path(got.value.path()).read_text())
    assert report["model"] == HELD_MODEL and report["data"]["decisions"] >= 1
