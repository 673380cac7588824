"""Errors with domain meaning (classes only): gateway.api.errors maps them to HTTP responses."""

from __future__ import annotations

from typing import Any


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
