"""Writers of one SQLite file take turns on a lock file beside it (gateway.db.WriterTurns), not in SQLite's
busy handler: threads and processes exclude each other, a forked child is not its parent, a turn that does not
come within the busy timeout is the same "database is locked" refusal, and nothing is written half."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.db import WriterTurns, write_transaction, writer_turns
from gateway.extensions import db
from gateway.models import Decision
from tests.conftest import Gateway


def turns_of(gateway: Gateway) -> WriterTurns:
    with gateway.app.app_context():
        turns = writer_turns(db.engine)
    assert turns is not None
    return turns


def taken_elsewhere(path: Path) -> bool:
    """Whether another open file description holds the writers' lock (tried without waiting)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


@contextmanager
def held_elsewhere(path: Path) -> Iterator[None]:
    """Hold the writers' lock as another process's writer would."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_a_write_transaction_holds_the_turn_until_its_commit_returns(gateway: Gateway) -> None:
    turns = turns_of(gateway)
    database = sa.make_url(gateway.app.config["SQLALCHEMY_DATABASE_URI"]).database
    assert turns.path == Path(f"{database}-writers.lock")
    with gateway.app.app_context():
        with write_transaction():
            assert taken_elsewhere(turns.path)
            with write_transaction():  # nested: the outer turn is kept, not released by the inner one
                pass
            assert taken_elsewhere(turns.path)
        assert not taken_elsewhere(turns.path)
        with pytest.raises(RuntimeError, match="boom"), write_transaction():
            raise RuntimeError("boom")
        assert not taken_elsewhere(turns.path)  # a rollback gives the turn back too


def test_a_waiting_writer_begins_only_after_the_holder_committed(gateway: Gateway) -> None:
    """A second thread's writer waits at the lock file, not inside SQLite: it issues no BEGIN until the first
    has committed, then writes."""
    app = gateway.app
    events: list[str] = []
    entered, release = threading.Event(), threading.Event()

    with app.app_context():
        engine = db.engine

    @sa.event.listens_for(engine, "begin")
    def _began(conn: sa.Connection) -> None:
        events.append(f"begin {threading.current_thread().name}")

    def holder() -> None:
        with app.app_context(), write_transaction():
            entered.set()
            release.wait(30)
            events.append("holder commits")

    def waiter() -> None:
        with app.app_context(), write_transaction() as session:
            session.execute(sa.text("UPDATE decisions SET operator = operator WHERE 0"))
            events.append("waiter wrote")

    first = threading.Thread(target=holder, name="holder")
    second = threading.Thread(target=waiter, name="waiter")
    try:
        first.start()
        assert entered.wait(30)
        second.start()
        second.join(0.3)  # the waiter is waiting for its turn (it cannot finish before the holder)
        assert second.is_alive() and "begin waiter" not in events
    finally:
        release.set()
        first.join(30)
        second.join(30)
        sa.event.remove(engine, "begin", _began)
    assert events.index("holder commits") < events.index("begin waiter") < events.index("waiter wrote")


def _child_tries(turns: WriterTurns, go: Any, result: Any) -> None:
    go.wait(30)
    try:
        with turns.turn():
            result.put("took the turn")
    except sa.exc.OperationalError as exc:
        result.put(str(exc.orig))


def test_a_forked_child_does_not_share_its_parents_turn(gateway: Gateway) -> None:
    """Threads don't survive a fork, their locals do: the child opens the lock file again, so a worker forked
    from a parent that wrote (gunicorn's preloaded app) excludes its parent and its sibling."""
    turns = WriterTurns(turns_of(gateway).path, timeout_s=0.2)
    fork = multiprocessing.get_context("fork")

    def child_answer(*, fork_while_holding: bool) -> str:
        go, result = fork.Event(), fork.Queue()
        child = fork.Process(target=_child_tries, args=(turns, go, result))
        with turns.turn():  # this thread's description of the file exists and holds the lock
            if fork_while_holding:
                child.start()
        if not fork_while_holding:  # forked while the parent only had the file open
            child.start()
        with turns.turn():
            go.set()
            answer = str(result.get(timeout=30))
        child.join(30)
        return answer

    assert "database is locked: no writer turn" in child_answer(fork_while_holding=True)
    assert "database is locked: no writer turn" in child_answer(fork_while_holding=False)
    go, result = fork.Event(), fork.Queue()
    go.set()
    child = fork.Process(target=_child_tries, args=(turns, go, result))
    child.start()
    assert result.get(timeout=30) == "took the turn"  # given back: the child takes it
    child.join(30)


@pytest.mark.gateway_config(SQLITE_BUSY_TIMEOUT_S=0.05)
def test_a_turn_that_does_not_come_is_the_databases_refusal_and_records_nothing(gateway: Gateway) -> None:
    turns = turns_of(gateway)
    with held_elsewhere(turns.path):
        refused = gateway.decide()
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert refused.get_json()["error"]["code"] == "database_unavailable"
    with gateway.app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Decision)).scalar_one() == 0
    assert gateway.decide().status_code == 201  # the turn is free again: the next decision is recorded


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_has_no_writer_turns(gateway: Gateway) -> None:
    """PostgreSQL locks rows, not the database: its writers don't queue."""
    with gateway.app.app_context():
        assert writer_turns(db.engine) is None
