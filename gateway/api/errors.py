"""Every error, ours or the framework's, answered as JSON {"error": {code, message, details}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, json
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
