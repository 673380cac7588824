"""Oversight over HTTP: the report (auditor), ground truth (the agency), the incident register (admin, auditor)."""

from __future__ import annotations

import datetime as dt

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from gateway import access, oversight
from gateway.api.common import ERRORS, caller, json_response, keyset_after, principal
from gateway.db import write_transaction
from gateway.errors import ValidationFailed
from gateway.ids import encode_cursor, isoformat
from gateway.models import Role
from gateway.schemas import DecisionPath
from gateway.schemas.oversight import (
    GroundTruthIn,
    GroundTruthOut,
    IncidentIn,
    IncidentList,
    IncidentOut,
    IncidentPath,
    IncidentQuery,
    IncidentStatusIn,
    OversightReport,
    ReportQuery,
)
from gateway.settings import current_settings

bp = APIBlueprint("oversight", __name__, url_prefix="/v1", abp_tags=[Tag(name="oversight")])
BEARER = [{"bearer": []}]


def _day(value: str, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{field} is not a valid date",
                               details=[{"field": field, "rule": "date", "message": value}]) from None


@bp.get("/reports/oversight", security=BEARER, responses={200: OversightReport, **ERRORS})
def oversight_report(query: ReportQuery) -> Response:
    """The oversight report of a model for a period (auditor): volume, outcomes, notices, explanations, reviews,
    confirmations, fairness on monitor-only attributes, drift, sensitive factors, incidents. `format=csv|html`
    gives the same figures as CSV or a page; the same data always gives the same bytes."""
    principal(Role.AUDITOR)
    start, end = _day(query.from_, "from"), _day(query.to, "to")
    data = oversight.report(query.model, start, end)
    write, mimetype = oversight.FORMATS[query.format]
    return Response(write(data), status=200, mimetype=mimetype.split(";")[0])


@bp.post("/decisions/<decision_id>/ground-truth", security=BEARER, responses={201: GroundTruthOut, **ERRORS})
def post_ground_truth(path: DecisionPath, body: GroundTruthIn) -> Response:
    """Post the true outcome of a decision, once (its agency): error rates per group in the oversight report."""
    who = caller()
    decision = access.visible_decision(who, path.decision_id, access.Action.POST_GROUND_TRUTH)
    agency = principal(Role.AGENCY)
    with write_transaction():
        row = oversight.post_ground_truth(agency, decision, body.positive)
        result = GroundTruthOut(decision_id=row.decision_id, positive=row.positive, posted_at=isoformat(row.posted_at))
    return json_response(result, 201)


@bp.post("/incidents", security=BEARER, responses={201: IncidentOut, **ERRORS})
def open_incident(body: IncidentIn) -> Response:
    """Register an incident with a model (admin or auditor); the regulator-report clock starts now."""
    who = principal(Role.ADMIN, Role.AUDITOR)
    with write_transaction():
        incident = oversight.open_incident(who, body.model, body.severity, body.description, body.version)
        view = oversight.incident_view(incident, current_settings().base_url)
    return json_response(IncidentOut.model_validate(view), 201, {"Location": f"/v1/incidents/{incident.id}"})


@bp.get("/incidents", security=BEARER, responses={200: IncidentList, **ERRORS})
def list_incidents(query: IncidentQuery) -> Response:
    """The incident register (admin or auditor), oldest first."""
    principal(Role.ADMIN, Role.AUDITOR)
    base = current_settings().base_url
    after = keyset_after(query.after, dt.datetime, str)
    rows = oversight.list_incidents(query.model, query.status, limit=query.limit + 1, after=after)
    last = rows[query.limit - 1] if len(rows) > query.limit else None
    next_after = encode_cursor(last.opened_at, last.id) if last is not None else None
    rows = rows[:query.limit]
    return json_response(IncidentList(incidents=[IncidentOut.model_validate(oversight.incident_view(r, base))
                                                 for r in rows], limit=query.limit, next_after=next_after))


@bp.get("/incidents/<incident_id>", security=BEARER, responses={200: IncidentOut, **ERRORS})
def get_incident(path: IncidentPath) -> Response:
    """One incident (admin or auditor)."""
    principal(Role.ADMIN, Role.AUDITOR)
    incident = oversight.get_incident(path.incident_id)
    return json_response(IncidentOut.model_validate(oversight.incident_view(incident, current_settings().base_url)))


@bp.post("/incidents/<incident_id>/status", security=BEARER, responses={200: IncidentOut, **ERRORS})
def set_incident_status(path: IncidentPath, body: IncidentStatusIn) -> Response:
    """Mark an incident reported to the regulator, or closed (admin or auditor)."""
    who = principal(Role.ADMIN, Role.AUDITOR)
    with write_transaction():
        incident = oversight.set_incident_status(who, path.incident_id, body.status)
        view = oversight.incident_view(incident, current_settings().base_url)
    return json_response(IncidentOut.model_validate(view))
