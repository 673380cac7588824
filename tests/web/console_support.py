"""Helpers for the console tests: officials who sign in with a one-time link, cases waiting for review."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from gateway import officials
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.models import ApiClient
from tests.conftest import Gateway
from tests.web.support import CSRF, IIN_1, Person, person

CASE = re.compile(r'href="/console/cases/(rev_[\w-]+)"')


def sign_in_link(gw: Gateway, name: str) -> str:
    """A one-time sign-in link's path for the client `name`, as `gateway keys create --web` prints it."""
    with gw.app.app_context(), write_transaction():
        client = db.session.execute(select(ApiClient).where(ApiClient.name == name)).scalar_one()
        token = officials.issue_link(client)
    return officials.sign_in_path(token)


def csrf_of(browser: FlaskClient, path: str) -> str:
    page = browser.get(path)
    assert page.status_code == 200, (path, page.status_code)
    found = CSRF.search(page.get_data(as_text=True))
    assert found, f"{path} has no CSRF token"
    return found.group(1)


def official(gw: Gateway, name: str = "reviewer") -> FlaskClient:
    """A browser signed in as the client `name` through a one-time link."""
    browser = gw.app.test_client()
    link = sign_in_link(gw, name)
    resp = browser.post(link, data={"csrf_token": csrf_of(browser, link)})
    assert resp.status_code == 303, resp.status_code
    browser.get("/signin?lang=en")  # the official's choice of language, kept in the session (tests read English)
    return browser


def waiting_case(gw: Gateway, iin: str = IIN_1, corrected: dict[str, str] | None = None) -> Person:
    """A person whose decision has an open review request (with corrected data)."""
    me = person(gw, iin=iin, language="ru")
    form = {"csrf_token": me.csrf(f"/d/{me.decision_id}/review"), "point_of_view": "Мой доход вырос.",
            "contest_grounds": ["wrong_data"], "language": "ru",
            **(corrected if corrected is not None else {"corrected.duration_months": "12"})}
    resp = me.browser.post(f"/d/{me.decision_id}/review", data=form)
    assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
    return me


def post_form(browser: FlaskClient, page: str, action: str, **fields: Any) -> Any:
    """Send a form of `page` (its CSRF token and fencing token as the page has them) with `fields`."""
    body = browser.get(page).get_data(as_text=True)
    token = CSRF.search(body)
    assert token, f"{page} has no CSRF token"
    fencing = re.search(rf'action="{re.escape(action)}"[^>]*>\s*<input type="hidden" name="csrf_token" value="[^"]+">'
                        r'<input type="hidden" name="fencing_token" value="(\d+)">', body)
    data = {"csrf_token": token.group(1), **({"fencing_token": fencing.group(1)} if fencing else {}), **fields}
    return browser.post(action, data=data)
