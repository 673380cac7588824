"""Engine set-up: SQLite durability and locking, PostgreSQL pooling; write transactions."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import Engine, Select, event, func, literal_column, select
from sqlalchemy.orm import Session

from gateway.extensions import db


def engine_options(app: Flask, url: str | None = None) -> dict[str, Any]:
    """Return SQLAlchemy engine options for the configured database (or the database at `url`)."""
    url = url or app.config["SQLALCHEMY_DATABASE_URI"]
    options: dict[str, Any] = copy.deepcopy(dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}))
    # Statement parameters are personal data (inputs, contact ciphertext, reasons, points of view): an error
    # message that is logged (or echoed) must not carry them.
    options["hide_parameters"] = True
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
        # Deleted and overwritten content is zeroed, not left in free pages: the retention purge must leave
        # no trace of the person's data in the database file (gateway.retention).
        cursor.execute("PRAGMA secure_delete=ON")
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


def rowcount(result: Any) -> int:
    """How many rows an UPDATE or DELETE touched (Result's type does not show CursorResult.rowcount)."""
    return int(result.rowcount)


@dataclass(frozen=True)
class Total:
    """How many items a list holds: exact up to a cap; beyond it the cap itself, flagged as a lower bound."""

    value: int
    lower_bound: bool = False

    def __str__(self) -> str:
        return f"{self.value}+" if self.lower_bound else str(self.value)


def bounded_count(query: Select[Any], cap: int) -> Total:
    """Count the rows `query` selects, reading at most `cap` + 1 of them.

    `SELECT count(*) FROM (SELECT 1 ... LIMIT cap + 1)`: the count of a list costs O(cap) (an index range read
    when the filter has one), never O(table), so a page's cost does not grow with the record. Beyond the cap
    the answer is the cap, flagged as a lower bound (Elasticsearch's track_total_hits does the same).
    """
    inner: Select[Any] = query.with_only_columns(literal_column("1"), maintain_column_froms=True).order_by(None).limit(cap + 1)
    found = int(db.session.execute(select(func.count()).select_from(inner.subquery())).scalar_one())
    return Total(min(found, cap), found > cap)
