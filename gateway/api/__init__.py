"""JSON API: thin blueprints that parse, call one service function, and serialise."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import OpenAPI

from gateway.api import common
from gateway.api.schemas import ErrorResponse

for _status in (400, 401, 403, 404, 409, 413, 415, 422, 503):
    common.ERRORS[_status] = ErrorResponse

IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "Unique per request (1 to 255 printable ASCII characters). The same key with the same body "
    "replays the first response (Idempotent-Replayed: true); with another body it is refused (422).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def register_api(app: OpenAPI) -> None:
    from gateway.api import decisions_api, models_api, ops, reviews_api

    for bp in (ops.bp, models_api.bp, decisions_api.bp, reviews_api.bp):
        app.register_api(bp)


def amend_spec(spec: dict[str, Any]) -> None:
    """Add what flask-openapi3 can't express cheaply: the Idempotency-Key header."""
    post = spec["paths"]["/v1/models/{name}/decisions"]["post"]
    params = post.setdefault("parameters", [])
    if not any(p.get("name") == "Idempotency-Key" for p in params):
        params.append(IDEMPOTENCY_HEADER)
