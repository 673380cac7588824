"""Claiming due rows of a job table under a lease, on PostgreSQL and SQLite alike."""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets
import socket
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Row, Table, or_, select, update

from gateway.db import write_transaction
from gateway.extensions import db


def owner_name() -> str:
    """A name unique to one runner, written into the rows it claims (the fence of every later write)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def retry_delay(failed_attempts: int, *, schedule: Sequence[float], jitter: float, rng: random.Random) -> float:
    """Seconds to wait after the `failed_attempts`-th failure: the schedule's entry (its last one repeats), ± jitter."""
    base = float(schedule[min(failed_attempts, len(schedule)) - 1])
    return max(0.0, base * rng.uniform(1.0 - jitter, 1.0 + jitter))


def claim(
    table: Table,
    owner: str,
    *,
    key: Any,
    due: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    returning: Sequence[Any],
    now: dt.datetime,
    limit: int,
    lease_s: float,
) -> list[Row[Any]]:
    """Take up to `limit` due rows of `table` (in `order_by` order), rows whose lease expired included.

    The table needs ``claimed_by`` and ``lease_expires_at`` columns; `key` is its primary key column and
    `due` the kind's condition for a row to be worked on. PostgreSQL skips rows another runner is claiming
    (``FOR UPDATE SKIP LOCKED``); SQLite has no row locks, and the write transaction (``BEGIN IMMEDIATE``)
    serialises claimers instead. Returns the `returning` columns of the claimed rows, in order.
    """
    claimable = [*due, or_(table.c.lease_expires_at.is_(None), table.c.lease_expires_at <= now)]
    # Look before taking the write lock: an idle runner (most polls of most kinds) then never holds up the
    # decisions' commits (SQLite: one writer at a time, and a writer kept waiting sleeps in its busy handler).
    reader = db.session()
    if not (reader.new or reader.dirty or reader.deleted):  # else write_transaction() refuses, as it always did
        found = reader.execute(select(key).where(*claimable).limit(1)).first()
        reader.commit()
        if found is None:
            return []
    candidates = select(key).where(*claimable).order_by(*order_by).limit(limit).with_for_update(skip_locked=True)
    with write_transaction() as session:
        rows = session.execute(
            update(table)
            .where(key.in_(candidates.scalar_subquery()))
            .values(claimed_by=owner, lease_expires_at=now + dt.timedelta(seconds=lease_s))
            .returning(*returning)
        ).all()
    return list(rows)


def release(table: Table, owner: str, *, key: Any, ids: Sequence[Any], due: Sequence[ColumnElement[bool]]) -> int:
    """Give back claimed rows that were not attempted (shutdown): due again at once, not after the lease."""
    if not ids:
        return 0
    with write_transaction() as session:
        result = cast(CursorResult[Any], session.execute(
            update(table).where(key.in_(list(ids)), table.c.claimed_by == owner, *due)
            .values(claimed_by=None, lease_expires_at=None)
        ))
    return int(result.rowcount)
