"""The capability token of a personal link: used once to start a session, then never seen again.

After the 303 the token is in no URL and in no request's Referer (every request the page makes is
recorded); an expired token lands on the expired-link page (410), a forged or foreign one on the 404 page,
and neither starts a session.
"""

from __future__ import annotations

import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Page, Request

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import LiveGateway, expired_copy, tampered_copy, token_of
from .pages import fill_review, html_lang, open_link, submit_review, visit

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]


def _record(page: Page) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        seen.append({"url": request.url, "headers": request.all_headers(), "method": request.method,
                     "navigation": request.is_navigation_request()})

    page.on("request", on_request)
    return seen


def test_after_the_redirect_the_token_is_in_no_url_and_no_referer(live: LiveGateway, page: Page) -> None:
    made = live.decide("ru")
    link, decision_id = made["links"]["citizen"], made["decision_id"]
    token = token_of(link)
    seen = _record(page)

    landed = open_link(page, link)
    # Neither the redirect that consumed the token nor the page may be stored or pass on a Referer.
    redirect = landed.request.redirected_from.response()  # type: ignore[union-attr]
    for response in (redirect, landed):
        headers = response.all_headers()  # type: ignore[union-attr]
        assert "no-store" in headers.get("cache-control", ""), (response.url, headers)  # type: ignore[union-attr]
        assert headers.get("referrer-policy") == "no-referrer", (response.url, headers)  # type: ignore[union-attr]
    page.locator("a#explanation-link").click()
    page.wait_for_url(f"**/d/{decision_id}/explanation")
    page.go_back()
    page.wait_for_url(f"**/d/{decision_id}")
    page.locator("a#review-link").click()
    page.wait_for_url(f"**/d/{decision_id}/review")
    fill_review(page, "ru", corrected={"savings": "500_to_1000"})
    submit_review(page)
    page.locator("#review-sent").wait_for()
    page.goto(f"{live.url}/d/{decision_id}")
    page.locator("nav#language a[href*='lang=kk']").first.click()
    page.wait_for_load_state()
    assert html_lang(page) == "kk"

    assert seen[0]["url"] == link and seen[0]["navigation"]
    later = seen[1:]
    assert len(later) >= 6, [r["url"] for r in later]  # the pages above and what they load
    assert any(r["method"] == "POST" for r in later), "the review form was posted"
    for request in later:
        assert token not in request["url"], f"token in a later request's URL: {request['url']}"
        referer = request["headers"].get("referer", "")
        assert token not in referer and "token=" not in referer, f"{request['url']} was sent with Referer {referer}"
        leaked = [k for k, v in request["headers"].items() if token in v]
        assert not leaked, f"{request['url']} carries the token in {leaked}"
    assert token not in page.content()


def test_a_session_opens_only_the_decision_its_link_named(live: LiveGateway, page: Page) -> None:
    mine, theirs = live.decide("kk"), live.decide("kk")
    open_link(page, mine["links"]["citizen"])
    for path in ("", "/explanation", "/review", "/data.json"):
        response = page.request.get(f"{live.url}/d/{theirs['decision_id']}{path}")
        assert response.status == 404, f"/d/<another person's decision>{path}: {response.status}"
    data = page.request.get(f"{live.url}/d/{mine['decision_id']}/data.json")
    assert data.status == 200 and data.json()["decision"]["decision_id"] == mine["decision_id"]
    # Their token with my decision's id is a foreign token: 404, and my session is not widened by it.
    foreign = mine["links"]["citizen"].replace(token_of(mine["links"]["citizen"]), token_of(theirs["links"]["citizen"]))
    visit(page, foreign, status=404)
    assert page.request.get(f"{live.url}/d/{theirs['decision_id']}").status == 404


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_an_expired_link_lands_on_the_expired_page(live: LiveGateway, page: Page, lang: str) -> None:
    made = live.decide(lang)
    response = visit(page, expired_copy(made["links"]["citizen"], days_ago=366) + f"&lang={lang}", status=410)
    assert response.request.redirected_from is None, "an expired link is not redirected anywhere"
    assert html_lang(page) == lang
    assert page.locator("h1").count() == 1
    assert page.request.get(f"{live.url}/d/{made['decision_id']}").status == 404, "an expired link opened a session"
    expired_heading = page.locator("h1").inner_text()
    # A link a year old less a day still works: the expiry is CAPABILITY_MAX_AGE_DAYS (365), not sooner.
    open_link(page, expired_copy(made["links"]["citizen"], days_ago=364))
    # The expired page is not the 404 page: it tells the person the link is old, not that nothing exists.
    visit(page, tampered_copy(made["links"]["citizen"]) + f"&lang={lang}", status=404)
    assert page.locator("h1").inner_text() != expired_heading


