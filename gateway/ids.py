"""Opaque ids and the clock: leaf helpers every module may import."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from typing import Any


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


# --- keyset cursors ------------------------------------------------------------------------------------
# A list page's `next_after`: the sort key of its last item, as an opaque URL-safe token. Callers pass it
# back unchanged; its content is no contract (decode_cursor refuses anything that is not one we made).

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{4,400}$"


def encode_cursor(*parts: str | int | dt.datetime) -> str:
    """The opaque cursor of a sort key (times as microseconds since 1970, UTC)."""
    values = [f"t{(p - _EPOCH) // dt.timedelta(microseconds=1)}" if isinstance(p, dt.datetime) else
              f"i{p}" if isinstance(p, int) else f"s{p}" for p in parts]
    raw = json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *shape: type) -> tuple[Any, ...] | None:
    """The sort key in `cursor` when it has `shape` (str, int, dt.datetime per part); None when it is no such
    cursor (garbled, another list's, or not made by encode_cursor)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(shape):
            return None
        out: list[Any] = []
        for value, kind in zip(values, shape, strict=True):
            tag, text = value[0], value[1:]
            if kind is dt.datetime and tag == "t":
                out.append(_EPOCH + dt.timedelta(microseconds=int(text)))
            elif kind is int and tag == "i" and len(text) <= 18:
                out.append(int(text))
            elif kind is str and tag == "s" and 0 < len(text) <= 200 and text.isprintable():
                out.append(text)
            else:
                return None
        return tuple(out)
    except (ValueError, TypeError, IndexError, OverflowError):  # bad base64/JSON/UTF-8, a non-string part
        return None
