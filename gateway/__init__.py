"""The decision-rights gateway: a Flask service between scoring models and the people they decide about.

Importing the package loads nothing else (the standalone verifier, `gateway.verify`, relies on it):
the app factory lives in `gateway.app` and is imported when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway._version import __version__

if TYPE_CHECKING:
    from flask_openapi3 import OpenAPI

__all__ = ["__version__", "create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> OpenAPI:
    """Build the app (see gateway.app.create_app)."""
    from gateway.app import create_app as build  # the package stays light; the app loads on first use

    return build(test_config)
