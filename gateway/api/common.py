"""Helpers shared by the JSON blueprints: authentication, JSON responses, validation errors."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, g, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from gateway.api.errors import error_response
from gateway.auth import (
    KEY_PREFIX,
    Caller,
    Principal,
    authenticate_caller,
    bearer_token,
    cached_key,
    hash_key,
    require_role,
)
from gateway.decisions import request_hash as request_hash  # re-exported: the API hashes with it
from gateway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    UnsupportedMediaType,
    ValidationFailed,
)
from gateway.ids import decode_cursor
from gateway.models import Role
from gateway.schemas import ErrorResponse
from gateway.text import LINE_PATTERN, TEXT_PATTERN

# The error model of every error status, documented on every operation (blueprints use it at import).
ERRORS: dict[int, Any] = dict.fromkeys((400, 401, 403, 404, 409, 413, 415, 422, 429, 503), ErrorResponse)

# Path models whose validation failure means "no such resource", not "bad request".
PATH_MODELS = {"BatchPath", "DecisionPath", "ModelPath", "BlobPath", "ReviewPath", "DecisionReviewPath", "HandoverPath"}


def _authenticated() -> Caller | Exception:
    """Authenticate the request once (the rate limiter needs it before the view); cache the outcome."""
    if "gateway_caller" not in g:
        try:
            g.gateway_caller = authenticate_caller(request.headers.get("Authorization"))
        except GatewayError as exc:
            g.gateway_caller = exc
    result: Caller | Exception = g.gateway_caller
    return result


def caller() -> Caller:
    """The authenticated caller: an API client or a citizen (capability link or OIDC); else 401."""
    who = _authenticated()
    if isinstance(who, Exception):
        raise who
    return who


def principal(*roles: Role) -> Principal:
    """The authenticated API client, checked for one of `roles` (citizens get 403 here)."""
    who = caller()
    if roles:
        require_role(who, *roles)
    if not isinstance(who, Principal):
        raise Forbidden("this action needs an API key")
    return who


def _identified() -> Caller | Exception:
    """Who the request says it is: an API key's client from this process's cache (no SELECT when seen
    before; not a revocation check, see `keyed_principal`), any other token authenticated."""
    if "gateway_caller" in g:
        found: Caller | Exception = g.gateway_caller
        return found
    if "gateway_identified" not in g:
        header = request.headers.get("Authorization") or ""
        token = header.partition(" ")[2].strip()
        seen = cached_key(token) if header[:7].lower() == "bearer " and token.startswith(KEY_PREFIX) else None
        g.gateway_identified = seen if seen is not None else _authenticated()  # a SELECT: caches a live key
    result: Caller | Exception = g.gateway_identified
    return result


#: Endpoints whose view proves the caller's API key live in its own write (`keyed_principal`): authentication
#: before the view (gateway.security) takes a key this process has seen live from its cache, without a SELECT.
KEYED_ENDPOINTS = frozenset({"decisions.create_decision"})


def identified() -> Caller:
    """Who the request says it is (`_identified`: a key seen live from the cache, no SELECT); else 401.

    For KEYED_ENDPOINTS, whose write proves the key live; a refusal proves it before it is sent
    (`unproved_key_refused`), so a revoked key never learns more than 401."""
    who = _identified()
    if isinstance(who, Exception):
        raise who
    return who


def unproved_key_refused() -> GatewayError | None:
    """Unauthorized when this request's API key was taken from the process's cache and is no longer live.

    Checked (one SELECT) only for a request that is being refused: an answer that recorded something proved
    the key in its transaction, and a replay proves it before answering (gateway.decisions)."""
    if "gateway_identified" not in g or "gateway_caller" in g:
        return None  # not identified from the cache, or authenticated by a SELECT already
    try:
        who = _authenticated()
    except SQLAlchemyError:  # the refusal was the database's own (its session unusable): leave it as it is
        return None
    return who if isinstance(who, GatewayError) else None


def keyed_principal(*roles: Role) -> tuple[Principal, str | None]:
    """The API client of a request whose write proves its key live (`auth.live_key` in its transaction).

    Returns the principal and the key's hash to check: from this process's cache, no SELECT; (principal,
    None) when the key was authenticated by a SELECT in this request already."""
    who = _identified()
    if isinstance(who, Exception):
        raise who
    if roles:
        require_role(who, *roles)
    if not isinstance(who, Principal):
        raise Forbidden("this action needs an API key")
    if "gateway_caller" in g:
        return who, None
    return who, hash_key(bearer_token(request.headers.get("Authorization")))


def rate_limit_key() -> str:
    """Whom a request counts against: its API client, its person (subject), or its address when anonymous."""
    if not request.headers.get("Authorization"):
        return f"addr:{request.remote_addr or '-'}"
    who = _identified()
    if isinstance(who, Principal):
        return f"client:{who.id}"
    if isinstance(who, Exception):
        return f"addr:{request.remote_addr or '-'}"
    return f"subject:{who.subject_ref}"


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise a presenter's model (or plain JSON values) compactly, UTF-8 kept."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", exclude_unset=True)  # optional fields left out stay out
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, headers=headers, mimetype="application/json")


def _message(err: dict[str, Any]) -> str:
    if err.get("type") == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") in (LINE_PATTERN,
                                                                                                 TEXT_PATTERN):
        return "must not contain control characters" + (" (line breaks and tabs are allowed)"
                                                        if err["ctx"]["pattern"] == TEXT_PATTERN else "")
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def validation_error_response(exc: ValidationError) -> Response:
    """Map a pydantic error to 404 (bad path), 415 (not JSON), 400 (malformed JSON) or 422 (bad values)."""
    err: GatewayError
    if exc.title in PATH_MODELS:
        err = NotFound("The resource does not exist.")
    elif request.method in ("POST", "PUT", "PATCH") and not request.is_json:
        err = UnsupportedMediaType()
    elif request.method in ("POST", "PUT", "PATCH") and request.get_json(silent=True) is None:
        err = BadRequest("the request body is not valid JSON", code="malformed_json")
    else:
        details = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "body",
                "rule": e["type"],
                "message": _message(e),
            }
            for e in exc.errors(include_url=False, include_input=False)
        ]
        err = ValidationFailed(f"{len(details)} invalid field(s)", details=details)
    return error_response(err)


def keyset_after(after: str | None, *shape: type) -> tuple[Any, ...] | None:
    """The sort key of a list's `?after=` cursor (a previous page's next_after); 422 naming `after` otherwise."""
    if after is None:
        return None
    found = decode_cursor(after, *shape)
    if found is None:
        raise ValidationFailed("after is not a cursor of this list: pass the previous page's next_after unchanged",
                               details=[{"field": "after", "rule": "cursor",
                                         "message": "not a next_after of this list"}])
    return found
