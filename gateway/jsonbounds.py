"""JSON from outside, parsed with its nesting bounded: one rule for every reader of a client's JSON.

Python's JSON parser raises RecursionError (not ValueError) on ~1000 nested brackets, which would reach the
client as a 500; pydantic and our own hashing of a body recurse too. A document nested deeper than MAX_DEPTH
is malformed (ValueError) before anything walks it, whether it came as a request body (gateway.api.bodies)
or as a file of rows (gateway.batchfiles: JSON and JSON lines).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests containers deeper than `limit` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(s: str | bytes, parse: Callable[..., Any] = json.loads, **kwargs: Any) -> Any:
    """Parse JSON with `parse`; raise ValueError (malformed) when it nests deeper than MAX_DEPTH."""
    try:
        value = parse(s, **kwargs)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if too_deep(value):
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value
