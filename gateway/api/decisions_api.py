"""Decisions: the agency's call that scores and records, and reading a decision back."""

from __future__ import annotations

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag

from gateway import access, decisions, explanations, handovers, recourse, retention
from gateway.api.common import ERRORS, caller, json_response, keyed_principal, request_hash
from gateway.errors import BadRequest
from gateway.ids import isoformat
from gateway.models import Role
from gateway.presenters import access as access_views
from gateway.presenters.decision import decision_view
from gateway.presenters.explanation import explanation_svg, explanation_view
from gateway.presenters.recourse import recourse_view
from gateway.schemas import (
    AccessLog,
    DecisionCreated,
    DecisionOut,
    DecisionPath,
    DecisionRequest,
    ExplanationOut,
    ExplanationQuery,
    HandoverCreated,
    HandoverPath,
    HoldIn,
    HoldOut,
    HoldQuery,
    KeysetPageQuery,
    ModelPath,
    MyDecisions,
    Pending,
    RecourseOut,
)
from gateway.settings import current_settings

bp = APIBlueprint("decisions", __name__, url_prefix="/v1", abp_tags=[Tag(name="decisions")])
BEARER = [{"bearer": []}]


def _idempotency_key() -> str:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise BadRequest("the Idempotency-Key header is required (1 to 255 printable characters)", code="idempotency_key_required")
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise BadRequest("the Idempotency-Key header must be 1 to 255 printable ASCII characters", code="idempotency_key_invalid")
    return key


@bp.post("/models/<name>/decisions", security=BEARER, responses={201: DecisionCreated, **ERRORS})
def create_decision(path: ModelPath, body: DecisionRequest) -> Response:
    """Score one application with the model and record the decision before answering (agency)."""
    who, key_hash = keyed_principal(Role.AGENCY)  # the key is proved live in the decision's transaction
    key = _idempotency_key()
    data = decisions.DecisionInput(
        iin=body.subject.iin,
        language=body.subject.language,
        contact=body.subject.contact.model_dump(exclude_none=True),
        features=body.features,
        monitoring=body.monitoring,
        operator=body.operator,
        operator_id=body.operator_id,
        reference=body.reference,
    )
    stored = decisions.record_decision(
        who, path.name, data, idempotency_key=key, request_hash=request_hash(path.name, request.get_json()),
        key_hash=key_hash,
    )
    headers = {"Location": f"/v1/decisions/{stored.resource_id}"}
    if stored.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(stored.body, status=stored.status, headers=headers, mimetype="application/json")


@bp.get("/decisions/<decision_id>", security=BEARER, responses={200: DecisionOut, **ERRORS})
def get_decision(path: DecisionPath) -> Response:
    """Read a decision: outcome, effective outcome, notices, reviews (the person, its agency, reviewer, auditor)."""
    who = caller()  # anyone who may not see it gets the same 404 as for an id that does not exist
    view = decision_view(who, path.decision_id)
    access.record_access(who, path.decision_id, "decision")
    return json_response(view)


def _pending(decision_id: str, exc: explanations.ExplanationPending | recourse.RecoursePending) -> Response:
    return json_response(Pending(decision_id=decision_id, status="pending", retry_after=exc.retry_after), 202,
                         {"Retry-After": str(exc.retry_after)})


@bp.get("/decisions/<decision_id>/explanation", security=BEARER, responses={200: ExplanationOut, 202: Pending, **ERRORS})
def get_explanation(path: DecisionPath, query: ExplanationQuery) -> Response:
    """The main influencing factors of a decision, in kk, ru or en, within confidentiality limits."""
    who = caller()
    try:
        view = explanation_view(who, path.decision_id, query.lang)
    except explanations.ExplanationPending as exc:
        return _pending(path.decision_id, exc)
    access.record_access(who, path.decision_id, "explanation")
    return json_response(view)


@bp.get("/decisions/<decision_id>/explanation.svg", security=BEARER,
        responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}, 202: Pending, **ERRORS})
