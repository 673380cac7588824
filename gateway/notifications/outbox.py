"""The outbox table's state changes, each in one short write transaction.

A dispatcher *claims* due rows by writing its name and a lease expiry on them (PostgreSQL skips rows
another dispatcher holds with ``FOR UPDATE SKIP LOCKED``; SQLite serialises claimers with ``BEGIN
IMMEDIATE``). Rows whose lease ran out are due again, so nothing claimed by a dispatcher that died is
lost. Every later write is fenced by ``claimed_by``: a dispatcher that lost its lease can't overwrite the
result of the one that took the row over. Delivery is therefore at least once; every attempt carries the
notification id, on which receivers de-duplicate.

Statuses: pending → delivered | retrying | dead; retrying → delivered | retrying | dead.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway import rollups
from gateway.db import rowcount, write_transaction
from gateway.extensions import db
from gateway.ids import utcnow
from gateway.jobs import claims
from gateway.jobs.base import KindSettings
from gateway.jobs.claims import retry_delay
from gateway.models import WAITING_NOTICE_SQL, Decision, Notification, NotificationStatus, WebhookEndpoint, table
from gateway.notifications.render import Job
from gateway.rollups import stamp

T = table(Notification)
DUE = (NotificationStatus.PENDING.value, NotificationStatus.RETRYING.value)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    NotificationStatus.PENDING: (NotificationStatus.DELIVERED, NotificationStatus.RETRYING, NotificationStatus.DEAD),
    NotificationStatus.RETRYING: (NotificationStatus.DELIVERED, NotificationStatus.RETRYING, NotificationStatus.DEAD),
    NotificationStatus.DELIVERED: (),
    NotificationStatus.DEAD: (NotificationStatus.PENDING,),  # requeue(), by an operator
}
# A due row not sent for this long after its time (and not held under a lease) counts as overdue.
OVERDUE_AFTER = dt.timedelta(seconds=60)


def claim(owner: str, *, now: dt.datetime, limit: int, lease_s: float) -> list[Job]:
    """Take up to `limit` due rows (oldest first), including rows whose lease expired; return them."""
    rows = claims.claim(
        T, owner, key=T.c.id, due=[T.c.status.in_(DUE), T.c.next_attempt_at <= now],
        order_by=[T.c.next_attempt_at, T.c.id],
        returning=[T.c.id, T.c.decision_id, T.c.kind, T.c.channel, T.c.language, T.c.attempts, T.c.created_at,
                   T.c.context, T.c.next_attempt_at],
        now=now, limit=limit, lease_s=lease_s,
    )
    rows = sorted(rows, key=lambda r: (r.next_attempt_at, r.id))
    return [Job(r.id, r.decision_id, r.kind, r.channel, r.language, r.attempts, r.created_at, r.context) for r in rows]


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt: delivered, or a failure and whether it can ever succeed."""

    job: Job
    at: dt.datetime
    error: str | None = None  # None: delivered
    permanent: bool = False
    retry_after: float | None = None  # the receiver's Retry-After, seconds
    gone_url_sha256: str | None = None  # the receiver answered 410 Gone: disable this endpoint

    @property
    def delivered(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Retries:
    """When a failed notice is tried again and when it is given up: the deliver kind's settings, passed in."""

    schedule: tuple[float, ...]  # delay before attempt n+1 after n failures; the last one repeats
    max_attempts: int  # after this many failed attempts the notice is dead
    jitter: float  # each delay is multiplied by a random factor in [1 - j, 1 + j]

    @classmethod
    def of(cls, settings: KindSettings) -> Retries:
        return cls(settings.retry_schedule, settings.max_attempts, settings.retry_jitter)


def _fenced(job_id: str, owner: str) -> Any:
    return and_(T.c.id == job_id, T.c.claimed_by == owner, T.c.status.in_(DUE))


def _values(outcome: Outcome, retries: Retries | None, rng: random.Random) -> dict[str, Any]:
    done = {"attempts": T.c.attempts + 1, "claimed_by": None, "lease_expires_at": None}
    if outcome.delivered:
        return {**done, "status": NotificationStatus.DELIVERED.value, "delivered_at": outcome.at, "last_error": None,
                "finished_at": stamp(outcome.at)}
    assert outcome.error is not None
    if retries is None:
        raise ValueError("recording a failed attempt needs the deliver kind's retry settings")
    failed = outcome.job.attempts + 1
    if outcome.permanent or failed >= retries.max_attempts:
        return {**done, "status": NotificationStatus.DEAD.value, "last_error": outcome.error[:1000],
                "finished_at": stamp(outcome.at)}
    delay = retry_delay(failed, schedule=retries.schedule, jitter=retries.jitter, rng=rng)
    if outcome.retry_after is not None:  # the receiver asked for a pause: honour it, up to the schedule's longest wait
        delay = max(delay, min(outcome.retry_after, float(max(retries.schedule))))
    return {**done, "status": NotificationStatus.RETRYING.value, "last_error": outcome.error[:1000],
            "next_attempt_at": outcome.at + dt.timedelta(seconds=delay)}


def record(outcomes: Sequence[Outcome], owner: str, *, retries: Retries | None = None,
           rng: random.Random | None = None) -> list[str | None]:
    """Write the results of several attempts in one transaction; the new status of each (None: claim lost).

    Every write is fenced by the claim: a dispatcher whose lease passed to another writes nothing (the
    other one delivers again, with the same id). One transaction per batch rather than per row keeps the
    write lock (SQLite) and the fsyncs away from the decisions being recorded meanwhile.
    """
    if not outcomes:
        return []
    rng = rng or random.Random()
    statuses: list[str | None] = []
    with write_transaction() as session:
        # The rows still held under this claim, locked until commit (PostgreSQL; SQLite holds its write lock):
        # deliveries are then written by one executemany instead of one statement each.
        held = set(session.execute(
            select(T.c.id).where(T.c.id.in_([o.job.id for o in outcomes]), T.c.claimed_by == owner,
                                 T.c.status.in_(DUE)).with_for_update()).scalars())
        delivered = [o for o in outcomes if o.delivered and o.job.id in held]
        if delivered:
            session.execute(
                # Fenced as every write (executemany takes no IN list: the statuses are spelled out).
                update(T).where(T.c.id == bindparam("b_id"), T.c.claimed_by == owner,
                                or_(*(T.c.status == status for status in DUE)))
                .values(attempts=T.c.attempts + 1, claimed_by=None, lease_expires_at=None,
                        status=NotificationStatus.DELIVERED.value, delivered_at=bindparam("b_at"), last_error=None,
                        finished_at=bindparam("b_finished")),
                [{"b_id": o.job.id, "b_at": o.at, "b_finished": stamp(o.at)} for o in delivered])
        for outcome in outcomes:
            if outcome.job.id not in held:
                statuses.append(None)
                continue
            if outcome.delivered:
                statuses.append(NotificationStatus.DELIVERED.value)
                continue
            values = _values(outcome, retries, rng)
            result = session.execute(update(T).where(_fenced(outcome.job.id, owner)).values(**values))
            if rowcount(result) and outcome.gone_url_sha256 is not None:
                _disable_endpoint(session, outcome.gone_url_sha256, outcome.at, outcome.error or "")
            statuses.append(str(values["status"]) if rowcount(result) else None)
    return statuses


def mark_delivered(job: Job, owner: str, *, now: dt.datetime) -> bool:
    """Record a delivery; False when the claim was lost to another dispatcher (which delivers again)."""
    return record([Outcome(job, now)], owner)[0] is not None


def record_failure(job: Job, owner: str, *, now: dt.datetime, error: str, permanent: bool, retries: Retries,
                   retry_after: float | None = None, gone_url_sha256: str | None = None,
                   rng: random.Random | None = None) -> str | None:
    """Schedule the next attempt, or mark the row dead after a permanent failure or the last attempt."""
    outcome = Outcome(job, now, error, permanent, retry_after, gone_url_sha256)
    return record([outcome], owner, retries=retries, rng=rng)[0]


def _disable_endpoint(session: Any, url_sha256: str, now: dt.datetime, reason: str) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(table(WebhookEndpoint)).values(url_sha256=url_sha256, disabled_at=now, reason=reason[:1000])
                    .on_conflict_do_nothing(index_elements=["url_sha256"]))


