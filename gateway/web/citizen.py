"""The person's pages: the link from the notice, the decision, its explanation, review, data download."""

from __future__ import annotations

import json
from typing import Any

from flask import (
    Blueprint,
    Response,
    make_response,
    redirect,
    render_template,
    request,
)
from flask_babel import gettext as _

from gateway import access, decisions, explanations, recourse, registry, retention, reviews
from gateway.auditlog import store as log_store
from gateway.auth import Citizen, citizen_from_link, expired_capability
from gateway.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from gateway.models import OPEN_REVIEW
from gateway.presenters import access as access_views
from gateway.presenters.decision import decision_view
from gateway.presenters.explanation import draw_svg, explanation_view
from gateway.presenters.recourse import recourse_view
from gateway.settings import current_settings
from gateway.web import forms, labels
from gateway.web.common import (
    NOT_FOUND,
    choose_language,
    citizen_for,
    csrf,
    held_language,
    hold,
    local_date,
)
from gateway.web.svg import inline_svg

bp = Blueprint("web", __name__)
NEXT_PAGES = {"explanation": "/explanation", "review": "/review", "receipt": "#receipt"}
ACCESS_LOG_SHOWN = 20


@bp.before_request
def _protect_forms() -> None:
    """CSRF on every form of the person's pages (the JSON API is not protected this way: no cookies).

    A session that holds no live link for the decision gets the 404 of a missing decision first, so a
    form post answers like every other page of a decision it may not see.
    """
    if request.method == "POST":
        decision_id = (request.view_args or {}).get("decision_id")
        if isinstance(decision_id, str):
            citizen_for(decision_id)
        csrf.protect()


def _person(decision_id: str) -> Citizen:
    """The session's person for this decision, with the page in their language; NotFound for anyone else."""
    citizen = citizen_for(decision_id)
    choose_language(held_language(decision_id))
    return citizen


# --- the link in the notice -----------------------------------------------------------------------------

def _link(decision_id: str, token: str) -> Any:
    try:
        citizen = citizen_from_link(token)
    except Unauthorized as exc:
        if exc.code == "token_expired":
            expired = expired_capability(token)
            if expired is not None and expired.id == decision_id:
                choose_language(expired.language)
                manifest = registry.manifest_of(expired.model_id)
                return make_response(render_template("web/link_expired.html", contact=manifest.notice.contact,
                                                     owner=manifest.notice.owner.get(choose_language(expired.language))), 410)
        raise NotFound(NOT_FOUND) from None
    if citizen.decision_id != decision_id:
        raise NotFound(NOT_FOUND)
    decision = access.visible_decision(citizen, decision_id)
    hold(decision_id, token, decision.language)
    choose_language(decision.language)  # a ?lang= on the link is remembered for the pages that follow
    target = f"/d/{decision_id}{NEXT_PAGES.get(request.args.get('next', ''), '')}"
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        # Arriving from a webmail page: a browser does not send a SameSite=Strict cookie on a redirect
        # chain that started on another site, so continue from a page of our own (same-site navigation).
        return make_response(render_template("web/continue.html", target=target))
    return redirect(target, code=303)


# --- the decision -----------------------------------------------------------------------------------------

@bp.get("/d/<decision_id>")
def decision(decision_id: str) -> Any:
    """The decision page; with ?token= (the link in the notice) it starts the session and redirects."""
    token = request.args.get("token")
    if token:
        return _link(decision_id, token)
    citizen = _person(decision_id)
    lang = choose_language(held_language(decision_id))
    row = access.visible_decision(citizen, decision_id)
    view = decision_view(citizen, decision_id).model_dump(mode="json", exclude_unset=True)
    # The page is one read of the decision, its log included: one access event, one durable write.
    # Recorded before the log is read, so the person sees this visit in it too.
    access.visible_decision(citizen, decision_id, access.Action.READ_ACCESS_LOG)
    access.record_access(citizen, decision_id, "decision")
    # The most recent reads, newest first (the index read backwards: no count, whatever the log's length).
    events = access.latest_access(decision_id, ACCESS_LOG_SHOWN + 1)
    log = {"events": events[:ACCESS_LOG_SHOWN], "more": len(events) > ACCESS_LOG_SHOWN}
    manifest = registry.manifest_of(row.model_id)
    options: dict[str, Any] | None = None
    if row.adverse:  # what the person could change: part of this page (and of its one access event)
        try:
            options = recourse_view(citizen, decision_id, lang).model_dump(mode="json", exclude_unset=True)
        except recourse.RecoursePending:
            options = {"status": "pending"}
        except recourse.RecourseFailed:
            options = {"status": "failed"}
        except retention.DataPurged:
            options = None  # deleted with the rest of the person's data; the page says so
    changed_by = next((r for r in view["reviews"] if r["review_id"] == view["effective_outcome_set_by"]), None)
    return render_template(
        "web/decision.html", d=view, m=manifest, lang=lang, log=log, changed_by=changed_by, labels=labels, r=options,
        outcome=labels.outcome(manifest, view["outcome"], lang),
        effective=labels.outcome(manifest, view["effective_outcome"], lang),
        amount=labels.amount(manifest, row.score, lang),
        open_review=next((r for r in view["reviews"] if r["status"] in OPEN_REVIEW), None),
        deadline=reviews.request_window_ends(row.created_at),
        receipt=log_store.receipt(decision_id).body,
    )


