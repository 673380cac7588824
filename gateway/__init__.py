"""The decision-rights gateway: a Flask service between scoring models and the people they decide about."""

from __future__ import annotations

import os
from typing import Any

from flask import redirect
from flask_openapi3 import Info, OpenAPI

from gateway._version import __version__


def create_app(test_config: dict[str, Any] | None = None) -> OpenAPI:
    """Build the app: configuration, extensions, blueprints, error handlers. No I/O beyond config files."""
    # Imported here, not at the top: `import gateway.ids` (or any leaf) must not load the whole app.
    from gateway import i18n, notifications, observability, runtime, security
    from gateway.api import amend_spec, register_api
    from gateway.api.bodies import BodyJSONProvider
    from gateway.api.common import validation_error_response
    from gateway.api.errors import register_error_handlers
    from gateway.config import load_config
    from gateway.db import configure_engine, engine_options
    from gateway.extensions import db, migrate
    from gateway.settings import Settings

    app = OpenAPI(
        __name__,
        info=Info(
            title="Decision-rights gateway",
            version=__version__,
            description="Records automated decisions, notifies the people they are about, explains the main "
            "influencing factors and runs human review.",
        ),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        doc_prefix="/docs",
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_callback=validation_error_response,
        instance_path=os.environ.get("GATEWAY_INSTANCE_PATH") or None,
        instance_relative_config=True,
    )
    load_config(app, test_config)
    app.extensions["gateway.settings"] = Settings.from_config(app.config)
    app.config["SWAGGER_CONFIG"] = {"validatorUrl": None}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app)
    app.json = BodyJSONProvider(app)  # request bodies: nesting bounded (gateway/api/bodies.py)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    db.init_app(app)
    migrate.init_app(app, db)
    with app.app_context():
        configure_engine(db.engine)
    runtime.init_app(app)
    i18n.init_app(app)
    register_error_handlers(app)
    register_api(app)
    security.init_app(app)  # rate limits, 429, security headers
    notifications.init_app(app)  # settings check; delivery starts in serve/worker
    observability.init_app(app)  # GET /metrics

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Any:
        return app.api_doc

    @app.get("/docs", doc_ui=False)
    def docs() -> Any:
        return redirect("/docs/swagger", code=302)

    amend_spec(app.api_doc)
    return app
