"""Looking over the records: the auditors' search and export, and a signed-in person's own decisions.

Pages are keyset pages (newest first, by ``(created_at, id)``), so page 1,000 costs what page 1 costs and an
export walks the whole result one page at a time without ever holding it. Every page an auditor reads (a
search result, an export's page) and every list a person reads is recorded in the access log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select

from gateway import deadlines
from gateway.access import record_access
from gateway.auth import Caller, Citizen, Principal
from gateway.errors import Forbidden
from gateway.extensions import db
from gateway.ids import isoformat
from gateway.models import OPEN_REVIEW, REVIEW_KIND, Decision, ReviewRequest
from gateway.settings import current_settings

EXPORT_PAGE = 1000
EXPORT_COLUMNS = ("decision_id", "created_at", "model_name", "model_version", "outcome", "effective_outcome", "adverse",
                  "score", "role_of_ai", "reference", "reviewed", "overturned")


@dataclass(frozen=True)
class Filters:
    """What an auditor searches by; None means any."""

    model: str | None = None
    version: str | None = None
    date_from: dt.date | None = None  # local days of the deployment, both ends included
    date_to: dt.date | None = None
    outcome: str | None = None  # the decision's own outcome (as the system decided)
    adverse: bool | None = None
    reviewed: bool | None = None  # a review was resolved
    overturned: bool | None = None  # a review changed or annulled it
    reference: str | None = None


Cursor = tuple[dt.datetime, str]  # (created_at, id) of the last row of the previous page


def _auditor(caller: Caller) -> Principal:
    if not isinstance(caller, Principal) or caller.role != "auditor":
        raise Forbidden("only auditors search and export the records", code="auditor_only")
    return caller


def _where(filters: Filters) -> list[Any]:
    zone = current_settings().zone
    where: list[Any] = []
    if filters.model:
        where.append(Decision.model_name == filters.model)
    if filters.version:
        where.append(Decision.model_version == filters.version)
    if filters.date_from:
        where.append(Decision.created_at >= deadlines.end_of_day(filters.date_from - dt.timedelta(days=1), zone))
    if filters.date_to:
        where.append(Decision.created_at < deadlines.end_of_day(filters.date_to, zone))
    if filters.outcome:
        where.append(Decision.outcome == filters.outcome)
    if filters.adverse is not None:
        where.append(Decision.adverse.is_(filters.adverse))
    if filters.reviewed is not None:
        resolved = exists().where(ReviewRequest.decision_id == Decision.id, ReviewRequest.kind == REVIEW_KIND,
                                  ReviewRequest.status == "resolved")
        where.append(resolved if filters.reviewed else ~resolved)
    if filters.overturned is not None:
        changed = Decision.effective_review_id.is_not(None) & (Decision.effective_outcome != Decision.outcome)
        where.append(changed if filters.overturned else ~changed)
    if filters.reference:
        where.append(Decision.reference == filters.reference)
    return where


def _page(where: list[Any], after: Cursor | None, limit: int) -> list[Decision]:
    query = select(Decision).where(*where)
    if after is not None:
        at, last = after
        query = query.where(or_(Decision.created_at < at, and_(Decision.created_at == at, Decision.id < last)))
    rows = list(db.session.execute(query.order_by(Decision.created_at.desc(), Decision.id.desc()).limit(limit)).scalars())
    for row in rows:
        # Read-only copies: the access log's commit that follows would otherwise expire them, and every
        # attribute read after it would load its row again (one query per row).
        db.session.expunge(row)
    return rows


def cursor_of(row: Decision) -> Cursor:
    return (row.created_at, row.id)


def search(caller: Caller, filters: Filters, *, after: Cursor | None = None,
           limit: int = 50) -> tuple[list[Decision], bool]:
    """One page of decisions matching `filters`, newest first, and whether more follow; the read is
    recorded for each decision on the page."""
    auditor = _auditor(caller)
    rows = _page(_where(filters), after, limit + 1)
    rows, more = rows[:limit], len(rows) > limit
    record_access(auditor, [r.id for r in rows], "audit_search")
    return rows, more


def _reviewed(ids: list[str]) -> set[str]:
    if not ids:
        return set()
    return set(db.session.execute(select(ReviewRequest.decision_id).where(
        ReviewRequest.decision_id.in_(ids), ReviewRequest.kind == REVIEW_KIND, ReviewRequest.status == "resolved")).scalars())


def export_rows(caller: Caller, filters: Filters, *, page: int = EXPORT_PAGE) -> Iterator[list[dict[str, Any]]]:
    """The whole search result, one keyset page of rows at a time (never all of it in memory).

    Each page is recorded in the access log as an export read before it is handed on."""
    auditor = _auditor(caller)
    where = _where(filters)
    after: Cursor | None = None
    while True:
        rows = _page(where, after, page)
        if not rows:
            return
        reviewed = _reviewed([r.id for r in rows])
        record_access(auditor, [r.id for r in rows], "audit_export")  # recorded before the rows are handed on
        yield [{
            "decision_id": r.id, "created_at": isoformat(r.created_at), "model_name": r.model_name,
            "model_version": r.model_version, "outcome": r.outcome, "effective_outcome": r.effective_outcome,
            "adverse": bool(r.adverse), "score": float(r.score), "role_of_ai": r.role_of_ai,
            "reference": r.reference, "reviewed": r.id in reviewed,
            "overturned": r.effective_review_id is not None and r.effective_outcome != r.outcome,
        } for r in rows]
        if len(rows) < page:
            return
        after = cursor_of(rows[-1])


# --- the person's own decisions -----------------------------------------------------------------------------

def _person(caller: Caller) -> Citizen:
    if not isinstance(caller, Citizen) or caller.via != "oidc":
        raise Forbidden("sign in with the identity provider to list your decisions", code="oidc_required")
    return caller


def my_decisions(caller: Caller, *, after: Cursor | None = None, limit: int = 20) -> tuple[list[Decision], bool]:
    """One page of the decisions about the signed-in person, newest first, and whether more follow;
    recorded as a read of each decision on the page."""
    person = _person(caller)
    rows = _page([Decision.subject_ref == person.subject_ref], after, limit + 1)
    rows, more = rows[:limit], len(rows) > limit
    record_access(person, [r.id for r in rows], "decision_list")
    return rows, more


def my_open_reviews(caller: Caller) -> list[ReviewRequest]:
    """The person's review requests still open, soonest due first."""
    person = _person(caller)
    due = func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at)
    rows = db.session.execute(
        select(ReviewRequest).join(Decision, Decision.id == ReviewRequest.decision_id)
        .where(Decision.subject_ref == person.subject_ref, ReviewRequest.kind == REVIEW_KIND,
               ReviewRequest.status.in_(OPEN_REVIEW))
        .order_by(due, ReviewRequest.id)
    ).scalars()
    return list(rows)


def all_my_decisions(caller: Caller) -> Iterator[Decision]:
    """Every decision about the person, newest first, a keyset page at a time (for the JSON download)."""
    person = _person(caller)
    after: Cursor | None = None
    while True:
        rows = _page([Decision.subject_ref == person.subject_ref], after, 200)
        yield from rows
        if len(rows) < 200:
            return
        after = cursor_of(rows[-1])
