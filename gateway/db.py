"""Engine set-up: SQLite durability and locking, PostgreSQL pooling; write transactions."""

from __future__ import annotations

import copy
import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine, Select, event, func, literal_column, select
from sqlalchemy.exc import OperationalError
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


def configure_engine(engine: Engine, busy_timeout_s: float = 30.0) -> None:
    """On SQLite: WAL, synchronous=FULL, foreign keys, explicit BEGIN (IMMEDIATE for writers), and writers
    that wait for their turn on a lock file beside a database file (`WriterTurns`)."""
    if engine.dialect.name != "sqlite":
        return
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        _TURNS[engine] = WriterTurns(Path(f"{database}-writers.lock"), busy_timeout_s)

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


class WriterTurns:
    """Writers of one SQLite database file take turns on a lock file beside it, instead of in SQLite.

    SQLite lets one writer in at a time; the others retry in its busy handler, which sleeps 1, 2, 5, 10, 15,
    20, 25 … 100 ms between tries whatever the holder is doing. The gateway's write transactions last about a
    millisecond, so a writer that found the lock taken slept on long after it was free: under load, two
    serving workers and their jobs threads spent more time asleep than writing, with cores idle (measured:
    most BEGIN IMMEDIATEs under 16 clients waited, 15 ms on average). Here a writer first takes an exclusive
    `flock` on `<database>-writers.lock`, trying again after 50 µs, doubling up to 0.5 ms, so it starts
    within half a millisecond of the holder's commit; then BEGIN IMMEDIATE finds SQLite's lock free.

    Only a scheduling aid: SQLite's own lock still admits one writer. A process that takes no turn (the
    sqlite3 shell, a backup) is waited for in SQLite's busy handler, as before. The wait for a turn is
    bounded by the same busy timeout; past it, the same "database is locked" error as SQLite's.

    flock is held by an open file description: each thread opens the file itself (threads of one process
    then exclude each other too), and again after a fork (a child shares its parent's descriptions).
    """

    FIRST_WAIT_S = 50e-6
    LONGEST_WAIT_S = 500e-6

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _fd(self) -> int:
        held: _LockFile | None = getattr(self._local, "file", None)
        if held is None or held.pid != os.getpid():
            # A forked child drops its parent's description without closing it (the parent's is still in use).
            held = _LockFile(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600), os.getpid())
            self._local.file = held
        return held.fd

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold this database's writer turn (wait for it up to the busy timeout; a thread that holds it already
        keeps it until its outer turn ends)."""
        if getattr(self._local, "holding", None) == os.getpid():  # (a forked child holds nothing of its parent's)
            yield
            return
        fd = self._fd()
        deadline = time.monotonic() + self.timeout_s
        wait = self.FIRST_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, TimeoutError(
                        f"database is locked: no writer turn on {self.path.name} within {self.timeout_s:g} s"
                    )) from None
                time.sleep(wait)
                wait = min(wait * 2, self.LONGEST_WAIT_S)
        self._local.holding = os.getpid()
        try:
            yield
        finally:
            self._local.holding = None
            fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass
class _LockFile:
    fd: int
    pid: int

    def __del__(self) -> None:  # the thread ended (its locals go): close its description in the process that opened it
        if self.pid == os.getpid():
            os.close(self.fd)


_TURNS: weakref.WeakKeyDictionary[Engine, WriterTurns] = weakref.WeakKeyDictionary()


def writer_turns(engine: Engine) -> WriterTurns | None:
    """The writer turns of an SQLite file's engine (None: PostgreSQL, an in-memory database)."""
    return _TURNS.get(engine)


@contextmanager
def write_transaction() -> Iterator[Session]:
    """Run one use case's writes in one transaction that holds the write lock from its start.

    On an SQLite file the writer first waits for its turn (`WriterTurns`), held until the commit returns.
    """
    session = db.session()  # the request's (or command's) Session behind the scoped proxy
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("write_transaction() entered with unflushed changes in the session")
        session.commit()  # end the read transaction that came before
    bind = session.get_bind()
    turns = _TURNS.get(bind) if isinstance(bind, Engine) else None
    with turns.turn() if turns is not None else nullcontext():
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
