"""The log in the database: sequencing leaves into the tree, signed checkpoints, proofs and receipts.

Leaves are written by every use case in its own transaction (gateway.audit.leaf_values); nothing here
runs on the request path. The sequencer (`append`) locks the one `log_sequencer` row, so one holder at a
time appends, and in the same transaction gives the visible unsequenced leaves the next indices, stores
the complete-subtree nodes they finish, and signs a checkpoint when one is due: a sequencer killed
mid-batch commits nothing, so indices stay 0…N−1 without gap or duplicate. Proofs read O(log n) nodes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.auditlog import merkle
from gateway.auditlog.note import Checkpoint, Signer
from gateway.errors import ConfigError, NotFound
from gateway.extensions import db
from gateway.ids import isoformat
from gateway.models import LogCheckpoint, LogLeaf, LogNode, LogSequencer, table

LEAF_PAGE = 1000


def signer(config: Mapping[str, Any]) -> Signer:
    """The log's Ed25519 key: GATEWAY_LOG_SIGNING_KEY (hex seed, `gateway init` writes one), else one
    derived from SECRET_KEY (so an instance without the setting still signs, and rotating SECRET_KEY
    starts a new log key: publish the old verifier key with the old checkpoints)."""
    name = str(config.get("LOG_ORIGIN") or f"{urlsplit(str(config['PUBLIC_BASE_URL'])).netloc or 'gateway'}/log")
    raw = config.get("LOG_SIGNING_KEY")
    if raw:
        try:
            seed = bytes.fromhex(str(raw))
        except ValueError:
            raise ConfigError("GATEWAY_LOG_SIGNING_KEY must be hex") from None
        if len(seed) != 32:
            raise ConfigError("GATEWAY_LOG_SIGNING_KEY must be 32 bytes (64 hex characters)")
    else:
        seed = hashlib.sha256(b"gateway.log.signing-key\x00" + str(config["SECRET_KEY"]).encode()).digest()
    return Signer.from_seed(name, seed)


def tree_size() -> int:
    found = db.session.execute(select(func.max(LogLeaf.seq))).scalar_one_or_none()
    return 0 if found is None else int(found) + 1


def _edge(size: int) -> list[bytes]:
    """The roots of the complete subtrees that make up a tree of `size` leaves, largest first."""
    edge, start = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            edge.append(node(level, start >> level))
            start += 1 << level
    return edge


def _read(compute: Callable[[merkle.NodeReader], list[bytes]]) -> list[bytes]:
    """Run a proof computation with the nodes it needs read in one query (its path depends on sizes only)."""
    wanted: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        wanted.append((level, index))
        return bytes(32)

    compute(record)
    by_level: dict[int, set[int]] = {}
    for level, index in wanted:
        by_level.setdefault(level, set()).add(index)
    found: dict[tuple[int, int], bytes] = {}
    if by_level:  # one query; each level's IN list walks the primary key (a row-value IN would scan on SQLite)
        rows = db.session.execute(select(LogNode.level, LogNode.index, LogNode.hash).where(
            or_(*(and_(LogNode.level == lv, LogNode.index.in_(sorted(ixs))) for lv, ixs in by_level.items()))))
        found = {(lv, ix): bytes(h) for lv, ix, h in rows}

    def read(level: int, index: int) -> bytes:
        try:
            return found[level, index]
        except KeyError:
            raise LookupError(f"log node ({level}, {index}) is missing") from None

    return compute(read)


def node(level: int, index: int) -> bytes:
    found = db.session.execute(select(LogNode.hash).where(LogNode.level == level, LogNode.index == index)).scalar()
    if found is None:
        raise LookupError(f"log node ({level}, {index}) is missing")
    return bytes(found)


def append(session: Any, owner: str, now: dt.datetime, *, limit: int, signer_: Signer,
           checkpoint_every_s: float) -> int:
    """Sequence up to `limit` visible leaves and maybe sign a checkpoint (the caller's write transaction).

    Returns how many leaves got an index. Locks the sequencer row first: a second sequencer waits here
    (PostgreSQL row lock; SQLite's write lock is already held) and then sees the first one's work.
    """
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(dialect_insert(table(LogSequencer)).values(id=1).on_conflict_do_nothing(index_elements=["id"]))
    session.execute(select(LogSequencer.id).where(LogSequencer.id == 1).with_for_update()).scalar_one()
    session.execute(update(LogSequencer).where(LogSequencer.id == 1).values(holder=owner, held_at=now))
    size = tree_size()
    pending = session.execute(
        select(LogLeaf.id, LogLeaf.leaf_hash).where(LogLeaf.seq.is_(None)).order_by(LogLeaf.id).limit(limit)
    ).all()
    tree = merkle.CompactTree(size, _edge(size))
    nodes: list[dict[str, Any]] = []
    seqs: list[dict[str, Any]] = []
    for leaf_id, digest in pending:
        seqs.append({"leaf_id": leaf_id, "seq": tree.size})
        nodes.extend({"level": lv, "idx": ix, "hash": h} for lv, ix, h in tree.append(bytes.fromhex(digest)))
    if seqs:
        leaves = table(LogLeaf)
        session.execute(update(leaves).where(leaves.c.id == bindparam("leaf_id")).values(seq=bindparam("seq")), seqs)
        session.execute(insert(table(LogNode)), nodes)
    last = session.execute(select(LogCheckpoint.size, LogCheckpoint.created_at)
                           .order_by(LogCheckpoint.size.desc()).limit(1)).first()
    due = last is None or (now - last.created_at).total_seconds() >= checkpoint_every_s
    if tree.size and (last is None or tree.size > last.size) and due:
        root = tree.root()
        note = signer_.sign(Checkpoint(signer_.name, tree.size, root).text())
        session.execute(insert(table(LogCheckpoint)), {"size": tree.size, "root": root, "note": note,
                                                       "created_at": now})
    return len(seqs)


def work_due(now: dt.datetime, checkpoint_every_s: float) -> bool:
    """Whether a leaf waits for an index, or the tree grew since the last checkpoint and one is due."""
    waiting = db.session.execute(select(LogLeaf.id).where(LogLeaf.seq.is_(None)).limit(1)).first()
    if waiting is not None:
        return True
    last = db.session.execute(select(LogCheckpoint.size, LogCheckpoint.created_at)
                              .order_by(LogCheckpoint.size.desc()).limit(1)).first()
    size = tree_size()
    db.session.commit()  # end the read transaction before the write one
    if last is None:
        return size > 0
    return size > last.size and (now - last.created_at).total_seconds() >= checkpoint_every_s


def unsequenced() -> int:
    return int(db.session.execute(select(func.count()).where(LogLeaf.seq.is_(None))).scalar_one())


# --- reading ------------------------------------------------------------------------------------------

def latest_checkpoint() -> LogCheckpoint:
    found = db.session.execute(select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1)).scalar()
    if found is None:
        raise NotFound("the log has no signed checkpoint yet")
    return found


def _within(size: int, what: str) -> None:
    """A tree the log does not have (yet) is a resource that does not exist: 404 naming the parameter."""
    current = tree_size()
    if size > current:
        raise NotFound(f"the log has no tree of {size} leaves ({what}); it has {current}", code="no_such_tree",
                       details={"field": what, "tree_size": current})


def inclusion(index: int, size: int) -> dict[str, Any]:
    _within(size, "size")
    if index >= size:
        raise NotFound(f"a tree of {size} leaves has no leaf {index}", code="no_such_leaf",
                       details={"field": "index", "tree_size": size})
    proof = _read(lambda read: merkle.inclusion_proof(read, index, size))
    return {"index": index, "size": size, "proof": [p.hex() for p in proof]}


def consistency(first: int, second: int) -> dict[str, Any]:
    _within(second, "second")
    if first > second:
        raise NotFound(f"a tree of {second} leaves does not extend one of {first}", code="no_such_proof",
                       details={"field": "first", "tree_size": second})
    return {"first": first, "second": second,
            "proof": [p.hex() for p in _read(lambda read: merkle.consistency_proof(read, first, second))]}


def leaves(start: int, end: int | None) -> dict[str, Any]:
    end = min(end if end is not None and end > start else start + LEAF_PAGE, start + LEAF_PAGE)
    rows = db.session.execute(
        select(LogLeaf).where(LogLeaf.seq >= start, LogLeaf.seq < end).order_by(LogLeaf.seq)
    ).scalars()
    return {"start": start, "end": end, "size": tree_size(), "leaves": [
        {"index": r.seq, "kind": r.kind, "object_id": r.object_id, "leaf_hash": r.leaf_hash, **_record(r),
         "created_at": isoformat(r.created_at)} for r in rows]}


def _record(leaf: LogLeaf) -> dict[str, str | None]:
    """A leaf's record as served: what its hash covers, or (redacted by the purge) the redacted record only."""
    if leaf.redacted_at is not None:
        return {"record": None, "redacted_record": leaf.record}
    return {"record": leaf.record, "redacted_record": None}


@dataclass(frozen=True)
class Receipt:
    status: str  # "ready" | "pending"
    body: dict[str, Any]


def receipt(decision_id: str) -> Receipt:
    """The decision's leaf, its inclusion proof and the signed checkpoint it is proven against."""
    leaf = db.session.execute(
        select(LogLeaf).where(LogLeaf.object_id == decision_id, LogLeaf.kind == "decision:recorded")
    ).scalar_one_or_none()
    if leaf is None:
        raise NotFound("The resource does not exist.")
    checkpoint = db.session.execute(select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1)).scalar()
    if leaf.seq is None or checkpoint is None or checkpoint.size <= leaf.seq:
        return Receipt("pending", {"decision_id": decision_id, "status": "pending", "leaf_hash": leaf.leaf_hash,
                                   "retry_after": 5})
    seq, size = leaf.seq, checkpoint.size
    proof = _read(lambda read: merkle.inclusion_proof(read, seq, size))
    return Receipt("ready", {
        "decision_id": decision_id, "status": "ready", "leaf_index": leaf.seq, "leaf_hash": leaf.leaf_hash,
        **_record(leaf), "proof": [p.hex() for p in proof], "tree_size": checkpoint.size,
        "root_hash": base64.b64encode(checkpoint.root).decode(), "checkpoint": checkpoint.note,
    })
