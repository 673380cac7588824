"""Who may see and do what with a decision: the one place the access rules live.

A caller either *sees* a decision or not. One who does not gets the same 404 as for an id that does
not exist, so existence never leaks; one who sees it but may not take the action gets 403.

| caller                          | sees                                              | may                                   |
|---------------------------------|---------------------------------------------------|---------------------------------------|
| agency key                      | decisions made by a key of its body (organisation) | read; request review for the person   |
| reviewer key                    | decisions that have or had a review (or were rescored in one) | read; work review cases               |
| auditor key                     | every decision                                    | read; read access logs; legal holds   |
| admin key                       | none (admins manage models and keys, not people)  | nothing here                          |
| citizen, capability link        | the one decision the link names                   | read; request and withdraw review; read access log |
| citizen, OIDC (national IdP)    | every decision about their IIN (its HMAC)         | read; request and withdraw review; read access log |

An agency sees by body, not by key, so that rotating a key (new key, old one revoked) keeps access to
the decisions made with the old one; keys of one body are one organisation.

Every read of a decision, explanation, review or access log is recorded as an `AccessEvent`, written
in a short transaction of its own after the read (`record_access`); the person and auditors read
them back with `access_log`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, exists, insert, or_, select

from gateway.auth import Caller, Citizen, Principal
from gateway.db import Total, bounded_count, write_transaction
from gateway.errors import Forbidden, NotFound
from gateway.extensions import db
from gateway.ids import new_id, utcnow
from gateway.models import AccessEvent, ApiClient, Decision, ReviewRequest, table
from gateway.settings import current_settings

NOT_FOUND = "The resource does not exist."


class Action(enum.StrEnum):
    READ = "read"  # the decision, its explanation (JSON and SVG), its reviews
    REQUEST_REVIEW = "request_review"
    READ_ACCESS_LOG = "read_access_log"
    WORK_REVIEW = "work_review"  # claim, renew, release, resolve, extend, rescore
    WITHDRAW_REVIEW = "withdraw_review"  # the person's own request, while it is open
    HAND_OVER = "hand_over"  # make or revoke a handover link to the person's decision (its agency)
    POST_GROUND_TRUTH = "post_ground_truth"  # the true outcome, later (its agency; for error rates per group)
    LEGAL_HOLD = "legal_hold"  # set or clear a legal hold that stops the retention purge (auditors)


# What each kind of caller may do with a decision it sees.
ALLOWED: dict[str, frozenset[Action]] = {
    "agency": frozenset({Action.READ, Action.REQUEST_REVIEW, Action.HAND_OVER, Action.POST_GROUND_TRUTH}),
    "reviewer": frozenset({Action.READ, Action.WORK_REVIEW}),
    "auditor": frozenset({Action.READ, Action.READ_ACCESS_LOG, Action.LEGAL_HOLD}),
    "admin": frozenset(),
    "metrics": frozenset(),
    "citizen": frozenset({Action.READ, Action.REQUEST_REVIEW, Action.READ_ACCESS_LOG, Action.WITHDRAW_REVIEW}),
}


def _sees(caller: Caller, decision: Decision) -> bool:
    if isinstance(caller, Citizen):
        if caller.decision_id is not None:  # a capability or handover link: its one decision
            return decision.id == caller.decision_id and decision.subject_ref == caller.subject_ref
        return decision.subject_ref == caller.subject_ref
    if caller.role == "auditor":
        return True
    if caller.role == "agency":
        if decision.client_id == caller.id:
            return True
        maker = db.session.get(ApiClient, decision.client_id)
        return maker is not None and maker.role == "agency" and maker.body == caller.body
    if caller.role == "reviewer":
        reviewed = or_(ReviewRequest.decision_id == decision.id, ReviewRequest.rescore_decision_id == decision.id)
        return bool(db.session.execute(select(exists().where(reviewed))).scalar())
    return False


def _check(caller: Caller, action: Action) -> None:
    if action not in ALLOWED.get(caller.role, frozenset()):
        raise Forbidden(f"a {caller.role} may not {action.value.replace('_', ' ')} here")


def visible_decision(caller: Caller, decision_id: str, action: Action = Action.READ) -> Decision:
    """Return the decision when `caller` sees it and may take `action`; NotFound (as for no decision) else."""
    decision = db.session.get(Decision, decision_id)
    if decision is None or not _sees(caller, decision):
        raise NotFound(NOT_FOUND)
    _check(caller, action)
    return decision


def visible_review(caller: Caller, review_id: str, action: Action = Action.READ) -> ReviewRequest:
    """Return the review when `caller` sees its decision and may take `action`; NotFound else."""
    review = db.session.get(ReviewRequest, review_id)
    decision = db.session.get(Decision, review.decision_id) if review is not None else None
    if review is None or decision is None or not _sees(caller, decision):
        raise NotFound(NOT_FOUND)
    _check(caller, action)
    return review


def shows_citizen_link(caller: Caller, decision: Decision) -> bool:
    """Whether a decision view may carry the person's capability link: to the person only.

    Anyone else holding it could act as the person (read their access log, request a review in their
    name). An agency that must hand a link on makes a handover link instead (gateway.handovers).
    """
    return isinstance(caller, Citizen) and caller.via != "handover"


# --- the person's decisions ----------------------------------------------------------------------------

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def keyset_cursor(at: dt.datetime, item_id: str) -> str:
    """The cursor of a list item: its time in microseconds since 1970 and its id (`after=` of the next page)."""
    return f"{(at - EPOCH) // dt.timedelta(microseconds=1)}.{item_id}"


def parse_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """The time and id of a cursor (the schema's pattern has checked its shape: 16 digits at most)."""
    micros, item_id = cursor.split(".", 1)
    return EPOCH + dt.timedelta(microseconds=int(micros)), item_id


def my_decisions(citizen: Citizen, *, limit: int, offset: int,
                 after: str | None = None) -> tuple[list[Decision], Total]:
    """The decisions about an OIDC-authenticated person, newest first, with their number for paging (exact up to
    LIST_COUNT_CAP, a lower bound beyond: counted on the person's index, at most cap + 1 entries read)."""
    if citizen.via != "oidc":
        raise Forbidden("sign in with the national identity provider to list your decisions",
                        code="oidc_required")
    query = select(Decision).where(Decision.subject_ref == citizen.subject_ref)
    total = bounded_count(query, current_settings().list_count_cap)
    if after is not None:
        at, item_id = parse_cursor(after)
        # `created_at <= at` bounds the index range (subject_ref, created_at, id): the page starts at the cursor
        # instead of filtering every newer row; the OR then only drops the cursor's own time's earlier ids.
        query = query.where(Decision.created_at <= at,
                            or_(Decision.created_at < at, and_(Decision.created_at == at, Decision.id < item_id)))
    # Newest first, ties by id descending: the index's order read backwards (no sort, whatever the page).
    rows = db.session.execute(
        query.order_by(Decision.created_at.desc(), Decision.id.desc()).limit(limit).offset(offset)
    ).scalars()
    return list(rows), total


# --- access events --------------------------------------------------------------------------------------

def _who(caller: Caller) -> dict[str, Any]:
    if isinstance(caller, Principal):
        return {"principal_kind": caller.role, "principal_id": caller.id, "principal_body": caller.body}
    return {"principal_kind": "citizen", "principal_id": caller.id, "principal_body": None}


def record_access(caller: Caller, decision_ids: str | Iterable[str], what: str) -> None:
    """Record that `caller` read `what` of these decisions: one short write transaction, after the read."""
    ids = [decision_ids] if isinstance(decision_ids, str) else list(decision_ids)
    if not ids:
        return
    now = utcnow()
    who = _who(caller)
    rows = [{"id": new_id("acc"), "at": now, "decision_id": d, "what": what, **who} for d in ids]
    with write_transaction() as session:
        session.execute(insert(table(AccessEvent)), rows)


def access_log(decision_id: str, *, limit: int, offset: int,
               after: str | None = None) -> tuple[list[AccessEvent], Total]:
    """The access events of one decision, oldest first, with their number for paging (exact up to
    LIST_COUNT_CAP, a lower bound beyond)."""
    query = select(AccessEvent).where(AccessEvent.decision_id == decision_id)
    total = bounded_count(query, current_settings().list_count_cap)
    if after is not None:
        at, item_id = parse_cursor(after)
        # `at >= at` bounds the index range (decision_id, at, id): the page starts at the cursor.
        query = query.where(AccessEvent.at >= at,
                            or_(AccessEvent.at > at, and_(AccessEvent.at == at, AccessEvent.id > item_id)))
    rows = db.session.execute(query.order_by(AccessEvent.at, AccessEvent.id).limit(limit).offset(offset)).scalars()
    return list(rows), total


def latest_access(decision_id: str, count: int) -> list[AccessEvent]:
    """The `count` most recent access events of one decision, newest first (the index read backwards)."""
    return list(db.session.execute(
        select(AccessEvent).where(AccessEvent.decision_id == decision_id)
        .order_by(AccessEvent.at.desc(), AccessEvent.id.desc()).limit(count)).scalars())


def read_access_log(caller: Caller, decision_id: str, *, limit: int, offset: int,
                    after: str | None = None) -> tuple[list[AccessEvent], Total]:
    """Who read a decision and when, for the person and auditors; the read itself is recorded too."""
    visible_decision(caller, decision_id, Action.READ_ACCESS_LOG)
    events, total = access_log(decision_id, limit=limit, offset=offset, after=after)
    record_access(caller, decision_id, "access_log")
    return events, total


def list_my_decisions(caller: Caller, *, limit: int, offset: int,
                      after: str | None = None) -> tuple[list[Decision], Total]:
    """Every decision about the signed-in person, newest first; the listing is recorded as a read."""
    if not isinstance(caller, Citizen):
        raise Forbidden("this list is for the person signed in with the national identity provider",
                        code="oidc_required")
    rows, total = my_decisions(caller, limit=limit, offset=offset, after=after)
    record_access(caller, [d.id for d in rows], "decision_list")
    return rows, total
