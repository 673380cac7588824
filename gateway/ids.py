"""Opaque ids and the clock: leaf helpers every module may import."""

from __future__ import annotations

import datetime as dt
import secrets


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id(prefix: str) -> str:
    """Return an opaque random id (never sequential: ids appear in URLs)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"
