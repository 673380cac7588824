"""Audit log leaves: the canonical record of an event and its RFC 6962 leaf hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import insert

from gateway.models import LogLeaf, table

# json.dumps with these options, its encoder made once (it keeps no state between calls): a batch chunk makes
# several records and commitments per decision.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(record: dict[str, Any]) -> str:
    """Serialise deterministically: sorted keys, no spaces, UTF-8 kept."""
    return _CANONICAL.encode(record)


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


# The person's data that leaf records held in clear before they held commitments (gateway.contacts): the
# decision's inputs and the explanation's values, a review's point of view, corrected data and reasons.
CLEAR_PERSONAL_FIELDS: tuple[tuple[str, ...], ...] = (
    ("inputs",), ("explanation", "attributions"), ("point_of_view",), ("corrected_data",), ("reasons",),
)


def redact_record(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The record without the person's data it holds in clear, marked as redacted; and the fields removed.

    A redacted record no longer hashes to its leaf hash: it says so (`"redacted"`), and a verifier accepts it
    by the stored hash only when a later `decision:purged` leaf names that hash (gateway.verify).
    """
    cleared = json.loads(canonical_json(record))
    removed: list[str] = []
    for path in CLEAR_PERSONAL_FIELDS:
        holder = cleared
        for name in path[:-1]:
            holder = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and path[-1] in holder and holder[path[-1]] not in (None, "", {}, []):
            # corrected_data as the list of the corrected features' names is not the person's values
            if path == ("corrected_data",) and isinstance(holder[path[-1]], list):
                continue
            del holder[path[-1]]
            removed.append(".".join(path))
    if removed:
        cleared["redacted"] = {"fields": removed, "note": "the person's data removed under the retention rule; "
                                                          "this record no longer hashes to the leaf hash"}
    return cleared, removed
