"""The key store: the decisions' wrapped data keys, in a database of their own (crypto-shredding).

Each decision's personal data (contact details, monitor-only values) is encrypted under a data key of its own,
and the leaves' commitments are keyed by it (gateway.contacts). The wrapped data keys live here, not beside the
ciphertext: the key store is a separate database (the flask-sqlalchemy bind ``keys``, GATEWAY_KEYSTORE_URL;
by default a SQLite file next to the main SQLite database) backed up on its own, shorter schedule. The
retention purge deletes a decision's key here, so a backup of the main database taken before the purge —
ciphertext and all — can no longer be read with the deployment key: the key it needs is gone from the key
store, and the key store's own backups are kept no longer than the shortest retention period (README).

Two databases, no distributed transaction: a key is always committed here *before* the decision that uses it
is committed in the main database. A failure in between leaves a key without a decision — harmless, since
nothing was encrypted under it anywhere durable, and removed by the purge job's sweep
(gateway.retention.sweep) — never a decision without its key. Single decisions take keys committed ahead in
batches (`take`), so the key store's commit is not on their path.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from gateway.contacts import DataKey, new_data_key
from gateway.extensions import db
from gateway.ids import new_id
from gateway.models import UTCDateTime

BIND = "keys"
METADATA = sa.MetaData()

# Not an ORM model: the table lives in the key store's own database and is never joined with the main one.
data_keys = sa.Table(
    "data_keys", METADATA,
    sa.Column("decision_id", sa.String(40), primary_key=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),  # AES-256-GCM under CONTACT_KEY ("dek:<decision id>")
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
)

CHUNK = 500


def shares_main_database() -> bool:
    """Whether the key store is the main database itself (then backups of it keep the keys)."""
    main, keys = db.engine.url, engine().url
    return main.get_backend_name() != "sqlite" and main == keys


def engine() -> Engine:
    """The key store's engine (the app's `keys` bind)."""
    return db.engines[BIND]


def create_schema(bind: Engine | None = None) -> None:
    """Create the key store's table if missing (`gateway db upgrade`, before the main schema's migrations)."""
    METADATA.create_all(bind or engine())


def _begin(bind: Engine) -> Any:
    return bind.connect().execution_options(sqlite_begin="IMMEDIATE")


def store(keys: Iterable[DataKey], now: dt.datetime) -> None:
    """Commit these wrapped keys in the key store (before the decisions that use them are committed)."""
    rows = [{"decision_id": k.decision_id, "wrapped": k.wrapped, "created_at": now} for k in keys]
    if not rows:
        return
    with _begin(engine()) as conn, conn.begin():
        conn.execute(sa.insert(data_keys), rows)


def issue(deployment_key: bytes, decision_id: str, now: dt.datetime) -> DataKey:
    """A new data key for `decision_id`, committed in the key store."""
    key = new_data_key(deployment_key, decision_id)
    store([key], now)
    return key


class _Pool:
    """Keys committed ahead, in batches, for decisions not yet made (their ids drawn with them).

    One key store commit per POOL_SIZE decisions instead of one per decision: a decision takes a key already
    committed, so the key-first order holds. A key older than POOL_MAX_AGE is never handed out (the sweep,
    which removes keys without a decision after a day, must not race a decision still to come); keys left
    unused (a process that ends) are swept like any key without a decision. Emptied in a forked child, so two
    workers never share a key and its decision id.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: deque[tuple[dt.datetime, DataKey]] = deque()
        self.owner: tuple[bytes, str] | None = None

    def clear(self) -> None:
        self.keys = deque()
        self.lock = threading.Lock()

    def take(self, deployment_key: bytes, now: dt.datetime) -> DataKey:
        owner = (deployment_key, str(engine().url))
        with self.lock:
            if self.owner != owner:
                self.keys.clear()
                self.owner = owner
            while self.keys and now - self.keys[0][0] > POOL_MAX_AGE:
                self.keys.popleft()
            if not self.keys:
                made = issue_many(deployment_key, [new_id("dec") for _ in range(POOL_SIZE)], now)
                self.keys.extend((now, key) for key in made.values())
            return self.keys.popleft()[1]


POOL_SIZE = 32
POOL_MAX_AGE = dt.timedelta(hours=1)
_pool = _Pool()
os.register_at_fork(after_in_child=_pool.clear)


def forget_pool() -> None:
    """Drop the keys committed ahead (they stay in the key store, swept as keys without a decision)."""
    _pool.clear()


def take(deployment_key: bytes, now: dt.datetime) -> DataKey:
    """A data key already committed in the key store, for a new decision whose id is `key.decision_id`."""
    return _pool.take(deployment_key, now)


def issue_many(deployment_key: bytes, decision_ids: Sequence[str], now: dt.datetime) -> dict[str, DataKey]:
    """New data keys for these decisions, committed in the key store in one transaction."""
    keys = {d: new_data_key(deployment_key, d) for d in decision_ids}
    store(keys.values(), now)
    return keys


def wrapped(decision_id: str) -> bytes | None:
    """The decision's wrapped data key; None once destroyed (purged) or never made."""
    with engine().connect() as conn:
        found = conn.execute(sa.select(data_keys.c.wrapped).where(data_keys.c.decision_id == decision_id)).scalar()
    return bytes(found) if found is not None else None


def wrapped_many(decision_ids: Sequence[str]) -> dict[str, bytes]:
    """The wrapped data keys of these decisions that still exist."""
    found: dict[str, bytes] = {}
    with engine().connect() as conn:
        for start in range(0, len(decision_ids), CHUNK):
            chunk = list(decision_ids[start:start + CHUNK])
            for row in conn.execute(sa.select(data_keys.c.decision_id, data_keys.c.wrapped)
                                    .where(data_keys.c.decision_id.in_(chunk))):
                found[row.decision_id] = bytes(row.wrapped)
    return found


def destroy(decision_ids: Sequence[str]) -> int:
    """Delete these decisions' keys (crypto-shredding); return how many were deleted."""
    if not decision_ids:
        return 0
    bind = engine()
    deleted = 0
    with _begin(bind) as conn, conn.begin():
        for start in range(0, len(decision_ids), CHUNK):
            result = conn.execute(sa.delete(data_keys).where(data_keys.c.decision_id.in_(decision_ids[start:start + CHUNK])))
            deleted += int(result.rowcount)
    if deleted and bind.dialect.name == "sqlite":
        # secure_delete zeroes the deleted rows in the database file; the checkpoint copies that into it and
        # truncates the write-ahead log, which still held the pages with the keys.
        with bind.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return deleted


def older_than(cutoff: dt.datetime, *, after: str = "", limit: int = CHUNK) -> list[str]:
    """Decision ids of keys created before `cutoff`, in id order after `after` (the sweep's pages)."""
    with engine().connect() as conn:
        return list(conn.execute(sa.select(data_keys.c.decision_id)
                                 .where(data_keys.c.created_at < cutoff, data_keys.c.decision_id > after)
                                 .order_by(data_keys.c.decision_id).limit(limit)).scalars())
