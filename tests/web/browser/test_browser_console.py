"""The officials' console in Chromium, on a served gateway: a reviewer signs in with a one-time link, takes
the next case, scores the corrected data, resolves it, and the person's page shows the new outcome; two
reviewers race for one case; an auditor searches, opens and exports. axe-core finds nothing on any page."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pandas as pd
import pytest
from playwright.sync_api import Browser, Page

from tests.support.gateway_server import GATEWAY, run

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import OUTCOME_LABELS, LiveGateway

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
REQUEST = {"point_of_view": "Жинағым бар, деректер ескірген.", "contest_grounds": ["wrong_data"],
           "corrected_data": {"savings": "500_to_1000", "duration_months": 12}}


def new_official(live: LiveGateway, role: str) -> str:
    """A new official's one-time sign-in link, as `gateway keys create --web` prints it."""
    out = run([str(GATEWAY), "keys", "create", "--role", role, "--name", f"{role}-{secrets.token_hex(4)}",
               "--body", "Review office", "--web"], env=live.instance.env)
    line = out.strip().splitlines()[-1]
    link = line.rsplit(" ", 1)[-1]
    assert link.startswith(f"{live.url}/signin/gws_"), out
    return link


def sign_in(page: Page, link: str, check_axe: Callable[[Page, str], None]) -> None:
    page.goto(link)
    check_axe(page, "the sign-in link page")
    page.locator("#signin-button").click()
    page.wait_for_load_state()


def case_waiting(live: LiveGateway) -> tuple[str, str]:
    made = live.decide("ru")
    resp = live.api("POST", f"/v1/decisions/{made['decision_id']}/reviews", live.agency_key, REQUEST)
    assert resp.status_code == 201, resp.text
    return made["decision_id"], resp.json()["review_id"]


def next_in_queue(live: LiveGateway, review_id: str) -> None:
    """Make `review_id` the case "take next" gives: the queue gives the case due first, and the session's served
    gateway holds the cases that earlier tests in this process left queued (which files those are depends on how
    the suite is spread over processes). They are claimed and resolved through the API first."""
    for (other,) in live.query("SELECT id FROM reviews WHERE kind = 'review' AND status = 'queued' AND id != ?",
                               review_id):
        live.resolve(other, live.claim(other)["fencing_token"])


def test_a_reviewer_signs_in_takes_the_next_case_rescores_and_resolves(
        live: LiveGateway, browser: Browser, check_axe: Callable[[Page, str], None]) -> None:
    decision_id, review_id = case_waiting(live)
    next_in_queue(live, review_id)
    context = browser.new_context(locale="ru-RU")
    page = context.new_page()
    sign_in(page, new_official(live, "reviewer"), check_axe)
    assert page.url.endswith("/console")
    assert page.locator("#queue").is_visible()
    check_axe(page, "the review queue")
    page.locator("#take-next").click()
    page.wait_for_url(f"**/console/cases/{review_id}")
    assert page.locator("#lease-left").is_visible()
    assert page.locator("tr.withheld").count() > 0  # the full explanation, withheld factors marked
    check_axe(page, "the case page")
    page.locator("#rescore-button").click()
    page.wait_for_url(f"**/console/cases/{review_id}*")
    assert page.locator("#rescore-outcome").is_visible()
    check_axe(page, "the case page with the re-score")
    page.locator("#outcome-changed").check()
    page.locator("#new_outcome").select_option("approved")
    page.locator("#reasons_kk").fill("Жинақ туралы деректер түзетілді.")
    page.locator("#reasons_ru").fill("Данные о сбережениях исправлены.")
    page.locator("#resolve-button").click()  # without the checkbox: refused, nothing recorded
    assert page.locator("#point_of_view_considered-error").is_visible()
    check_axe(page, "the case page with errors")
    page.locator("#point_of_view_considered").check()
    page.locator("#resolve-button").click()
    page.wait_for_url("**resolved=1")
    assert page.locator("#resolved").is_visible()
    (status, outcome), = live.query("SELECT status, outcome FROM reviews WHERE id = ?", review_id)
    assert (status, outcome) == ("resolved", "changed")
    # The person's page shows the new outcome.
    person = browser.new_context().new_page()
    person.goto(live.personal_link(decision_id))
    assert OUTCOME_LABELS["approved"]["kk"] in person.locator("section#outcome").inner_text() or \
        OUTCOME_LABELS["approved"]["ru"] in person.locator("section#outcome").inner_text()
    context.close()


def test_two_reviewers_race_for_one_case(live: LiveGateway, browser: Browser,
                                          check_axe: Callable[[Page, str], None]) -> None:
    _, review_id = case_waiting(live)
    pages = []
    for _ in range(2):
        page = browser.new_context().new_page()
        sign_in(page, new_official(live, "reviewer"), check_axe)
        page.goto(f"{live.url}/console/cases/{review_id}")
        assert page.locator("#claim").is_visible()
        pages.append(page)
    first, second = pages
    first.locator("#claim").click()
    second.locator("#claim").click()
    first.wait_for_load_state()
    second.wait_for_load_state()
    assert first.locator("#lease-left").is_visible()
    assert second.locator("#problem").is_visible() and not second.locator("#resolve-form").is_visible()
    check_axe(second, "the case page of the reviewer who lost the race")
    (fencing,), = live.query("SELECT fencing_token FROM reviews WHERE id = ?", review_id)
    assert fencing == 1
    first.locator("#release").click()  # give it back for the tests that follow


def test_an_auditor_searches_opens_and_exports(live: LiveGateway, browser: Browser,
                                               check_axe: Callable[[Page, str], None]) -> None:
    decision_id, _ = case_waiting(live)
    page = browser.new_context().new_page()
    sign_in(page, new_official(live, "auditor"), check_axe)
    assert page.url.endswith("/audit")
    check_axe(page, "the audit search")
    page.locator(f'tr[data-decision-id="{decision_id}"] a').click()
    page.wait_for_url(f"**/audit/decisions/{decision_id}")
    assert page.locator("#access-log").is_visible()
    check_axe(page, "the audit decision page")
    page.goto(f"{live.url}/audit")
    with page.expect_download() as got:
        page.locator("#export-csv").click()
    csv_frame = pd.read_csv(got.value.path(), keep_default_na=False)
    with page.expect_download() as got:
        page.locator("#export-parquet").click()
    parquet_frame = pd.read_parquet(got.value.path())
    (total,), = live.query("SELECT count(*) FROM decisions")
    assert len(csv_frame) == len(parquet_frame) == total
    assert csv_frame["decision_id"].tolist() == parquet_frame["decision_id"].tolist()
    assert decision_id in set(csv_frame["decision_id"])
