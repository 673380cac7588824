"""Handover links: an agency hands a link to the person's decision on (a counter clerk prints it).

The person's own link reaches them through the notice only. When an agency must hand a link on, it makes
a handover link: a token of its own kind, bound to the decision and to a handover record, revocable, and
audited (an audit leaf and an access event when made and when revoked). Whoever uses it is recorded as
``citizen:handover:<id>`` in the access log and in review requests, so a use of it is never taken for
the person's own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import insert, select

from gateway import links
from gateway.access import Action, record_access, visible_decision
from gateway.audit import leaf_values
from gateway.auth import Caller, Principal, handover_token
from gateway.db import write_transaction
from gateway.errors import NotFound
from gateway.extensions import db
from gateway.ids import isoformat, new_id, utcnow
from gateway.models import Decision, HandoverLink, LogLeaf, table
from gateway.settings import current_settings


@dataclass(frozen=True)
class Handover:
    """A handover link as made: shown to the agency once (its token is not stored)."""

    id: str
    decision_id: str
    link: str
    created_at: dt.datetime


def _agency(caller: Caller, decision_id: str) -> tuple[Principal, Decision]:
    """The decision, for the agency of its body: NotFound for those who don't see it, Forbidden for the rest."""
    decision = visible_decision(caller, decision_id, Action.HAND_OVER)
    if not isinstance(caller, Principal):  # only agencies may hand over (gateway.access.ALLOWED)
        raise NotFound("The resource does not exist.")
    return caller, decision


def create(caller: Caller, decision_id: str, *, now: dt.datetime | None = None) -> Handover:
    """Make a handover link to a decision of the caller's body (agency); audited and recorded as an access."""
    now = now or utcnow()
    principal, decision = _agency(caller, decision_id)
    ref = decision.subject_ref
    hid = new_id("hnd")
    with write_transaction() as session:
        session.execute(insert(table(HandoverLink)), {"id": hid, "decision_id": decision_id,
                                                      "created_by": principal.id, "created_at": now})
        record = {"handover_id": hid, "decision_id": decision_id, "created_by": principal.id,
                  "body": principal.body, "at": isoformat(now)}
        session.execute(insert(table(LogLeaf)), leaf_values("decision:handover:created", hid, record, now))
    record_access(principal, decision_id, "handover_link")
    token = handover_token(decision_id, hid, ref)
    return Handover(hid, decision_id, links.personal_link(current_settings().base_url, decision_id, token), now)


def revoke(caller: Caller, decision_id: str, handover_id: str, *, now: dt.datetime | None = None) -> None:
    """Revoke a handover link: from now on it is answered like a forged token. Revoking twice is harmless."""
    now = now or utcnow()
    principal, _ = _agency(caller, decision_id)
    with write_transaction() as session:
        row = session.execute(select(HandoverLink).where(HandoverLink.id == handover_id,
                                                         HandoverLink.decision_id == decision_id)
                              .with_for_update()).scalar_one_or_none()
        if row is None:
            raise NotFound("The resource does not exist.")
        if row.revoked_at is None:
            row.revoked_at, row.revoked_by = now, principal.id
            record = {"handover_id": handover_id, "decision_id": decision_id, "revoked_by": principal.id,
                      "at": isoformat(now)}
            session.execute(insert(table(LogLeaf)), leaf_values("decision:handover:revoked", handover_id, record, now))
    record_access(principal, decision_id, "handover_link_revoked")


def handovers_of(decision_id: str) -> list[HandoverLink]:
    return list(db.session.execute(select(HandoverLink).where(HandoverLink.decision_id == decision_id)
                                   .order_by(HandoverLink.created_at, HandoverLink.id)).scalars())