def disabled_endpoint(url_sha256: str) -> WebhookEndpoint | None:
    """The disabled-endpoint record for a webhook URL's hash, if the gateway stopped sending to it."""
    return db.session.get(WebhookEndpoint, url_sha256)


def release(jobs: Sequence[Job], owner: str) -> int:
    """Give back claimed rows that were not attempted (shutdown): due again at once, not after the lease."""
    return claims.release(T, owner, key=T.c.id, ids=[j.id for j in jobs], due=[T.c.status.in_(DUE)])


def requeue(*, status: str = NotificationStatus.DEAD.value, decision_id: str | None = None,
            now: dt.datetime | None = None) -> int:
    """Send dead rows again from the start of the schedule (after fixing what killed them); return how many."""
    if NotificationStatus.PENDING not in TRANSITIONS[NotificationStatus(status)]:
        raise ValueError(f"{status} notifications can't be requeued")
    condition = [T.c.status == status]
    if decision_id is not None:
        condition.append(T.c.decision_id == decision_id)
    with write_transaction() as session:
        result = session.execute(update(T).where(*condition).values(
            status=NotificationStatus.PENDING.value, attempts=0, next_attempt_at=now or utcnow(),
            claimed_by=None, lease_expires_at=None, finished_at=None,  # finished again later: counted again
        ))
    return rowcount(result)


