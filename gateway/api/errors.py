"""Every error, ours or the framework's, answered as JSON {"error": {code, message, details}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from gateway.errors import DatabaseUnavailable, GatewayError

log = logging.getLogger("gateway.errors")


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


def register_error_handlers(app: Flask) -> None:
    """Answer every error, ours or the framework's, as JSON {"error": {code, message, details}}."""

    @app.errorhandler(GatewayError)
    def _gateway_error(err: GatewayError) -> Response:
        return error_response(err)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
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
        return error_response(DatabaseUnavailable())

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(GatewayError("An unexpected error occurred."))
