"""Counts for /metrics whose cost does not grow with the tables: closed periods rolled up once, the open tail read.

A *stream* is one kind of event with the indexed column that holds its time: a decision made (created_at), a
notification finished (delivered or given up: finished_at), a review requested (requested_at) or finished (resolved
or withdrawn: finished_at), an explanation or recourse job finished (finished_at), a decision purged (purged_at).

`counts(stream, now)` adds up
- the stored counts of closed time (metric_rollups): the events before the stream's watermark `closed_until`,
- and the events from the watermark on, read from their table through the index on their time (the open tail);
and first moves the watermark up to the last whole period (METRICS_ROLLUP_PERIOD_S, an hour) that ended at least
METRICS_ROLLUP_SETTLE_S (600 s) ago, adding the counts of the periods it closes. Those are computed with a plain read
and written in one short write transaction, only if no other process closed them meanwhile (one per database, not one
per process, whatever the number of workers refreshing). So a refresh costs O(events of the last period and a
settle), never O(rows stored). The first refresh of a database closes what is already there, once.

The watermark is a time, not an id: autoincrement ids do not follow commit order on PostgreSQL. Each event is
stamped in the transaction that commits it with the later of its own time and the moment it is written (`stamp`);
only a transaction that commits more than METRICS_ROLLUP_SETTLE_S after that moment could fall behind a closed
period and go uncounted (the gateway keeps write transactions to well under a second).

Hourly streams (decisions) keep one row per period, so a window of days sums its periods; total streams keep one
running total. A window's periods are kept from the first window asked for (`covered_from`); a wider window later
closes the missing periods before it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from gateway.db import write_transaction
from gateway.extensions import db
from gateway.ids import utcnow
from gateway.models import (
    REVIEW_KIND,
    Decision,
    Explanation,
    ExplanationStatus,
    MetricRollup,
    MetricWatermark,
    Notification,
    NotificationStatus,
    Recourse,
    RecourseStatus,
    ReviewRequest,
    ReviewStatus,
    ScoringModel,
    table,
)
from gateway.settings import current_settings

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ALL = "*"  # the model label of streams counted for every model at once (the jobs' figures are per kind)
Row = tuple[dt.datetime | None, str, str, int]  # (event time or None, model, key, count)
Counts = Counter[tuple[str, str]]  # (model, key) -> count


def stamp(at: dt.datetime) -> dt.datetime:
    """The time to record a finished event by: its own, or the moment it is written if that is later."""
    return max(at, utcnow())


@dataclass(frozen=True)
class Stream:
    """A kind of event: its name, its indexed time column, and how to count its rows under some conditions."""

    name: str
    time: Any
    # read(conditions, by_time): (time or None, model, key, count) rows; by_time: one row per distinct time.
    read: Callable[[Sequence[Any], bool], Iterable[Row]]
    hourly: bool = False


def _decisions(where: Sequence[Any], by_time: bool) -> Iterable[Row]:
    """Decisions and adverse ones, model by model: each a range of the (model_name, created_at) index (grouped over
    all models at once, a planner may walk that whole index instead)."""
    d = Decision
    for model in db.session.execute(select(ScoringModel.name).distinct()).scalars().all():
        keys = [d.created_at] if by_time else []
        query = (select(*keys, func.count(), func.sum(case((d.adverse, 1), else_=0)))
                 .where(d.model_name == model, *where))
        if keys:
            query = query.group_by(*keys)
        for row in db.session.execute(query):
            values: tuple[Any, ...] = tuple(row)
            at = values[0] if by_time else None
            count, adverse = int(values[-2]), int(values[-1] or 0)
            if count:
                yield at, model, "decisions", count
                yield at, model, "adverse", adverse


FINAL_NOTICE = (NotificationStatus.DELIVERED.value, NotificationStatus.DEAD.value)


# The other streams read their rows in the range and count them here: without a GROUP BY, a planner has no reason
# to walk a whole index in group order instead of the range of the time index (SQLite's estimates invite it).

def _notifications(where: Sequence[Any], by_time: bool) -> Iterable[Row]:
    """Delivered and dead notifications, and `retries`: every attempt of theirs but the last one."""
    n = Notification
    found: Counter[tuple[str, str]] = Counter()
    for model, status, attempts in db.session.execute(
            select(Decision.model_name, n.status, n.attempts).select_from(n)
            .join(Decision, Decision.id == n.decision_id).where(*where, n.status.in_(FINAL_NOTICE))):
        found[(model, status)] += 1
        found[(model, "retries")] += int(attempts or 0) - 1
    for (model, key), count in found.items():
        yield None, model, key, count


def _reviews_requested(where: Sequence[Any], by_time: bool) -> Iterable[Row]:
    r = ReviewRequest
    found = Counter(db.session.execute(select(Decision.model_name).select_from(r)
                                       .join(Decision, Decision.id == r.decision_id)
                                       .where(*where, r.kind == REVIEW_KIND)).scalars())
    for model, count in found.items():
        yield None, model, "requested", count


FINAL_REVIEW = (ReviewStatus.RESOLVED.value, ReviewStatus.WITHDRAWN.value)


def _reviews_finished(where: Sequence[Any], by_time: bool) -> Iterable[Row]:
    r = ReviewRequest
    found = Counter(db.session.execute(select(Decision.model_name, r.status).select_from(r)
                                       .join(Decision, Decision.id == r.decision_id)
                                       .where(*where, r.kind == REVIEW_KIND, r.status.in_(FINAL_REVIEW))).all())
    for (model, status), count in found.items():
        yield None, model, status, count


def _jobs(column: Any, failed: str) -> Callable[[Sequence[Any], bool], Iterable[Row]]:
    def read(where: Sequence[Any], by_time: bool) -> Iterable[Row]:
        found = Counter("dead" if status == failed else "done"
                        for status in db.session.execute(select(column).where(*where)).scalars())
        for key, count in found.items():
            yield None, ALL, key, count
    return read


def _purged(where: Sequence[Any], by_time: bool) -> Iterable[Row]:
    yield None, ALL, "done", int(db.session.execute(select(func.count()).select_from(Decision).where(*where))
                                 .scalar_one())


DECISIONS = Stream("decisions", Decision.created_at, _decisions, hourly=True)
NOTIFICATIONS = Stream("notifications_finished", Notification.finished_at, _notifications)
REVIEWS_REQUESTED = Stream("reviews_requested", ReviewRequest.requested_at, _reviews_requested)
REVIEWS_FINISHED = Stream("reviews_finished", ReviewRequest.finished_at, _reviews_finished)
EXPLAIN_JOBS = Stream("explain_jobs_finished", Explanation.finished_at,
                      _jobs(Explanation.status, ExplanationStatus.FAILED.value))
RECOURSE_JOBS = Stream("recourse_jobs_finished", Recourse.finished_at, _jobs(Recourse.status, RecourseStatus.FAILED.value))
PURGED = Stream("decisions_purged", Decision.purged_at, _purged)


# --- closing periods and reading ---------------------------------------------------------------------------

def _settings() -> tuple[dt.timedelta, dt.timedelta]:
    settings = current_settings()
    return (dt.timedelta(seconds=settings.metrics_rollup_period_s),
            dt.timedelta(seconds=settings.metrics_rollup_settle_s))


def period_of(at: dt.datetime, period: dt.timedelta) -> dt.datetime:
    """The start of the period that holds `at` (periods counted from 1970-01-01 UTC)."""
    return EPOCH + ((at - EPOCH) // period) * period


def _read(stream: Stream, lo: dt.datetime | None, hi: dt.datetime | None, by_time: bool) -> Iterable[Row]:
    where = ([stream.time >= lo] if lo is not None else []) + ([stream.time < hi] if hi is not None else [])
    if lo is None and hi is None:
        where = [stream.time.is_not(None)]
    return stream.read(where, by_time)


def _close(stream: Stream, mark: MetricWatermark | None, closable: dt.datetime, since: dt.datetime | None,
           period: dt.timedelta) -> None:
    """Add the counts of the periods between the watermark (or `since`) and `closable`, and move the watermark."""
    was = None if mark is None else (mark.covered_from, mark.closed_until)
    ranges: list[tuple[dt.datetime | None, dt.datetime]] = []
    if mark is None:
        covered_from = since if stream.hourly and since is not None else EPOCH
        ranges.append((covered_from if stream.hourly else None, closable))
        closed_until = closable
    else:
        covered_from, closed_until = mark.covered_from, max(mark.closed_until, closable)
        if stream.hourly and since is not None and since < covered_from:
            ranges.append((since, covered_from))
            covered_from = since
        if mark.closed_until < closable:
            ranges.append((mark.closed_until, closable))
    found: Counter[tuple[dt.datetime, str, str]] = Counter()
    for lo, hi in ranges:
        for at, model, key, value in _read(stream, lo, hi, stream.hourly):
            if value:
                found[(period_of(at, period) if stream.hourly and at is not None else EPOCH, model, key)] += value
    db.session.commit()  # end the read before taking the write lock
    rollups = table(MetricRollup)
    try:
        with write_transaction() as session:
            current = session.get(MetricWatermark, stream.name, with_for_update=True, populate_existing=True)
            if (None if current is None else (current.covered_from, current.closed_until)) != was:
                return  # another process closed these periods meanwhile: its counts stand
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            for (start, model, key), value in sorted(found.items()):
                statement = insert(rollups).values(stream=stream.name, period_start=start, model_name=model, key=key,
                                                   value=value)
                session.execute(statement.on_conflict_do_update(
                    index_elements=["stream", "period_start", "model_name", "key"],
                    set_={"value": rollups.c.value + statement.excluded.value}))
            if current is None:
                session.add(MetricWatermark(stream=stream.name, covered_from=covered_from, closed_until=closed_until))
            else:
                current.covered_from, current.closed_until = covered_from, closed_until
    except IntegrityError:  # another process made the watermark first (PostgreSQL): its counts stand
        db.session.rollback()


def counts(stream: Stream, now: dt.datetime | None = None, *, since: dt.datetime | None = None) -> Counts:
    """Events of `stream` per (model, key): every one, or for an hourly stream those from `since` on.

    `since` must fall on a period boundary (a UTC day does, with the default hour).
    """
    now = now or utcnow()
    period, settle = _settings()
    # Never close a period by a clock ahead of the wall clock (a test's or a task's `now`): later events would miss it.
    closable = period_of(min(now, utcnow()) - settle, period)
    mark = db.session.get(MetricWatermark, stream.name, populate_existing=True)
    wider = stream.hourly and since is not None and mark is not None and since < mark.covered_from
    if mark is None or mark.closed_until < closable or wider:
        _close(stream, mark, closable, since, period)
        mark = db.session.get(MetricWatermark, stream.name, populate_existing=True)
    total: Counts = Counter()
    if mark is None:  # closing lost a race and left nothing yet: read everything (once)
        tail_from = since if stream.hourly else None
    else:
        stored = (select(MetricRollup.model_name, MetricRollup.key, func.sum(MetricRollup.value))
                  .where(MetricRollup.stream == stream.name).group_by(MetricRollup.model_name, MetricRollup.key))
        if stream.hourly and since is not None:
            stored = stored.where(MetricRollup.period_start >= since)
        for model, key, value in db.session.execute(stored):
            total[(model, key)] += int(value)
        tail_from = mark.closed_until if since is None or not stream.hourly else max(mark.closed_until, since)
    for _, model, key, value in _read(stream, tail_from, None, False):
        total[(model, key)] += value
    return total


def per_model(found: Counts) -> dict[str, dict[str, int]]:
    """{model: {key: count}} from (model, key) counts."""
    result: dict[str, dict[str, int]] = {}
    for (model, key), value in found.items():
        result.setdefault(model, {})[key] = value
    return result


def model_names(decision_ids: Iterable[str], chunk: int = 500) -> dict[str, str]:
    """The model name of each of these decisions, by primary key.

    Open rows (notices to send, claimed or overdue cases) are read first through their own index and named after;
    joined in one query, a planner may instead walk every decision in model order to group them.
    """
    ids = sorted(set(decision_ids))
    found: dict[str, str] = {}
    for start in range(0, len(ids), chunk):
        found.update((d, m) for d, m in db.session.execute(select(Decision.id, Decision.model_name)
                                                             .where(Decision.id.in_(ids[start:start + chunk]))))
    return found