def notification_stats(model_name: str | None = None, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Counts of notifications by status, kind and model, with retries and overdue rows (for oversight and metrics).

    ``retries`` counts failed attempts that were followed by another attempt: every attempt of a row but
    its successful one (delivered) or its last one (dead). ``overdue`` counts rows due for more than a
    minute that no dispatcher holds: a backlog, or no dispatcher running.
    """
    now = now or utcnow()
    n = Notification
    overdue = and_(n.status.in_(DUE), n.next_attempt_at < now - OVERDUE_AFTER,
                   or_(n.lease_expires_at.is_(None), n.lease_expires_at <= now))
    query = (
        select(Decision.model_name, n.kind, n.status, func.count(), func.coalesce(func.sum(n.attempts), 0),
               func.coalesce(func.sum(case((overdue, 1), else_=0)), 0))
        .join(Decision, Decision.id == n.decision_id)
        .group_by(Decision.model_name, n.kind, n.status)
    )
    if model_name is not None:
        query = query.where(Decision.model_name == model_name)
    statuses = [s.value for s in NotificationStatus]
    empty = dict.fromkeys(statuses, 0)
    stats: dict[str, Any] = {"total": 0, "by_status": dict(empty), "retries": 0, "overdue": 0, "by_kind": {},
                             "by_model": {}}
    for model, kind, status, count, attempts, late in db.session.execute(query).all():
        retries = int(attempts) - (int(count) if status in (NotificationStatus.DELIVERED, NotificationStatus.DEAD) else 0)
        stats["total"] += count
        stats["by_status"][status] = stats["by_status"].get(status, 0) + count
        stats["retries"] += retries
        stats["overdue"] += int(late)
        stats["by_kind"].setdefault(kind, dict(empty))[status] += count
        per_model = stats["by_model"].setdefault(model, {**empty, "total": 0, "retries": 0, "overdue": 0})
        per_model[status] += count
        per_model["total"] += count
        per_model["retries"] += retries
        per_model["overdue"] += int(late)
    return stats


def notification_metrics(now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Per model what /metrics shows: delivered, dead and retried counts, notifications by status, overdue ones.

    Nothing here reads the delivered history: finished notifications are counted once by the rollups
    (gateway.rollups, by the time they finished), and only the rows still to send (pending, retrying) and the dead
    letters an operator has not requeued are read, through the (status, next_attempt_at) index. The counters count
    events: a dead notice requeued and delivered later counts once as dead and once as delivered; the gauge of dead
    notifications is the rows dead now.
    """
    now = now or utcnow()
    n = Notification
    overdue = and_(n.status.in_(DUE), n.next_attempt_at < now - OVERDUE_AFTER,
                   or_(n.lease_expires_at.is_(None), n.lease_expires_at <= now))
    empty = dict.fromkeys([s.value for s in NotificationStatus], 0) | {"delivered_total": 0, "dead_total": 0,
                                                                        "retries": 0, "overdue": 0}
    by_model: dict[str, dict[str, int]] = {}
    for (model, key), value in rollups.counts(rollups.NOTIFICATIONS, now).items():
        row = by_model.setdefault(model, dict(empty))
        if key == "retries":
            row["retries"] += value
        else:  # delivered, dead: a delivered notification stays delivered, so its gauge is its count
            row[f"{key}_total"] += value
            if key == NotificationStatus.DELIVERED:
                row[key] += value
    waiting = db.session.execute(
        select(n.decision_id, n.status, n.attempts, case((overdue, 1), else_=0))
        .where(text(f"notifications.{WAITING_NOTICE_SQL}"))  # the partial index of the rows waiting, word for word
    ).all()
    names = rollups.model_names(r[0] for r in waiting)
    for decision_id, status, attempts, late in waiting:
        row = by_model.setdefault(names[decision_id], dict(empty))
        row[status] += 1
        row["overdue"] += int(late)
        if status in DUE:  # every attempt of a row still to send failed and is retried
            row["retries"] += int(attempts or 0)
    return by_model
