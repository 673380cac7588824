"""Errors with domain meaning; `register_error_handlers` maps every error to one JSON shape."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, json
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """The gateway could not complete the request."""

    status_code: int = 500
    code: str = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str | None = None, *, details: Any = None, code: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details
        if code is not None:
            self.code = code
        super().__init__(self.message)


class BadRequest(GatewayError):
    """The request is malformed."""

    status_code, code = 400, "bad_request"


class Unauthorized(GatewayError):
    """Authentication is required: send 'Authorization: Bearer <key>'."""

    status_code, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="gateway"'}


class Forbidden(GatewayError):
    """The credentials are valid but do not allow this action."""

    status_code, code = 403, "forbidden"


class NotFound(GatewayError):
    """The resource does not exist."""

    status_code, code = 404, "not_found"


class Conflict(GatewayError):
    """The request conflicts with the current state."""

    status_code, code = 409, "conflict"


class PayloadTooLarge(GatewayError):
    """The request body is too large."""

    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(GatewayError):
    """The request body must be JSON (Content-Type: application/json)."""

    status_code, code = 415, "unsupported_media_type"


class ValidationFailed(GatewayError):
    """The request has invalid values."""

    status_code, code = 422, "validation_failed"


class ServiceUnavailable(GatewayError):
    """The service is temporarily unavailable; nothing was recorded."""

    status_code, code = 503, "unavailable"


class ModelUnavailable(ServiceUnavailable):
    """The model could not score the request; nothing was recorded."""

    code = "model_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database is unavailable; nothing was recorded."""

    code = "database_unavailable"


class ConfigError(RuntimeError):
    """The deployment's configuration is incomplete or invalid."""


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(err: GatewayError) -> Response:
    body = json.dumps(error_body(err.code, err.message, err.details))
    resp = Response(body, status=err.status_code, mimetype="application/json")
    for name, value in (err.headers or {}).items():
        resp.headers[name] = value
    return resp


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_page(status: int, err: Exception) -> Response | None:
    """The HTML page for this error when the request is for a page (the web package registers the
    renderer in app.extensions["gateway.error_page"]; it answers None for /v1, ops and docs paths)."""
    render = current_app.extensions.get("gateway.error_page")
    return render(status, err) if render is not None else None


def register_error_handlers(app: Flask) -> None:
    """Answer every error, ours or the framework's: JSON {"error": {code, message, details}}, or an HTML
    page in the person's language for page paths (gateway.web)."""

    @app.errorhandler(GatewayError)
    def _gateway_error(err: GatewayError) -> Response:
        return error_page(err.status_code, err) or error_response(err)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        page = error_page(status, err)
        if page is not None:
            return page
        code = _HTTP_CODES.get(status, "http_error")
        message = err.description or err.name
        if status == 404:
            message = "The resource does not exist."
        body = json.dumps(error_body(code, message))
        resp = Response(body, status=status, mimetype="application/json")
        for name, value in err.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                resp.headers[name] = value
        return resp

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def _db_error(err: Exception) -> Response:
        log.error("database error: %s", err)
        return error_page(503, err) or error_response(DatabaseUnavailable())

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error")
        return error_page(500, err) or error_response(GatewayError("An unexpected error occurred."))
