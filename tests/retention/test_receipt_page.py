"""The receipt on the person's page (issue 15): pending until sequenced, then its leaf index and a download that
verifies with the standalone verifier; the decision notice links to it, in kk and ru."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from gateway.auditlog.note import Verifier
from gateway.auditlog.sequencer import SequenceKind
from gateway.extensions import db
from gateway.notifications.render import Job, message_for
from gateway.verify import verify_receipt
from tests.conftest import Gateway
from tests.web.support import IIN_2, person, text


def test_the_decision_page_shows_the_receipt_pending_then_its_leaf(gateway: Gateway) -> None:
    me = person(gateway, language="en")
    page = text(me.browser.get(f"/d/{me.decision_id}"))
    assert "Proof in the audit log" in page and "Pending: the decision is being added" in page
    assert me.browser.get(f"/d/{me.decision_id}/receipt.json").status_code == 202
    gateway.app.config["LOG_CHECKPOINT_INTERVAL_S"] = 0.0
    kind = SequenceKind(gateway.app, settings=SequenceKind.read_settings(gateway.app.config))
    while kind.run_once() > 0:
        pass
    body = me.browser.get(f"/d/{me.decision_id}").get_data(as_text=True)
    download = me.browser.get(f"/d/{me.decision_id}/receipt.json")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    receipt = json.loads(download.get_data(as_text=True))
    assert f"This decision is entry {receipt['leaf_index']} of the tamper-evident audit log" in text(
        me.browser.get(f"/d/{me.decision_id}"))
    assert f'href="/d/{me.decision_id}/receipt.json"' in body
    key = Verifier.parse(gateway.client.get("/v1/log/key").get_json()["verifier_key"])
    verify_receipt(receipt, key)
    # Another person's session can't fetch it (the same 404 as for no decision).
    other = person(gateway, language="en", iin=IIN_2)
    assert other.browser.get(f"/d/{me.decision_id}/receipt.json").status_code == 404


def test_the_notice_links_to_the_receipt(gateway: Gateway) -> None:
    for lang, phrase in (("kk", "аудит журналына жазылғанының дәлелі"), ("ru", "записано в защищённый от изменений")):
        did = gateway.decide(gateway.sample | {"subject": gateway.sample["subject"] | {"language": lang}}).get_json()[
            "decision_id"]
        with gateway.app.app_context():
            row = db.session.execute(sa.text("SELECT id, created_at FROM notifications WHERE decision_id = :d"),
                                     {"d": did}).one()
            message = message_for(Job(row.id, did, "decision_notice", "email", lang, 0, aware(row.created_at)))
        assert phrase in message.text and f"/d/{did}?token=" in message.text and "&next=receipt" in message.text
        assert "&amp;next=receipt" in message.html



def aware(value: object) -> dt.datetime:
    """A datetime column as read with raw SQL: SQLite gives a naive string, PostgreSQL an aware datetime."""
    found = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(found, dt.datetime)
    return found if found.tzinfo else found.replace(tzinfo=dt.UTC)
