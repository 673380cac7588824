"""/me: a person signed in with the identity provider sees all their decisions (keyset pages, newest first),
their open reviews with due dates, and downloads everything held about them; every listing is logged."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask.testing import FlaskClient

from gateway import officials
from gateway.extensions import db
from gateway.identity import subject_ref
from gateway.web import me
from tests.conftest import Gateway
from tests.web.console_support import waiting_case
from tests.web.support import IIN_1, IIN_2, decide, text

ROW = re.compile(r'<tr data-decision-id="(dec_[\w-]+)"')


def signed_in(gw: Gateway, iin: str) -> FlaskClient:
    browser = gw.app.test_client()
    with gw.app.app_context():
        started = officials.sign_in_person(subject_ref(iin, gw.app.extensions["gateway.settings"].subject_key))
    with browser.session_transaction() as session:
        session["sid"] = started.session_id
    return browser


def test_all_my_decisions_newest_first_in_keyset_pages(gateway: Gateway, monkeypatch: object) -> None:
    mine = [decide(gateway)["decision_id"] for _ in range(3)]
    decide(gateway, iin=IIN_2)  # someone else's: never listed
    browser = signed_in(gateway, IIN_1)
    setattr(me, "PAGE", 2)  # noqa: B010  (two per page to see the keyset link)
    try:
        first = browser.get("/me").get_data(as_text=True)
        assert ROW.findall(first) == mine[::-1][:2]
        nxt = re.search(r'id="next-page" href="([^"]+)"', first)
        assert nxt
        rest = browser.get(nxt.group(1).replace("&amp;", "&")).get_data(as_text=True)
        assert ROW.findall(rest) == mine[:1] and 'id="next-page"' not in rest
    finally:
        setattr(me, "PAGE", 20)  # noqa: B010
    with gateway.app.app_context():
        logged = db.session.execute(sa.text("SELECT count(*) FROM access_events WHERE what = 'decision_list'")).scalar_one()
    assert logged == 3
    # Each decision links to its page through a personal link that starts the session for it.
    link = re.search(r'href="(/d/dec_[\w-]+\?token=gwc_[^"]+)"', first)
    assert link and browser.get(link.group(1).replace("&amp;", "&")).status_code == 303


def test_open_reviews_with_due_dates_and_the_download(gateway: Gateway) -> None:
    case = waiting_case(gateway)
    browser = signed_in(gateway, IIN_1)
    page = browser.get("/me")
    assert page.status_code == 200
    with gateway.app.app_context():
        review_id = db.session.execute(sa.text("SELECT id FROM reviews")).scalar_one()
    assert f'data-review-id="{review_id}"' in page.get_data(as_text=True)
    assert f"Пересмотр решения {case.decision_id}" in text(browser.get("/me?lang=ru"))
    data = browser.get("/me/data.json")
    body = data.get_json()
    assert data.headers["Content-Disposition"].startswith("attachment;")
    (decision,) = body["decisions"]
    assert decision["decision_id"] == case.decision_id and "citizen" not in decision["links"]
    assert decision["reviews"][0]["point_of_view"] == "Мой доход вырос."


def test_me_needs_a_person_session(gateway: Gateway) -> None:
    assert gateway.app.test_client().get("/me").status_code == 401
    from tests.web.console_support import official

    assert official(gateway, "reviewer").get("/me").status_code == 401
