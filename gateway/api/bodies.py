"""Request bodies at the JSON edge: parsed without recursion limits biting, and always a JSON object.

Python's JSON parser raises RecursionError (not ValueError) on ~1000 nested brackets, which Flask turns into
a 500; pydantic and our own hashing of a body recurse too. A body nested deeper than MAX_DEPTH is refused
as malformed (400) before anything walks it. flask-openapi3 validates a body that is a JSON *string* by
parsing that string again as the model's JSON: a string is refused here (422, field "body"), so every body
is one JSON object, as the document says.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.json.provider import DefaultJSONProvider

from gateway.errors import ValidationFailed

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


class BodyJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, with nesting bounded when reading: too deep is malformed (ValueError → 400)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        if too_deep(value):
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        return value


def body_is_an_object() -> None:
    """Refuse a JSON body that is not an object (a string, number, array...) with 422 naming the body."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.is_json:
        return
    body = request.get_json(silent=True)
    if body is not None and not isinstance(body, dict):
        raise ValidationFailed("the request body must be a JSON object",
                               details=[{"field": "body", "rule": "type", "message": "must be a JSON object"}])
