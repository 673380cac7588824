"""The personal link: checked once, then a session; the token leaves the address bar; bad links end well."""

from __future__ import annotations

import copy
import time
from http.cookies import SimpleCookie
from typing import Any

import pytest
from itsdangerous import TimestampSigner

from gateway.web.common import MAX_HELD
from tests.conftest import Gateway
from tests.support.citizens import notice_token
from tests.web.support import IIN_2, decide, expired_token, person, text

MISSING = "dec_AAAAAAAAAAAAAAAAAAAAAA"


def test_the_link_starts_a_session_and_redirects_away_from_the_token(gateway: Gateway) -> None:
    me = person(gateway, signed_in=False)
    resp = me.open_link()
    assert resp.status_code == 303
    assert resp.headers["Location"] == f"/d/{me.decision_id}"  # no token in the address bar or history
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    cookie = SimpleCookie(resp.headers["Set-Cookie"])
    morsel = cookie["gw_session"]
    assert morsel["httponly"] and morsel["secure"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert morsel["expires"]  # a lifetime (WEB_SESSION_MAX_AGE_S), not a browser-session cookie
    page = me.browser.get(f"/d/{me.decision_id}")
    assert page.status_code == 200 and 'id="outcome"' in page.get_data(as_text=True)
    assert me.token not in page.get_data(as_text=True)  # the page never repeats the token


@pytest.mark.parametrize(("target", "path"), [("explanation", "/explanation"), ("review", "/review"), ("other", "")])
def test_the_links_for_explanation_and_review_land_on_their_pages(gateway: Gateway, target: str, path: str) -> None:
    me = person(gateway, signed_in=False)
    resp = me.browser.get(f"{me.link}&next={target}")
    assert resp.status_code == 303 and resp.headers["Location"] == f"/d/{me.decision_id}{path}"


def test_arriving_from_another_site_continues_from_a_page_of_our_own(gateway: Gateway) -> None:
    """A SameSite=Strict cookie is not sent on a redirect chain begun on a webmail page: continue same-site."""
    me = person(gateway, signed_in=False)
    resp = me.open_link(**{"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 200 and "Set-Cookie" in resp.headers
    body = resp.get_data(as_text=True)
    assert f'content="0;url=/d/{me.decision_id}"' in body and f'href="/d/{me.decision_id}"' in body
    assert me.token not in body


def test_an_expired_link_says_so_and_how_to_get_a_new_one(gateway: Gateway) -> None:
    me = person(gateway, signed_in=False, language="ru")
    old = expired_token(gateway, me.decision_id, days_old=400)
    resp = me.browser.get(f"/d/{me.decision_id}?token={old}")
    assert resp.status_code == 410
    assert "Срок действия ссылки истёк" in text(resp) and "appeals@example.kz" in text(resp)
    assert 'lang="ru"' in resp.get_data(as_text=True)
    assert "Set-Cookie" not in resp.headers or "caps" not in resp.headers["Set-Cookie"]
    assert me.browser.get(f"/d/{me.decision_id}").status_code == 404  # no session was started
    # In Kazakh and English too.
    assert "Сілтеменің мерзімі өтті" in text(me.browser.get(f"/d/{me.decision_id}?token={old}&lang=kk"))
    assert "This link has expired" in text(me.browser.get(f"/d/{me.decision_id}?token={old}&lang=en"))


def test_a_recent_token_within_the_age_limit_still_works(gateway: Gateway) -> None:
    me = person(gateway, signed_in=False)
    recent = expired_token(gateway, me.decision_id, days_old=300)  # CAPABILITY_MAX_AGE_DAYS is 365
    assert me.browser.get(f"/d/{me.decision_id}?token={recent}").status_code == 303


def test_tampered_foreign_and_expired_foreign_links_are_the_404_of_a_missing_decision(gateway: Gateway) -> None:
    me = person(gateway, signed_in=False)
    other = decide(gateway, IIN_2)
    other_token = notice_token(gateway, other["decision_id"])
    browser = me.browser
    missing = browser.get(f"/d/{MISSING}?token={me.token}")
    assert missing.status_code == 404
    tampered = me.token[:-3] + ("AAA" if not me.token.endswith("AAA") else "BBB")
    cases = {
        "tampered": f"/d/{me.decision_id}?token={tampered}",
        "another decision's link": f"/d/{me.decision_id}?token={other_token}",
        "an expired link of another decision": f"/d/{me.decision_id}?token={expired_token(gateway, other['decision_id'], 400)}",
        "not a token": f"/d/{me.decision_id}?token=hello",
        "an API key": f"/d/{me.decision_id}?token={gateway.keys['agency_a']}",
    }
    for label, url in cases.items():
        resp = browser.get(url)
        assert resp.status_code == 404, label
        # Byte for byte, apart from the id the address itself names (in the language switch's links).
        assert resp.data.replace(me.decision_id.encode(), b"ID") == missing.data.replace(MISSING.encode(), b"ID"), label
    assert browser.get(f"/d/{me.decision_id}").status_code == 404  # and no session came of it


def _session_signed_ago(gw: Gateway, browser: Any, seconds: int) -> str:
    """The browser's own session cookie, re-signed `seconds` ago (as if the person left the tab open that long)."""

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds

    # A copy: the app's serializer is shared by every request (gateway.web.SessionInterface).
    serializer = copy.copy(gw.app.session_interface.get_signing_serializer(gw.app))  # type: ignore[attr-defined]
    cookie = browser.get_cookie("gw_session")
    assert cookie is not None, "no session cookie"
    content = serializer.loads(cookie.value)
    serializer.signer = Backdated
    return str(serializer.dumps(content))


@pytest.mark.gateway_config(WEB_SESSION_MAX_AGE_S=600)
def test_a_session_expires_after_the_configured_lifetime(gateway: Gateway) -> None:
    assert gateway.app.permanent_session_lifetime.total_seconds() == 600
    me = person(gateway)
    morsel = SimpleCookie(me.browser.get(f"/d/{me.decision_id}").headers["Set-Cookie"])["gw_session"]
    assert morsel["max-age"] == "600" or morsel["expires"], morsel  # the browser drops it after the lifetime
    # Within the lifetime the session opens the decision; past it, the server refuses it too (a kept cookie).
    me.browser.set_cookie("gw_session", _session_signed_ago(gateway, me.browser, 590), domain="localhost")
    assert me.browser.get(f"/d/{me.decision_id}").status_code == 200
    me.browser.set_cookie("gw_session", _session_signed_ago(gateway, me.browser, 610), domain="localhost")
    assert me.browser.get(f"/d/{me.decision_id}").status_code == 404
    assert me.browser.get(me.link).status_code == 303  # the link in the notice starts a new one
    assert me.browser.get(f"/d/{me.decision_id}").status_code == 200


def test_a_changed_secret_key_checks_sessions_at_once(gateway: Gateway) -> None:
    """The session's serializer is built once per set of keys (gateway.web.SessionInterface), not kept past a change."""
    me = person(gateway)
    page = f"/d/{me.decision_id}"
    cookie = me.browser.get_cookie("gw_session")
    assert cookie is not None and me.browser.get(page).status_code == 200

    def opens(with_keys: tuple[str, list[str]]) -> bool:
        gateway.app.config["SECRET_KEY"], gateway.app.config["SECRET_KEY_FALLBACKS"] = with_keys
        me.browser.set_cookie("gw_session", cookie.value, domain="localhost")  # a refusal clears it
        return bool(me.browser.get(page).status_code == 200)

    old = gateway.app.config["SECRET_KEY"]
    new = "a new key, " + old
    assert not opens((new, []))  # signed with the old key only: refused
    assert opens((new, [old]))  # the old key kept as a fallback: accepted
    assert opens((old, []))


@pytest.mark.gateway_config(PUBLIC_BASE_URL="http://127.0.0.1:8080")
def test_the_cookie_is_not_marked_secure_on_plain_http_deployments(gateway: Gateway) -> None:
    created = decide(gateway)
    link = f"/d/{created['decision_id']}?token={notice_token(gateway, created['decision_id'])}"
    resp = gateway.client.get(link)
    assert resp.status_code == 303
    assert not SimpleCookie(resp.headers["Set-Cookie"])["gw_session"]["secure"]


def test_a_language_asked_on_the_link_is_kept_for_the_pages(gateway: Gateway) -> None:
    me = person(gateway, signed_in=False, language="kk")
    resp = me.browser.get(f"{me.link}&lang=en")
    assert resp.status_code == 303 and resp.headers["Location"] == f"/d/{me.decision_id}"
    assert '<html lang="en">' in me.browser.get(resp.headers["Location"]).get_data(as_text=True)


def test_pages_of_no_decision_speak_the_language_of_the_persons_notice(gateway: Gateway) -> None:
    """The register and the error pages a person meets after opening a Kazakh notice are in Kazakh, whatever
    the browser's languages; ?lang= still wins and is then kept."""
    me = person(gateway, language="kk")
    english_browser = {"Accept-Language": "en"}
    assert '<html lang="kk">' in me.browser.get("/register", headers=english_browser).get_data(as_text=True)
    assert '<html lang="kk">' in me.browser.get("/register/german-credit/1.0.0", headers=english_browser).get_data(as_text=True)
    missing = me.browser.get(f"/d/{MISSING}", headers=english_browser)
    assert missing.status_code == 404 and "Бет табылмады" in text(missing)
    stale = me.browser.post(f"/d/{me.decision_id}/review", headers=english_browser,
                            data={"csrf_token": "stale", "point_of_view": "x", "contest_grounds": "other"})
    assert stale.status_code == 400 and '<html lang="kk">' in stale.get_data(as_text=True)
    big = me.browser.post(f"/d/{me.decision_id}/review", headers=english_browser,
                          data={"point_of_view": "x" * (1024 * 1024 + 10)})
    assert big.status_code == 413 and '<html lang="kk">' in big.get_data(as_text=True)
    # Someone with no personal link in their session: the browser's languages decide.
    assert '<html lang="en">' in gateway.app.test_client().get("/register", headers=english_browser).get_data(as_text=True)
    # The person's own choice comes first.
    assert '<html lang="ru">' in me.browser.get("/register?lang=ru", headers=english_browser).get_data(as_text=True)
    assert '<html lang="ru">' in me.browser.get(f"/d/{MISSING}", headers=english_browser).get_data(as_text=True)


def test_the_link_opened_last_sets_the_language_of_pages_of_no_decision(gateway: Gateway) -> None:
    kazakh, russian = decide(gateway, language="kk"), decide(gateway, IIN_2, language="ru")
    browser = gateway.app.test_client()
    for created, lang in ((kazakh, "kk"), (russian, "ru"), (kazakh, "kk")):  # both orders: not the ids' order
        did = created["decision_id"]
        assert browser.get(f"/d/{did}?token={notice_token(gateway, did)}").status_code == 303
        assert f'<html lang="{lang}">' in browser.get("/register").get_data(as_text=True), lang


def test_a_session_keeps_the_links_opened_last(gateway: Gateway) -> None:
    """A session holds MAX_HELD personal links; a new one pushes out the one opened longest ago."""
    made = sorted((decide(gateway)["decision_id"] for _ in range(MAX_HELD + 1)), reverse=True)  # ids' order reversed
    browser = gateway.app.test_client()
    for did in made:
        assert browser.get(f"/d/{did}?token={notice_token(gateway, did)}").status_code == 303
    opened = {did: browser.get(f"/d/{did}").status_code for did in made}
    assert opened == {did: 404 if did == made[0] else 200 for did in made}, opened
