"""Sign-in through a local OpenID provider in Chromium: a reviewer lands on the console, a person on /me
(their decisions, newest first); the sign-in page and /me have no axe-core violations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.notifications.conftest import SMTPServer
from tests.support.gateway_server import valid_iin
from tests.support.oidc_provider import Provider

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import LiveGateway, start_gateway

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    running = Provider("http://127.0.0.1/unset")  # the redirect URI is set once the gateway has its port
    yield running
    running.stop()


@pytest.fixture(scope="module")
def oidc_live(tmp_path_factory: pytest.TempPathFactory, german_manifest: Path, smtp: SMTPServer,
              provider: Provider) -> Iterator[LiveGateway]:
    env = {f"GATEWAY_{k}": v for k, v in provider.config().items()}
    gateway = start_gateway(tmp_path_factory.mktemp("oidc-gateway"), german_manifest, smtp, **env)
    provider.client.redirect_uri = f"{gateway.url}/signin/oidc/callback"
    try:
        yield gateway
    finally:
        gateway.http.close()
        gateway.server.stop()


def test_a_reviewer_signs_in_through_the_provider(oidc_live: LiveGateway, provider: Provider, browser: Browser,
                                                  check_axe: Callable[[Page, str], None]) -> None:
    provider.next_user = {"sub": "reviewer-7", "name": "Айгерим Сапарова", "gateway_role": "reviewer"}
    page = browser.new_context(locale="kk-KZ").new_page()
    page.goto(f"{oidc_live.url}/signin?lang=kk")
    check_axe(page, "the sign-in page")
    page.locator("#oidc-signin").click()
    page.wait_for_url(f"{oidc_live.url}/console")
    assert "Айгерим Сапарова" in page.locator("#signed-in-as").inner_text()
    check_axe(page, "the queue after OIDC sign-in")
    ((official, role),) = oidc_live.query("SELECT official_id, role FROM web_sessions WHERE ended_at IS NULL")
    assert (official, role) == ("oidc:reviewer-7", "reviewer")
    page.locator("#signout").click()
    page.wait_for_url("**/signin?out=1")
    assert page.locator("#signed-out").is_visible()
    assert page.goto(f"{oidc_live.url}/console").status == 401  # type: ignore[union-attr]


def test_a_person_signs_in_and_sees_all_their_decisions(oidc_live: LiveGateway, provider: Provider, browser: Browser,
                                                        check_axe: Callable[[Page, str], None]) -> None:
    iin = valid_iin(424242)
    made = [oidc_live.decide("ru", iin=iin)["decision_id"] for _ in range(2)]
    provider.next_user = {"sub": "person-9", "name": "Person", "iin": iin}
    page = browser.new_context(locale="ru-RU").new_page()
    page.goto(f"{oidc_live.url}/signin")
    page.locator("#oidc-person-signin").click()
    page.wait_for_url(f"{oidc_live.url}/me")
    rows = page.locator("#my-decisions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.decisionId)")
    assert rows == made[::-1]
    check_axe(page, "/me")
    page.locator(f'tr[data-decision-id="{made[0]}"] a').click()
    page.wait_for_url(f"**/d/{made[0]}")
    assert page.locator("section#outcome").is_visible()
    provider.next_user = {"sub": "person-10", "name": "Nobody"}  # no IIN: refused with a clear page
    other = browser.new_context().new_page()
    other.goto(f"{oidc_live.url}/signin?lang=en")
    other.locator("#oidc-person-signin").click()
    other.wait_for_load_state()
    assert other.locator("#signin-refused").get_attribute("data-reason") == "iin"
    check_axe(other, "a refused sign-in")
