"""Sign-in through a real OpenID provider (Authlib's server side, started by the tests): officials and people,
and each way a sign-in can go wrong refused with a clear page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
from flask.testing import FlaskClient

from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.oidc_provider import Provider
from tests.web.support import IIN_1, decide, text

CALLBACK = "https://gateway.test/signin/oidc/callback"


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    running = Provider(CALLBACK)
    yield running
    running.stop()


@pytest.fixture
def gateway_extra(provider: Provider) -> dict[str, Any]:
    provider.tamper = None
    provider.next_user = {"sub": "official-1", "name": "Aigerim Reviewer", "gateway_role": "reviewer"}
    return provider.config()


def start(browser: FlaskClient, kind: str = "official") -> str:
    """Begin a sign-in; the provider answers at once (its user is chosen by the test): the callback URL."""
    resp = browser.get(f"/signin/oidc?as={kind}")
    assert resp.status_code == 302, resp.status_code
    asked = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["nonce"] and asked["state"]
    answer = requests.get(resp.headers["Location"], allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(CALLBACK)
    return location.split("https://gateway.test", 1)[1]


def test_an_official_signs_in_and_is_recorded_by_subject_and_name(gateway: Gateway, provider: Provider) -> None:
    browser = gateway.app.test_client()
    resp = browser.get(start(browser))
    assert resp.status_code == 303 and resp.headers["Location"] == "/console"
    page = browser.get("/console")
    assert page.status_code == 200 and "Aigerim Reviewer" in text(page)
    assert browser.get("/audit").status_code == 403
    with gateway.app.app_context():
        row = db.session.execute(sa.text("SELECT official_id, name, role, via FROM web_sessions")).one()
    assert tuple(row) == ("oidc:official-1", "Aigerim Reviewer", "reviewer", "oidc")
    assert provider.challenges[-1] == "S256"


def test_a_person_signs_in_and_sees_their_decisions(gateway: Gateway, provider: Provider) -> None:
    made = [decide(gateway)["decision_id"] for _ in range(2)]
    provider.next_user = {"sub": "person-1", "name": "Person", "iin": IIN_1}
    browser = gateway.app.test_client()
    resp = browser.get(start(browser, "person"))
    assert resp.status_code == 303 and resp.headers["Location"] == "/me"
    page = browser.get("/me").get_data(as_text=True)
    assert page.index(made[1]) < page.index(made[0])  # newest first
    assert browser.get("/console").status_code == 401
    data = browser.get("/me/data.json")
    assert data.status_code == 200 and {d["decision_id"] for d in data.get_json()["decisions"]} == set(made)
    with gateway.app.app_context():
        stored = db.session.execute(sa.text("SELECT subject_ref FROM web_sessions")).scalar_one()
    assert IIN_1 not in stored and len(stored) == 64


def refused(resp: Any, reason: str) -> None:
    body = resp.get_data(as_text=True)
    assert resp.status_code == 401, resp.status_code
    assert f'data-reason="{reason}"' in body, body[:2000]


def test_a_wrong_state_is_refused(gateway: Gateway) -> None:
    browser = gateway.app.test_client()
    callback = start(browser)
    query = parse_qs(urlsplit(callback).query)
    refused(browser.get(f"/signin/oidc/callback?code={query['code'][0]}&state=forged"), "state")
    assert browser.get("/console").status_code == 401


def test_a_replayed_code_is_refused(gateway: Gateway) -> None:
    browser = gateway.app.test_client()
    first = start(browser)
    assert browser.get(first).status_code == 303
    old_code = parse_qs(urlsplit(first).query)["code"][0]
    attacker = gateway.app.test_client()  # a new sign-in of its own, answered with the spent code
    state = parse_qs(urlsplit(start(attacker)).query)["state"][0]
    refused(attacker.get(f"/signin/oidc/callback?code={old_code}&state={state}"), "code")
    assert attacker.get("/console").status_code == 401


def test_a_wrong_nonce_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.tamper = "nonce"
    browser = gateway.app.test_client()
    refused(browser.get(start(browser)), "nonce")


def test_an_expired_id_token_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.tamper = "expired"
    browser = gateway.app.test_client()
    refused(browser.get(start(browser)), "expired")


def test_an_official_without_the_role_claim_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.next_user = {"sub": "official-2", "name": "No Role"}
    browser = gateway.app.test_client()
    refused(browser.get(start(browser)), "role")
    provider.next_user = {"sub": "official-3", "name": "Admin", "gateway_role": "admin"}
    refused(browser.get(start(browser)), "role")
    with gateway.app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM web_sessions")).scalar_one() == 0


def test_a_person_without_an_iin_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.next_user = {"sub": "person-2", "name": "Nobody"}
    browser = gateway.app.test_client()
    refused(browser.get(start(browser, "person")), "iin")
