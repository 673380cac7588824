"""End to end in Chromium: decision over the API → email notice → personal link → explanation → review
request with a corrected value → reviewer resolves over the API → the page and a new email show the outcome.
"""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import Page

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import GREETING, OUTCOME_LABELS, LiveGateway, date_texts, due_day, spaces, token_payload
from .pages import (
    POINT_OF_VIEW_TEXT,
    explanation_factors,
    fill_review,
    html_lang,
    main_text,
    open_link,
    submit_review,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]


def test_the_notice_arrives_by_smtp_in_the_persons_language_with_a_link_to_this_gateway(live: LiveGateway) -> None:
    """The served gateway's dispatcher thread delivers to the real SMTP server (no page needed)."""
    made = live.decide("kk")
    mail = live.wait_mail(made["email"], "decision_notice")
    assert mail.language == "kk" and mail.received.message["Content-Language"] == "kk"
    assert GREETING["kk"] in mail.text and OUTCOME_LABELS["declined"]["kk"] in mail.text
    link = mail.personal_link()
    assert link.startswith(f"{live.url}/d/{made['decision_id']}?token=gwc_")
    # Same grant as the link signed for the test (the signatures differ in their second-resolution timestamp).
    granted = token_payload(link)
    assert granted["d"] == made["decision_id"] and granted == token_payload(made["links"]["citizen"])


@pytest.mark.parametrize("lang", ["kk", "ru"])
def test_a_person_reads_the_explanation_requests_review_and_sees_the_outcome(live: LiveGateway, page: Page, lang: str) -> None:
    made = live.decide(lang)
    decision_id, email = made["decision_id"], made["email"]
    assert made["outcome"] == "declined"

    # The notice arrives in the person's language; its link opens the decision page, token-free.
    notice = live.wait_mail(email, "decision_notice")
    assert notice.language == lang and GREETING[lang] in notice.text
    open_link(page, notice.personal_link())
    assert html_lang(page) == lang
    assert OUTCOME_LABELS["declined"][lang] in page.locator("section#outcome").inner_text()

    # The explanation: the main factors the API gives, with their labels and values, in the same language.
    page.locator("a#explanation-link").click()
    page.wait_for_url(f"**/d/{decision_id}/explanation**")
    assert html_lang(page) == lang
    text = page.locator("ol#factors").inner_text()
    explanation = explanation_factors(live, decision_id, lang)
    assert explanation["factors"], explanation
    for factor in explanation["factors"]:
        assert factor["label"] in text, f"factor {factor['feature']} ({factor['label']}) is not on the page"
        assert factor["value"] in text, f"value {factor['value']!r} of {factor['feature']} is not on the page"
    if explanation["confidential"]:
        assert page.locator("#confidential").is_visible()

    # The review request, with a corrected value of a mutable feature.
    # (from the explanation's own link, as a person reading it would: not the page's navigation)
    page.locator(f'main#main p a[href="/d/{decision_id}/review"]').click()
    page.wait_for_url(f"**/d/{decision_id}/review**")
    assert html_lang(page) == lang
    fill_review(page, lang, corrected={"savings": "500_to_1000"})
    response = submit_review(page)
    assert response.status == 200, response.status
    review = live.decision(decision_id)["reviews"]
    assert len(review) == 1 and review[0]["status"] == "queued", review
    # The confirmation names the last day of the review period (checked at the end, after the whole flow ran).
    confirmation = spaces(page.locator("#review-sent").inner_text())
    dates = {spaces(d) for d in date_texts(due_day(review[0]), lang)}
    day_after = {spaces(d) for d in date_texts(due_day(review[0]) + dt.timedelta(days=1), lang)}
    due_shown = any(d in confirmation for d in dates)
    due_problem = (f"the confirmation does not name the review's last day {sorted(dates)}"
                   + (" but the day after it (the midnight that ends the period, as a date)"
                      if any(d in confirmation for d in day_after) else "") + f":\n{confirmation}")
    received = live.wait_mail(email, "review_received")
    assert received.language == lang
    due_in_mail = any(d in spaces(received.text) for d in dates)

    # A reviewer takes the case over the API: it holds what the person typed and corrected.
    case = live.claim(review[0]["review_id"])
    assert case["point_of_view"] == POINT_OF_VIEW_TEXT[lang]
    assert case["contest_grounds"] == ["wrong_data"]
    assert case["corrected_data"] == {"savings": "500_to_1000"}
    resolved = live.resolve(case["review_id"], case["fencing_token"])
    reasons = resolved["reasons"][lang]

    # The person's page shows the new effective outcome; the outcome notice arrives in their language.
    page.goto(f"{live.url}/d/{decision_id}")
    assert html_lang(page) == lang
    assert OUTCOME_LABELS["approved"][lang] in page.locator("section#outcome").inner_text()
    reasons_shown = reasons in main_text(page)
    outcome = live.wait_mail(email, "review_outcome")
    assert outcome.language == lang and OUTCOME_LABELS["approved"][lang] in outcome.text
    assert reasons in outcome.text, f"the reviewer's reasons are not in the outcome notice:\n{outcome.text}"
    assert live.decision(decision_id)["effective_outcome"] == "approved"
    assert reasons_shown, f"the decision page does not show the reviewer's reasons ({reasons!r}):\n{main_text(page)}"
    assert due_shown, due_problem
    assert due_in_mail, f"the review_received email does not name the last day {sorted(dates)}:\n{received.text}"
