"""One-time sign-in links for officials and the server-side sessions they start."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from gateway.cli import main
from gateway.extensions import db
from tests.conftest import Gateway
from tests.web.console_support import csrf_of, official, sign_in_link
from tests.web.support import text


def count(gw: Gateway, sql: str) -> int:
    with gw.app.app_context():
        return int(db.session.execute(sa.text(sql)).scalar_one())


def test_a_link_signs_in_once_and_the_key_never_reaches_the_browser(gateway: Gateway) -> None:
    browser = gateway.app.test_client()
    link = sign_in_link(gateway, "reviewer")
    page = browser.get(link)
    assert page.status_code == 200 and 'id="signin-form"' in page.get_data(as_text=True)
    assert "reviewer" in text(page)
    assert count(gateway, "SELECT count(*) FROM web_sessions") == 0  # opening the link spends nothing
    resp = browser.post(link, data={"csrf_token": csrf_of(browser, link)})
    assert resp.status_code == 303 and resp.headers["Location"] == "/console"
    queue = browser.get("/console")
    assert queue.status_code == 200
    body = queue.get_data(as_text=True)
    assert gateway.keys["reviewer"] not in body and "gwk_" not in body
    cookie = resp.headers.get("Set-Cookie", "")
    assert "gwk_" not in cookie and "HttpOnly" in cookie
    # Only hashes are stored: neither the link's token nor the session id is in the database.
    token = link.rsplit("/", 1)[1]
    with gateway.app.app_context():
        hashes = db.session.execute(sa.text("SELECT token_hash FROM sign_in_links")).scalars().all()
    assert token not in hashes and len(hashes) == 1 and len(hashes[0]) == 64
    # Used: a second browser is refused with a clear page, and the first one's session is not touched.
    other = gateway.app.test_client()
    again = other.get(link)
    assert again.status_code == 410 and 'data-reason="used"' in again.get_data(as_text=True)
    assert other.post(link, data={"csrf_token": "x"}).status_code == 400  # no CSRF token of its own: refused
    assert browser.get("/console").status_code == 200
    assert count(gateway, "SELECT count(*) FROM log_leaves WHERE kind = 'signin:session_started'") == 1


def test_an_expired_or_unknown_link_is_refused(gateway: Gateway) -> None:
    link = sign_in_link(gateway, "auditor")
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE sign_in_links SET expires_at = :t"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)})
        db.session.commit()
    browser = gateway.app.test_client()
    page = browser.get(link)
    assert page.status_code == 410 and 'data-reason="expired"' in page.get_data(as_text=True)
    unknown = browser.get("/signin/gws_" + "A" * 43)
    assert unknown.status_code == 404 and 'data-reason="unknown"' in unknown.get_data(as_text=True)


def test_a_revoked_key_ends_its_sessions(gateway: Gateway) -> None:
    browser = official(gateway, "reviewer")
    assert browser.get("/console").status_code == 200
    result = gateway.app.test_cli_runner().invoke(main, args=["keys", "revoke", "reviewer"])
    assert result.exit_code == 0, result.output
    assert browser.get("/console").status_code == 401


def test_sign_out_ends_the_session_on_the_server(gateway: Gateway) -> None:
    browser = official(gateway, "auditor")
    assert browser.get("/audit").status_code == 200
    stolen = browser.get_cookie("gw_session")
    assert stolen is not None
    resp = browser.post("/signout", data={"csrf_token": csrf_of(browser, "/audit")})
    assert resp.status_code == 303 and resp.headers["Location"] == "/signin?out=1"
    assert browser.get("/audit").status_code == 401
    thief = gateway.app.test_client()  # a copy of the old cookie is worthless: the session row has ended
    thief.set_cookie("gw_session", stolen.value, domain=stolen.domain or "localhost")
    assert thief.get("/audit").status_code == 401
    assert count(gateway, "SELECT count(*) FROM log_leaves WHERE kind = 'signin:session_ended'") == 1


def test_signing_in_again_rotates_the_session(gateway: Gateway) -> None:
    browser = official(gateway, "reviewer")
    first = browser.get_cookie("gw_session")
    assert first is not None
    link = sign_in_link(gateway, "reviewer")
    browser.post(link, data={"csrf_token": csrf_of(browser, link)})
    assert count(gateway, "SELECT count(*) FROM web_sessions WHERE ended_at IS NULL") == 1
    assert count(gateway, "SELECT count(*) FROM web_sessions") == 2
    old = gateway.app.test_client()
    old.set_cookie("gw_session", first.value, domain=first.domain or "localhost")
    assert old.get("/console").status_code == 401


def test_keys_create_web_prints_a_link_and_refuses_other_roles(gateway: Gateway) -> None:
    runner = gateway.app.test_cli_runner()
    result = runner.invoke(main, args=["keys", "create", "--role", "reviewer", "--name", "Aigerim", "--web"])
    assert result.exit_code == 0, result.output
    key, line = result.output.strip().splitlines()
    assert key.startswith("gwk_") and "https://gateway.test/signin/gws_" in line
    link = line.split("https://gateway.test", 1)[1]
    browser = gateway.app.test_client()
    assert "Aigerim" in text(browser.get(link))
    refused = runner.invoke(main, args=["keys", "create", "--role", "agency", "--name", "x", "--web"])
    assert refused.exit_code != 0 and "reviewer and auditor" in refused.output
    again = runner.invoke(main, args=["keys", "sign-in-link", "Aigerim"])
    assert again.exit_code == 0 and "/signin/gws_" in again.output


def test_a_session_ends_at_its_server_side_expiry(gateway: Gateway) -> None:
    browser = official(gateway, "reviewer")
    assert browser.get("/console").status_code == 200
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE web_sessions SET expires_at = :t"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)})
        db.session.commit()
    refused = browser.get("/console")
    assert refused.status_code == 401 and "Sign in to open this page" in text(refused)
