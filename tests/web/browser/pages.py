"""What the tests know about the person's pages: their routes, form fields, and how to move between them.

The routes and the stable markup are those of gateway/web/__init__.py's docstring: `GET /d/{id}?token=…
[&next=explanation|review]` → 303 to `/d/{id}` (or the `next` page) with a session cookie, expired: 410
page, forged: 404; `/d/{id}`, `/d/{id}/explanation`, `/d/{id}/review` (`form#review-form`, after sending
`#review-sent`), `/d/{id}/review/withdraw`, `/d/{id}/data.json`, `/register`, `/register/{model}/{version}`;
every page has `<main id="main">`, one `<h1>`, `a.skip-link` and `nav#language` (`?lang=kk|ru|en`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Page, Response

from tests.support.gateway_server import GATEWAY, run

from .live import LiveGateway

# The review form's fields (names from gateway/web's docstring).
REVIEW_FORM = "form#review-form"
POINT_OF_VIEW = f'{REVIEW_FORM} textarea#point_of_view[name="point_of_view"]'
GROUND = REVIEW_FORM + ' input#ground-{value}[type="checkbox"][name="contest_grounds"][value="{value}"]'
CORRECTED = REVIEW_FORM + ' #corrected-{feature}[name="corrected.{feature}"]'
FORM_LANGUAGE = f'{REVIEW_FORM} select#language[name="language"]'
SUBMIT = f'{REVIEW_FORM} [type="submit"]'

POINT_OF_VIEW_TEXT = {
    "kk": "Менің жинақ шотымдағы қаражат көбірек: деректер ескірген.",
    "ru": "На моём сберегательном счёте больше денег: данные устарели.",
    "en": "My savings are higher than recorded: the data are out of date.",
}


def open_link(page: Page, link: str) -> Response:
    """Open a personal link; check the 303 to the token-free page (`next` honoured) and the session cookie."""
    response = page.goto(link)
    assert response is not None
    decision_id = re.search(r"/d/([^/?]+)", link).group(1)  # type: ignore[union-attr]
    first = response.request.redirected_from
    assert first is not None and first.url == link, f"the personal link did not redirect (landed on {page.url})"
    redirect = first.response()
    assert redirect is not None and redirect.status == 303, redirect and redirect.status
    follow = parse_qs(urlsplit(link).query).get("next", [""])[0]
    expected = f"{link.split('/d/')[0]}/d/{decision_id}" + (f"/{follow}" if follow else "")
    assert page.url == expected, f"{page.url} != {expected}"
    assert response.status == 200, response.status
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert "gw_session" in cookies, cookies
    assert cookies["gw_session"]["httpOnly"] and cookies["gw_session"]["sameSite"] == "Strict", cookies["gw_session"]
    return response


def visit(page: Page, url: str, *, status: int = 200) -> Response:
    response = page.goto(url)
    assert response is not None
    assert response.status == status, f"{url}: {response.status}"
    return response


def html_lang(page: Page) -> str:
    return str(page.locator("html").get_attribute("lang"))


def main_text(page: Page) -> str:
    return str(page.locator("main#main").inner_text())


def fill_review(page: Page, language: str, *, corrected: dict[str, str] | None = None, grounds: tuple[str, ...] = ("wrong_data",)) -> None:
    """Fill the review form with the mouse-free Playwright helpers (fill, check, select_option)."""
    page.locator(POINT_OF_VIEW).fill(POINT_OF_VIEW_TEXT[language])
    for ground in grounds:
        page.locator(GROUND.format(value=ground)).check()
    for feature, value in (corrected or {}).items():
        field = page.locator(CORRECTED.format(feature=feature))
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    if page.locator(FORM_LANGUAGE).count():
        page.locator(FORM_LANGUAGE).select_option(language)


def submit_review(page: Page) -> Response:
    with page.expect_navigation() as nav:
        page.locator(SUBMIT).click()
    response = nav.value
    assert response is not None
    return response


def request_review(page: Page, base: str, decision_id: str, language: str) -> None:
    """Send a review request through the form and wait for its confirmation (`#review-sent`)."""
    visit(page, f"{base}/d/{decision_id}/review?lang={language}")
    fill_review(page, language, corrected={"savings": "500_to_1000"})
    submit_review(page)
    page.locator("#review-sent").wait_for()


def explanation_factors(live: LiveGateway, decision_id: str, language: str) -> dict[str, Any]:
    resp = live.api("GET", f"/v1/decisions/{decision_id}/explanation?lang={language}", live.agency_key)
    assert resp.status_code == 200, resp.text
    found: dict[str, Any] = resp.json()
    return found


# --- every page the person can reach, in each language (for axe-core and the narrow-screen check) -----------

def _person(page: Page, live: LiveGateway, language: str) -> str:
    """A new decision about a new person, opened through its personal link; its id."""
    made = live.decide(language)
    open_link(page, made["links"]["citizen"])
    return str(made["decision_id"])


def _at(page: Page, url: str, language: str, status: int = 200) -> None:
    visit(page, f"{url}{'&' if '?' in url else '?'}lang={language}", status=status)


def state_decision(page: Page, live: LiveGateway, language: str) -> None:
    _at(page, f"{live.url}/d/{_person(page, live, language)}", language)
    page.locator("section#outcome").wait_for()
    # The example decision is adverse: the page lists what the person could change (axe checks it too).
    assert page.locator("section#recourse ul#recourse-options li").count() >= 1


def state_explanation(page: Page, live: LiveGateway, language: str) -> None:
    _at(page, f"{live.url}/d/{_person(page, live, language)}/explanation", language)
    page.locator("ol#factors").wait_for()


def state_explanation_pending(page: Page, live: LiveGateway, language: str) -> None:
    """The explanation while it is being computed (202): the row set back to pending in the database."""
    decision_id = _person(page, live, language)
    live.execute("UPDATE explanations SET status = 'pending' WHERE decision_id = ?", decision_id)
    _at(page, f"{live.url}/d/{decision_id}/explanation", language, status=202)
    page.locator("#pending").wait_for()


def state_review_form(page: Page, live: LiveGateway, language: str) -> None:
    _at(page, f"{live.url}/d/{_person(page, live, language)}/review", language)
    page.locator(REVIEW_FORM).wait_for()


def state_review_form_errors(page: Page, live: LiveGateway, language: str) -> None:
    """The form sent back with errors: a point of view but no ground (HTML cannot require one of three)."""
    _at(page, f"{live.url}/d/{_person(page, live, language)}/review", language)
    page.locator(POINT_OF_VIEW).fill(POINT_OF_VIEW_TEXT[language])
    response = submit_review(page)
    assert response.status in (400, 422), response.status
    page.locator("div#error-summary").wait_for()


def state_form_expired(page: Page, live: LiveGateway, language: str) -> None:
    """The 400 page of a form sent with a CSRF token that no longer matches (an old tab, another session)."""
    _at(page, f"{live.url}/d/{_person(page, live, language)}/review", language)
    fill_review(page, language)
    page.locator(f'{REVIEW_FORM} input[name="csrf_token"]').evaluate("e => { e.value = 'expired' }")
    response = submit_review(page)
    assert response.status == 400, response.status
    page.locator("#error-message").wait_for()


def state_review_sent(page: Page, live: LiveGateway, language: str) -> None:
    request_review(page, live.url, _person(page, live, language), language)


def state_open_review(page: Page, live: LiveGateway, language: str) -> None:
    decision_id = _person(page, live, language)
    request_review(page, live.url, decision_id, language)
    _at(page, f"{live.url}/d/{decision_id}/review", language)
    page.locator("section#open-review").wait_for()


def state_withdraw_confirmation(page: Page, live: LiveGateway, language: str) -> None:
    decision_id = _person(page, live, language)
    request_review(page, live.url, decision_id, language)
    _at(page, f"{live.url}/d/{decision_id}/review/withdraw", language)
    page.locator("form#withdraw-form").wait_for()


def state_review_withdrawn(page: Page, live: LiveGateway, language: str) -> None:
    decision_id = _person(page, live, language)
    request_review(page, live.url, decision_id, language)
    _at(page, f"{live.url}/d/{decision_id}/review/withdraw", language)
    with page.expect_navigation():
        page.locator("button#confirm-withdraw").click()
    page.locator("#review-withdrawn").wait_for()


def state_decision_reviewed(page: Page, live: LiveGateway, language: str) -> None:
    """The decision page after a reviewer changed the outcome."""
    decision_id = _person(page, live, language)
    request_review(page, live.url, decision_id, language)
    review_id = live.decision(decision_id)["reviews"][0]["review_id"]
    case = live.claim(review_id)
    live.resolve(review_id, case["fencing_token"])
    _at(page, f"{live.url}/d/{decision_id}", language)
    page.locator("section#outcome").wait_for()


def state_register(page: Page, live: LiveGateway, language: str) -> None:
    _at(page, f"{live.url}/register", language)
    page.locator("table#register").wait_for()


def state_register_model(page: Page, live: LiveGateway, language: str) -> None:
    _at(page, f"{live.url}/register/german-credit/1.0.0", language)
    page.locator("section#notice").wait_for()


def state_expired_link(page: Page, live: LiveGateway, language: str) -> None:
    from .live import expired_copy

    made = live.decide(language)
    _at(page, expired_copy(made["links"]["citizen"], days_ago=400), language, status=410)


def state_forged_link(page: Page, live: LiveGateway, language: str) -> None:
    from .live import tampered_copy

    made = live.decide(language)
    _at(page, tampered_copy(made["links"]["citizen"]), language, status=404)


def _purged(page: Page, live: LiveGateway, language: str) -> str:
    """A decision opened by its person, then purged under the retention rule (`gateway purge`, clock moved on)."""
    decision_id = _person(page, live, language)
    run([str(GATEWAY), "purge", "--now", "2100-01-01T00:00:00Z"], env=live.instance.env)
    return decision_id


def state_decision_purged(page: Page, live: LiveGateway, language: str) -> None:
    _at(page, f"{live.url}/d/{_purged(page, live, language)}", language)
    page.locator("#purged").wait_for()


def state_explanation_purged(page: Page, live: LiveGateway, language: str) -> None:
    _at(page, f"{live.url}/d/{_purged(page, live, language)}/explanation", language, status=410)


STATES = {
    "decision": state_decision,
    "explanation": state_explanation,
    "explanation-pending": state_explanation_pending,
    "review-form": state_review_form,
    "review-form-errors": state_review_form_errors,
    "form-expired": state_form_expired,
    "review-sent": state_review_sent,
    "open-review": state_open_review,
    "withdraw-confirmation": state_withdraw_confirmation,
    "review-withdrawn": state_review_withdrawn,
    "decision-reviewed": state_decision_reviewed,
    "register": state_register,
    "register-model": state_register_model,
    "expired-link": state_expired_link,
    "forged-link": state_forged_link,
    "decision-purged": state_decision_purged,
    "explanation-purged": state_explanation_purged,
}
