"""Engine set-up: SQLite durability and locking, PostgreSQL pooling; write transactions; lease claims."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from flask import Flask
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Engine,
    Row,
    Table,
    event,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from gateway.extensions import db


def engine_options(app: Flask) -> dict[str, Any]:
    """Return SQLAlchemy engine options for the configured database."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    options: dict[str, Any] = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {})
        options["connect_args"].setdefault("timeout", float(app.config["SQLITE_BUSY_TIMEOUT_S"]))
        options["connect_args"].setdefault("check_same_thread", False)
    else:
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_size", 10)
    return options


def configure_engine(engine: Engine) -> None:
    """On SQLite: WAL, synchronous=FULL, foreign keys, and explicit BEGIN (IMMEDIATE for writers)."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event emit BEGIN itself, instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is locked"
        # when another writer committed in between; writers take the lock up front instead.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_transaction() -> Iterator[Session]:
    """Run one use case's writes in one transaction that holds the write lock from its start."""
    session = db.session()  # the request's (or command's) Session behind the scoped proxy
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("write_transaction() entered with unflushed changes in the session")
        session.commit()  # end the read transaction that came before
    session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def claim_rows(
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
    candidates = (
        select(key)
        .where(*due, or_(table.c.lease_expires_at.is_(None), table.c.lease_expires_at <= now))
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with write_transaction() as session:
        rows = session.execute(
            update(table)
            .where(key.in_(candidates.scalar_subquery()))
            .values(claimed_by=owner, lease_expires_at=now + dt.timedelta(seconds=lease_s))
            .returning(*returning)
        ).all()
    return list(rows)


def release_rows(table: Table, owner: str, *, key: Any, ids: Sequence[Any], due: Sequence[ColumnElement[bool]]) -> int:
    """Give back claimed rows that were not attempted (shutdown): due again at once, not after the lease."""
    if not ids:
        return 0
    with write_transaction() as session:
        result = cast(CursorResult[Any], session.execute(
            update(table).where(key.in_(list(ids)), table.c.claimed_by == owner, *due)
            .values(claimed_by=None, lease_expires_at=None)
        ))
    return int(result.rowcount)