def get_explanation_svg(path: DecisionPath, query: ExplanationQuery) -> Response:
    """The main influencing factors drawn as a bar chart (SVG)."""
    who = caller()
    try:
        svg = explanation_svg(who, path.decision_id, query.lang)
    except explanations.ExplanationPending as exc:
        return _pending(path.decision_id, exc)
    access.record_access(who, path.decision_id, "explanation.svg")
    return Response(svg, mimetype="image/svg+xml")


@bp.get("/decisions/<decision_id>/recourse", security=BEARER, responses={200: RecourseOut, 202: Pending, **ERRORS})
def get_recourse(path: DecisionPath, query: ExplanationQuery) -> Response:
    """What the person could change to get the other outcome: verified options, in kk, ru or en.

    Adverse decisions only: any other decision answers 200 with no options, status `not_adverse` and a
    sentence saying so; 202 with Retry-After while the recourse job has not run yet.
    """
    who = caller()
    try:
        view = recourse_view(who, path.decision_id, query.lang)
    except recourse.RecoursePending as exc:
        return _pending(path.decision_id, exc)
    access.record_access(who, path.decision_id, "recourse")
    return json_response(view)


@bp.get("/decisions/<decision_id>/access-log", security=BEARER, responses={200: AccessLog, **ERRORS})
def get_access_log(path: DecisionPath, query: KeysetPageQuery) -> Response:
    """Who read this decision, its explanation and reviews, and when (the person and auditors)."""
    events, total = access.read_access_log(caller(), path.decision_id, limit=query.limit, offset=query.offset,
                                           after=query.after)
    return json_response(access_views.access_log_view(path.decision_id, events, total, limit=query.limit,
                                                      offset=query.offset))


@bp.get("/me/decisions", security=BEARER, responses={200: MyDecisions, **ERRORS})
def my_decisions(query: KeysetPageQuery) -> Response:
    """Every decision about you, newest first (signed in with the national identity provider)."""
    rows, total = access.list_my_decisions(caller(), limit=query.limit, offset=query.offset, after=query.after)
    return json_response(access_views.my_decisions_view(rows, total, limit=query.limit, offset=query.offset,
                                                        base_url=current_settings().base_url))


@bp.post("/decisions/<decision_id>/handover-links", security=BEARER, responses={201: HandoverCreated, **ERRORS})
def create_handover_link(path: DecisionPath) -> Response:
    """Make a revocable link to hand on to the person (agency of the decision); its use is recorded as such."""
    made = handovers.create(caller(), path.decision_id)  # 404 for who doesn't see it, 403 for who may not
    view = HandoverCreated(handover_id=made.id, decision_id=made.decision_id, link=made.link,
                           created_at=isoformat(made.created_at))
    return json_response(view, 201, {"Location": f"/v1/decisions/{made.decision_id}/handover-links/{made.id}"})


@bp.delete("/decisions/<decision_id>/handover-links/<handover_id>", security=BEARER, responses={204: None, **ERRORS})
def revoke_handover_link(path: HandoverPath) -> Response:
    """Revoke a handover link: from then on it is refused like a forged one (agency of the decision)."""
    handovers.revoke(caller(), path.decision_id, path.handover_id)
    return Response(status=204)


@bp.post("/decisions/<decision_id>/hold", security=BEARER, responses={200: HoldOut, **ERRORS})
def set_legal_hold(path: DecisionPath, body: HoldIn) -> Response:
    """Set a legal hold (auditor): the decision's personal data is kept past its retention period until cleared."""
    decision = retention.set_hold(caller(), path.decision_id, body.reason)
    return json_response(HoldOut.model_validate(retention.hold_view(decision, current_settings())))


@bp.delete("/decisions/<decision_id>/hold", security=BEARER, responses={200: HoldOut, **ERRORS})
def clear_legal_hold(path: DecisionPath, query: HoldQuery) -> Response:
    """Clear a legal hold (auditor), saying why; the purge takes the decision when its period is over."""
    decision = retention.clear_hold(caller(), path.decision_id, query.reason)
    return json_response(HoldOut.model_validate(retention.hold_view(decision, current_settings())))
