"""A review form sent with mistakes comes back with the person's input kept and every error findable:
listed in the summary with a link to its field, tied to the field by aria-describedby, marked invalid.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import LiveGateway
from .pages import (
    CORRECTED,
    GROUND,
    POINT_OF_VIEW,
    POINT_OF_VIEW_TEXT,
    open_link,
    submit_review,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]


@pytest.mark.parametrize("lang", ["kk", "ru"])
def test_errors_are_listed_linked_described_and_the_input_is_kept(live: LiveGateway, page: Page, lang: str) -> None:
    made = live.decide(lang)
    open_link(page, made["links"]["citizen"] + "&next=review")
    page.locator(POINT_OF_VIEW).fill(POINT_OF_VIEW_TEXT[lang])
    duration = page.locator(CORRECTED.format(feature="duration_months"))
    assert duration.get_attribute("max") == "120"
    duration.fill("500")  # above the feature's maximum; no ground ticked
    page.locator(CORRECTED.format(feature="savings")).select_option("500_to_1000")
    response = submit_review(page)
    assert response.status == 422, response.status
    assert live.decision(made["decision_id"])["reviews"] == [], "nothing is requested from an invalid form"

    summary = page.locator("div#error-summary")
    assert summary.get_attribute("role") == "alert"
    targets = summary.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert set(targets) == {"#ground-wrong_data", "#corrected-duration_months"}, targets

    grounds = page.locator("fieldset#contest_grounds")
    assert "contest_grounds-error" in (grounds.get_attribute("aria-describedby") or "")
    assert page.locator("#contest_grounds-error").inner_text().strip()
    assert duration.get_attribute("aria-invalid") == "true"
    assert "corrected-duration_months-error" in (duration.get_attribute("aria-describedby") or "")
    assert page.locator("#corrected-duration_months-error").inner_text().strip()

    # What the person typed and chose is still there.
    assert page.locator(POINT_OF_VIEW).input_value() == POINT_OF_VIEW_TEXT[lang]
    assert duration.input_value() == "500"
    assert page.locator(CORRECTED.format(feature="savings")).input_value() == "500_to_1000"
    assert page.locator("html").get_attribute("lang") == lang

    # A summary link takes the focus to its field (keyboard: Tab to it, Enter).
    summary.locator('a[href="#corrected-duration_months"]').focus()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "corrected-duration_months"

    # Corrected and sent again, it goes through.
    duration.fill("36")
    page.locator(GROUND.format(value="wrong_data")).check()
    submit_review(page)
    page.locator("#review-sent").wait_for()
    review = live.decision(made["decision_id"])["reviews"]
    assert len(review) == 1 and review[0]["contest_grounds"] == ["wrong_data"], review
