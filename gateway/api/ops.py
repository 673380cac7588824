"""Operations endpoints: liveness and readiness."""

from __future__ import annotations

from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import text

from gateway import registry, runtime
from gateway.api.common import json_response
from gateway.extensions import db
from gateway.schemas import Health

bp = APIBlueprint("ops", __name__, abp_tags=[Tag(name="operations")], doc_ui=True)


@bp.get("/healthz", responses={200: Health})
def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response(Health(status="ok", checks={}))


@bp.get("/readyz", responses={200: Health, 503: Health})
def readyz() -> Response:
    """Readiness: the database answers and every active model is loaded."""
    checks: dict[str, object] = {}
    ready = True
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, don't crash: this endpoint exists to say what is wrong
        current_app.logger.error("readiness: database: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
        return json_response(Health(status="unavailable", checks=checks), 503)
    models: dict[str, str] = {}
    for row in registry.list_models(serving_only=True):
        try:
            loaded = runtime.cache().get(row.id)
            state = runtime.health(loaded)
            circuit = (state or {}).get("circuit", {})
            if circuit.get("state", "closed") != "closed":
                models[f"{row.name} {row.version}"] = (
                    f"circuit {circuit['state']}: {circuit['consecutive_failures']} consecutive failures of the "
                    f"model server, retry in {circuit.get('retry_in_s', 0):g} s")
                ready = False
            else:
                models[f"{row.name} {row.version}"] = "loaded"
        except Exception as exc:
            current_app.logger.error("readiness: model %s %s: %s", row.name, row.version, exc)
            models[f"{row.name} {row.version}"] = f"error: {exc}"
            ready = False
    checks["models"] = models
    return json_response(Health(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503)
