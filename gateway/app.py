"""The app factory: the one wiring point (settings → extensions → shared objects → API → errors → CLI)."""

from __future__ import annotations

import os
from typing import Any

from flask import redirect
from flask_openapi3 import Info, OpenAPI

from gateway._version import __version__


def create_app(test_config: dict[str, Any] | None = None) -> OpenAPI:
    """Build the app: configuration, extensions, blueprints, error handlers. No I/O beyond config files."""
    # Imported here, not at the top: `import gateway.ids` (or any leaf) must not load the whole app.
    from gateway import i18n, notifications, observability, runtime, security, web
    from gateway.api import amend_spec, register_api
    from gateway.api.bodies import BodyJSONProvider
    from gateway.api.common import validation_error_response
    from gateway.api.errors import register_error_handlers
    from gateway.auditlog.sequencer import SequenceKind
    from gateway.batches.task import BatchKind
    from gateway.config import load_config
    from gateway.db import configure_engine, engine_options
    from gateway.extensions import db, migrate
    from gateway.jobs import metrics as jobs_metrics
    from gateway.jobs import runner as jobs
    from gateway.jobs.base import KindRegistry
    from gateway.jobs.explain import ExplainKind
    from gateway.jobs.purge import PurgeKind
    from gateway.jobs.recourse import RecourseKind
    from gateway.notifications.task import DeliverKind
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
    # The key store (gateway.keystore) is a database of its own: the `keys` bind.
    app.config["SQLALCHEMY_BINDS"] = {"keys": {"url": app.config["KEYSTORE_DATABASE_URI"],
                                               **engine_options(app, app.config["KEYSTORE_DATABASE_URI"])}}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app)
    app.json = BodyJSONProvider(app)  # request bodies: nesting bounded (gateway/api/bodies.py)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    db.init_app(app)
    migrate.init_app(app, db)
    with app.app_context():
        busy_timeout_s = float(app.config["SQLITE_BUSY_TIMEOUT_S"])
        configure_engine(db.engine, busy_timeout_s)
        configure_engine(db.engines["keys"], busy_timeout_s)
    runtime.init_app(app)
    i18n.init_app(app)
    register_error_handlers(app)
    register_api(app)
    web.init_app(app)  # pages: the person's decision, explanation, review; the register; HTML errors
    security.init_app(app)  # rate limits, 429, security headers
    notifications.init_app(app)  # settings check; delivery starts in serve/worker
    observability.init_app(app)  # GET /metrics
    jobs.init_app(app, KindRegistry([DeliverKind, ExplainKind, SequenceKind, PurgeKind, RecourseKind, BatchKind]))  # every kind of background work; runs in serve/worker
    jobs_metrics.init_app(app)  # jobs per kind and state, dead ones, on the same /metrics

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Any:
        return app.api_doc

    @app.get("/docs", doc_ui=False)
    def docs() -> Any:
        return redirect("/docs/swagger", code=302)

    amend_spec(app.api_doc)
    return app
