"""An official signed in through the OpenID provider is named as a decision's operator by ``oidc:<subject>``
and never gets that decision's review in the console (tests/test_operator_identity.py: keys and links)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.support.oidc_provider import Provider
from tests.test_operator_identity import client_id, decide, named_claim, person_contests, rows
from tests.web.support import text
from tests.web.test_console import take_next
from tests.web.test_console_oidc import CALLBACK, start


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    running = Provider(CALLBACK)
    yield running
    running.stop()


@pytest.fixture
def gateway_extra(provider: Provider) -> dict[str, Any]:
    provider.tamper = None
    provider.next_user = {"sub": "official-7", "name": "Aigerim Reviewer", "gateway_role": "reviewer"}
    return provider.config()


def test_an_oidc_official_is_named_by_subject_and_never_gets_their_case(gateway: Gateway, provider: Provider) -> None:
    # Before signing in, the gateway does not know the official: an agency cannot name them.
    assert decide(gateway, operator_id="oidc:official-7").status_code == 422
    browser = gateway.app.test_client()
    assert browser.get(start(browser)).status_code == 303
    browser.get("/signin?lang=en")
    resp = decide(gateway, operator="Aigerim", operator_id="oidc:official-7")
    assert resp.status_code == 201, resp.get_json()
    did = resp.get_json()["decision_id"]
    person_contests(gateway, did)
    review_id = rows(gateway, "SELECT id FROM reviews")[0][0]
    assert take_next(browser) == "/console?none=1"
    refused = named_claim(browser, review_id)
    assert refused.status_code == 403 and "You operated this decision" in text(refused)
    # The same person's name in free text would not have stopped them: a name is not an identity.
    other = decide(gateway, operator="Aigerim Reviewer", operator_id=client_id(gateway, "reviewer"))
    person_contests(gateway, other.get_json()["decision_id"])
    other_review = rows(gateway, "SELECT id FROM reviews WHERE decision_id = :d", d=other.get_json()["decision_id"])[0][0]
    assert take_next(browser) == f"/console/cases/{other_review}"
