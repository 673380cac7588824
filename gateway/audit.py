"""Audit log leaves: the canonical record of an event and its RFC 6962 leaf hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import insert

from gateway.models import LogLeaf, table


def canonical_json(record: dict[str, Any]) -> str:
    """Serialise deterministically: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def leaf_hash(canonical: str) -> str:
    """RFC 6962 leaf hash: SHA-256 of 0x00 || record."""
    return hashlib.sha256(b"\x00" + canonical.encode("utf-8")).hexdigest()


def leaf_values(kind: str, object_id: str, record: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    """Return the column values of a log leaf for `record` (to insert in the use case's transaction)."""
    canonical = canonical_json({"kind": kind, **record})
    return {"kind": kind, "object_id": object_id, "leaf_hash": leaf_hash(canonical), "record": canonical, "created_at": at}


def record_leaf(session: Any, kind: str, object_id: str, record: dict[str, Any], at: dt.datetime) -> None:
    """Add a leaf to the caller's transaction (the sequencer puts it into the tree after commit)."""
    session.execute(insert(table(LogLeaf)), leaf_values(kind, object_id, record, at))
