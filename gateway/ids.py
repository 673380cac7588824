"""Opaque ids and the clock: leaf helpers every module may import."""

from __future__ import annotations

import datetime as dt
import secrets


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id(prefix: str) -> str:
    """Return an opaque random id (never sequential: ids appear in URLs)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def isoformat(at: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds and a 'Z' (how every time is written in responses and records)."""
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def isoformat_or_none(at: dt.datetime | None) -> str | None:
    return isoformat(at) if at is not None else None
