"""Helpers for page tests: a person who follows the link in their notice with a browser-like client."""

from __future__ import annotations

import copy
import html
import re
import time
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from gateway.auth import CAPABILITY_PREFIX, CAPABILITY_SALT, _subject_binding
from gateway.extensions import db
from gateway.models import Decision
from tests.conftest import Gateway
from tests.support.citizens import notice_token

IIN_1, IIN_2 = "921029350851", "061211600012"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Person:
    """Someone a decision is about: its id, the personal link from the notice and their own browser."""

    decision_id: str
    link: str  # path and query of the personal link (…/d/{id}?token=…)
    token: str
    browser: FlaskClient

    def open_link(self, **headers: str) -> Any:
        return self.browser.get(self.link, headers=headers)

    def csrf(self, path: str) -> str:
        page = self.browser.get(path)
        assert page.status_code == 200, page.status_code
        found = CSRF.search(page.get_data(as_text=True))
        assert found, "the form has no CSRF token"
        return found.group(1)


def decide(gw: Gateway, iin: str = IIN_1, language: str = "kk", who: str = "agency_a") -> dict[str, Any]:
    body = copy.deepcopy(gw.sample)
    body["subject"]["iin"] = iin
    body["subject"]["language"] = language
    resp = gw.decide(body, who=who)
    assert resp.status_code == 201, resp.get_json()
    created: dict[str, Any] = resp.get_json()
    return created


def person(gw: Gateway, iin: str = IIN_1, language: str = "kk", *, signed_in: bool = True) -> Person:
    """Decide about someone and give them a browser; with `signed_in`, they have followed their link."""
    created = decide(gw, iin, language)
    link = f"/d/{created['decision_id']}?token={notice_token(gw, created['decision_id'])}"  # as the notice has it
    who = Person(created["decision_id"], link, link.split("?token=", 1)[1], gw.app.test_client())
    if signed_in:
        resp = who.open_link()
        assert resp.status_code == 303, resp.status_code
    return who


def text(resp: Any) -> str:
    """The page's text without tags, entities decoded and whitespace collapsed (for 'in' checks)."""
    body = re.sub(r"<[^>]+>", " ", resp.get_data(as_text=True))
    return re.sub(r"\s+", " ", html.unescape(body)).replace("\u202f", " ").replace("\xa0", " ")


def expired_token(gw: Gateway, decision_id: str, days_old: int) -> str:
    """A genuine capability token for `decision_id`, signed `days_old` days ago (as the gateway signs them)."""

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - days_old * 86400

    with gw.app.app_context():
        decision = db.session.get(Decision, decision_id)
        assert decision is not None
        ref = decision.subject_ref
    serializer = URLSafeTimedSerializer(gw.app.config["SECRET_KEY"], salt=CAPABILITY_SALT, signer=Backdated)
    return CAPABILITY_PREFIX + serializer.dumps({"d": decision_id, "s": _subject_binding(ref)})