@pytest.mark.parametrize("how", ["signature", "payload", "other-decision-id"])
def test_a_forged_link_lands_on_the_404_page(live: LiveGateway, page: Page, how: str) -> None:
    made = live.decide("ru")
    link, token = made["links"]["citizen"], token_of(made["links"]["citizen"])
    if how == "signature":
        forged = tampered_copy(link)
    elif how == "payload":
        body, _, rest = token.partition(".")
        forged = link.replace(token, body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + rest)
    else:
        other = live.decide("ru")["decision_id"]
        forged = link.replace(f"/d/{made['decision_id']}?", f"/d/{other}?")
    response = visit(page, forged + "&lang=ru", status=404)
    assert response.request.redirected_from is None
    assert html_lang(page) == "ru"
    assert page.locator("section#outcome").count() == 0
    assert page.request.get(f"{live.url}/d/{made['decision_id']}").status == 404, "a forged link opened a session"


class _Webmail:
    """A page on another site (http://localhost:<port>, not 127.0.0.1) showing the notice's link, as webmail does."""

    def __init__(self, link: str) -> None:
        body = (f'<!doctype html><html lang="ru"><title>Inbox</title><p>Notice: '
                f'<a id="personal" href="{html.escape(link)}">open your decision</a></p></html>').encode()
        self.requests: list[str] = []
        webmail = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                webmail.requests.append(self.path + " " + str(self.headers.get("Referer")))
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://localhost:{self.server.server_address[1]}/inbox"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_link_clicked_in_webmail_on_another_site_opens_the_decision_and_drops_the_token(live: LiveGateway, page: Page) -> None:
    """From another site a SameSite=Strict cookie is not sent along the redirect: the gateway answers with
    a same-site continue page (meta refresh and a link). The token must not leak from there either."""
    made = live.decide("ru")
    link, decision_id = made["links"]["citizen"], made["decision_id"]
    token = token_of(link)
    webmail = _Webmail(link)
    try:
        page.goto(webmail.url)
        seen = _record(page)
        page.locator("a#personal").click()
        page.wait_for_url(f"{live.url}/d/{decision_id}")
        page.locator("section#outcome").wait_for()
        assert html_lang(page) == "ru"
        page.locator("a#explanation-link").click()
        page.locator("ol#factors").wait_for()
    finally:
        webmail.close()
    first = seen[0]
    assert first["url"] == link and first["headers"].get("sec-fetch-site") == "cross-site", first
    onward = next(r for r in seen[1:] if r["navigation"])  # from the continue page, not a redirect of the first
    assert onward["url"] == f"{live.url}/d/{decision_id}", onward
    assert onward["headers"].get("sec-fetch-site") == "same-origin" and "referer" not in onward["headers"], onward
    for request in seen[1:]:
        assert token not in request["url"], f"token in a later request's URL: {request['url']}"
        referer = request["headers"].get("referer", "")
        assert token not in referer, f"{request['url']} was sent with Referer {referer}"
    assert [r for r in webmail.requests if token in r] == [], webmail.requests  # nothing came back to the webmail