@bp.get("/d/<decision_id>/receipt.json")
def receipt(decision_id: str) -> Response:
    """The decision's receipt (leaf, inclusion proof, signed checkpoint), to check with `gateway-verify`."""
    citizen = _person(decision_id)
    access.visible_decision(citizen, decision_id)
    found = log_store.receipt(decision_id)
    access.record_access(citizen, decision_id, "receipt")
    body = json.dumps(found.body, ensure_ascii=False, indent=2)
    return Response(body, status=200 if found.status == "ready" else 202, mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="receipt-{decision_id}.json"'})


@bp.get("/d/<decision_id>/data.json")
def data(decision_id: str) -> Response:
    """Everything held about this decision, for the person to keep (a JSON download)."""
    citizen = _person(decision_id)
    row = access.visible_decision(citizen, decision_id)
    view = decision_view(citizen, decision_id).model_dump(mode="json", exclude_unset=True)
    try:
        explanation: Any = explanation_view(citizen, decision_id, row.language).model_dump(mode="json", exclude_unset=True)
    except explanations.ExplanationPending:
        explanation = {"status": "pending"}
    except explanations.ExplanationUnavailable as exc:
        explanation = {"status": "unavailable", "message": exc.message}
    except retention.DataPurged as exc:
        explanation = {"status": "purged", "message": exc.message}
    try:
        options: Any = recourse_view(citizen, decision_id, row.language).model_dump(mode="json", exclude_unset=True)
    except recourse.RecoursePending:
        options = {"status": "pending"}
    except recourse.RecourseFailed as exc:
        options = {"status": "failed", "message": exc.message}
    except retention.DataPurged as exc:
        options = {"status": "purged", "message": exc.message}
    requests = []
    for summary in view["reviews"]:
        review = access.visible_review(citizen, summary["review_id"])
        requests.append(summary | {"point_of_view": review.point_of_view, "corrected_data": review.corrected_data,
                                   "language": review.language})
    # The file may be kept or passed on: it holds no live credential (the personal link is left out).
    view["links"] = {k: v for k, v in view["links"].items() if k != "citizen"}
    body = {
        "decision": view,
        "contact": decisions.contact_of(row),
        "explanation": explanation,
        "recourse": options,
        "reviews": requests,
        "access_log": access_views.access_log_view(
            decision_id, *access.read_access_log(citizen, decision_id, limit=10_000, offset=0), limit=10_000, offset=0,
        ).model_dump(mode="json", exclude_unset=True),
    }
    access.record_access(citizen, decision_id, "data_export")
    resp = Response(json.dumps(body, ensure_ascii=False, indent=2), mimetype="application/json")
    resp.headers["Content-Disposition"] = f'attachment; filename="decision-{decision_id}.json"'
    return resp


# --- the explanation ------------------------------------------------------------------------------------

def _purged_page(decision_id: str, citizen: Citizen) -> Any:
    """The page shown instead of the explanation or the review form once the details were deleted."""
    row = access.visible_decision(citizen, decision_id)
    if row.purged_at is None:
        return None
    choose_language(held_language(decision_id))
    message = _("The details of this decision (the data it was made on, its explanation and your point of view) "
                "were deleted on %(date)s under the retention rule (%(days)s days). The outcome, the dates and the "
                "proof in the audit log are kept.", date=local_date(row.purged_at),
                days=retention.state(row, current_settings())["retention_days"])
    return render_template("web/error.html", title=_("The details of this decision were deleted"), message=message,
                           status=410), 410


@bp.get("/d/<decision_id>/explanation")
def explanation(decision_id: str) -> Any:
    citizen = _person(decision_id)
    purged = _purged_page(decision_id, citizen)
    if purged is not None:
        return purged
    lang = choose_language(held_language(decision_id))
    try:
        view = explanation_view(citizen, decision_id, lang).model_dump(mode="json", exclude_unset=True)
    except explanations.ExplanationPending as exc:
        resp = make_response(render_template("web/explanation_pending.html", decision_id=decision_id,
                                             retry_after=exc.retry_after), 202)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    access.record_access(citizen, decision_id, "explanation")
    row = access.visible_decision(citizen, decision_id)
    chart = inline_svg(draw_svg(view), _("Chart: how much each main factor raised or lowered the result"))
    return render_template("web/explanation.html", e=view, chart=chart, decision_id=decision_id,
                           m=registry.manifest_of(row.model_id), lang=lang)


# --- human review ---------------------------------------------------------------------------------------

def _review_page(decision_id: str, citizen: Citizen, form: forms.ReviewForm | None = None, status: int = 200,
                 problem: str | None = None) -> Any:
    lang = choose_language(held_language(decision_id))
    row = access.visible_decision(citizen, decision_id, access.Action.REQUEST_REVIEW)
    view = decision_view(citizen, decision_id).model_dump(mode="json", exclude_unset=True)
    access.record_access(citizen, decision_id, "decision")  # the form shows the decision's inputs
    manifest = registry.manifest_of(row.model_id)
    open_review = next((r for r in view["reviews"] if r["status"] in OPEN_REVIEW), None)
    form = form or forms.ReviewForm(language=lang)
    return make_response(render_template(
        "web/review.html", d=view, m=manifest, lang=lang, form=form, labels=labels, problem=problem,
        features=forms.mutable_features(manifest), open_review=open_review, decision_id=decision_id,
        max_length=reviews.POINT_OF_VIEW_MAX_LENGTH, deadline=reviews.request_window_ends(row.created_at),
        sent=request.args.get("sent") == "1", withdrawn=request.args.get("withdrawn") == "1",
        languages_offered=list(current_settings().languages),
    ), status)


@bp.get("/d/<decision_id>/review")
def review(decision_id: str) -> Any:
    citizen = _person(decision_id)
    return _purged_page(decision_id, citizen) or _review_page(decision_id, citizen)


@bp.post("/d/<decision_id>/review")
def request_review(decision_id: str) -> Any:
    citizen = _person(decision_id)
    purged = _purged_page(decision_id, citizen)
    if purged is not None:
        return purged
    row = access.visible_decision(citizen, decision_id, access.Action.REQUEST_REVIEW)
    form = forms.parse(request.form, registry.manifest_of(row.model_id), list(current_settings().languages))
    if not form.valid:
        return _review_page(decision_id, citizen, form, 422)
    try:
        reviews.request_review(citizen, decision_id, point_of_view=form.point_of_view, contest_grounds=form.grounds,
                               corrected_data=form.values or None, language=form.language)
    except ValidationFailed:
        return _review_page(decision_id, citizen, form, 422, _("Some values could not be accepted. Check the form."))
    except Conflict:
        return _review_page(decision_id, citizen, form, 409, _("This decision already has an open review request."))
    return redirect(f"/d/{decision_id}/review?sent=1", code=303)


@bp.get("/d/<decision_id>/review/withdraw")
def withdraw_confirm(decision_id: str) -> Any:
    citizen = _person(decision_id)
    view = decision_view(citizen, decision_id).model_dump(mode="json", exclude_unset=True)
    open_review = next((r for r in view["reviews"] if r["status"] in OPEN_REVIEW), None)
    if open_review is None:
        return redirect(f"/d/{decision_id}/review", code=303)
    return render_template("web/withdraw.html", decision_id=decision_id, review=open_review, labels=labels)


@bp.post("/d/<decision_id>/review/withdraw")
def withdraw(decision_id: str) -> Any:
    citizen = _person(decision_id)
    review_id = request.form.get("review_id") or ""
    try:
        reviews.withdraw(citizen, decision_id, review_id)
    except reviews.InvalidTransition:
        return _review_page(decision_id, citizen, status=409,
                            problem=_("This review request is no longer open, so it cannot be withdrawn."))
    return redirect(f"/d/{decision_id}/review?withdrawn=1", code=303)
