"""Request bodies at the JSON edge: parsed without recursion limits biting, and always a JSON object.

A body nested deeper than gateway.jsonbounds.MAX_DEPTH is refused as malformed (400) before anything walks
it (Python's parser would raise RecursionError, a 500). flask-openapi3 validates a body that is a JSON
*string* by parsing that string again as the model's JSON: a string is refused here (422, field "body"),
so every body is one JSON object, as the document says.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.json.provider import DefaultJSONProvider

from gateway import jsonbounds
from gateway.errors import ValidationFailed


class BodyJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, with nesting bounded when reading: too deep is malformed (ValueError → 400)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return jsonbounds.loads(s, super().loads, **kwargs)


def body_is_an_object() -> None:
    """Refuse a JSON body that is not an object (a string, number, array...) with 422 naming the body."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.is_json:
        return
    body = request.get_json(silent=True)
    if body is not None and not isinstance(body, dict):
        raise ValidationFailed("the request body must be a JSON object",
                               details=[{"field": "body", "rule": "type", "message": "must be a JSON object"}])
