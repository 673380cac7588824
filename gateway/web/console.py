"""The reviewers' console: the queue, "take the next case", the case page and its forms.

Every action calls the same service as the JSON API (gateway.reviews: claim with a lease and a fencing
token, renew, release, rescore, resolve, extend), so it writes the same audit leaf and the same notices;
the case's reads are recorded in the access log as the API records them. The fencing token travels in each
form: a reviewer whose lease ran out (and whose case another reviewer took) is told so, and nothing they
sent changes the case.

| route                                   | page                                                                  |
|-----------------------------------------|-----------------------------------------------------------------------|
| GET /console[?model=&status=&due_before=&offset=] | the queue (`table#queue`, overdue rows `tr.overdue`, `#waiting` count, `form#filters`, `form#next-form`) |
| POST /console/next                      | takes the next case due (never one the reviewer operated); 303 to the case, or to /console?none=1 |
| GET /console/cases/{review_id}          | the case (`#decision`, `#inputs`, `#explanation` with `tr.withheld`, `#point-of-view`, `#corrected`, `#lease`, `form#resolve-form`, `form#extend-form`, `form#rescore-form`, `#rescore`) |
| POST /console/cases/{review_id}/claim   | takes this case (409 page when another reviewer holds it)              |
| POST /console/cases/{review_id}/renew, /release, /rescore, /resolve, /extend | the actions, each with `fencing_token`; a stale lease: 409 `#lease-lost` |
| GET /console/confirmations[?model=&status=&offset=] | the decisions held for an officer's confirmation (autonomy low) by due date (`table#confirmations`, `#waiting`, `form#next-form`) |
| POST /console/confirmations/next        | takes the next held decision (reviews.claim kind=confirmation); 303 to it, or to /console/confirmations?none=1 |
| GET /console/confirmations/{review_id}  | the held decision (`#decision`, `#inputs`, `#explanation`, `#lease`, `form#confirm-form`) |
| POST /console/confirmations/{review_id}/claim, /renew, /release, /confirm | the same services as the API's confirmation queue; a stale lease: 409 `#lease-lost` |
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, make_response, redirect, render_template, request
from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from gateway import access, deadlines, registry, reviews
from gateway.auth import Principal
from gateway.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gateway.ids import utcnow
from gateway.manifest import Manifest
from gateway.models import OPEN_REVIEW, Role
from gateway.presenters.explanation import display_value
from gateway.presenters.review import case_view, rescore_view, summary
from gateway.settings import current_settings
from gateway.web import labels, staff
from gateway.web.common import choose_language, csrf

bp = Blueprint("console", __name__)
PAGE = 50
STATUSES = ("open", "queued", "claimed", "resolved", "withdrawn")


@bp.before_request
def _protect_forms() -> None:
    """Only reviewers (401 without a session, 403 for another role); CSRF on every form."""
    choose_language()
    staff.official(Role.REVIEWER.value)
    if request.method == "POST":
        csrf.protect()


def _reviewer() -> Principal:
    return staff.official(Role.REVIEWER.value)


# --- the queue --------------------------------------------------------------------------------------------

def _due_before(text: str) -> dt.datetime | None:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return None
    return reviews.end_of_day(day)  # cases due on that day or earlier


def _page_start() -> tuple[int, tuple[dt.datetime, dt.datetime, str] | None]:
    """Where a queue page starts: `?after=` (the next-page link's cursor: the same cost however deep), or the
    older `?offset=` (still read, at a cost that grows with it). A cursor that is not one starts at the top."""
    after = reviews.queue_after(request.args.get("after"))
    try:
        offset = max(int(request.args.get("offset") or 0), 0) if after is None else 0
    except ValueError:
        offset = 0
    return offset, after


def _page(rows: list[Any]) -> tuple[list[Any], str | None]:
    """A page of PAGE cases (`rows` holds one more when a next page exists) and the next page's cursor."""
    if len(rows) <= PAGE:
        return rows, None
    return rows[:PAGE], reviews.queue_cursor(rows[PAGE - 1])


@bp.get("/console")
def queue() -> Any:
    _reviewer()
    status = request.args.get("status") or "open"
    status = status if status in STATUSES else "open"
    model = (request.args.get("model") or "").strip()[:100] or None
    due_text = (request.args.get("due_before") or "").strip()
    due_before = _due_before(due_text) if due_text else None
    problem = _("Enter the date as YYYY-MM-DD.") if due_text and due_before is None else None
    offset, after = _page_start()
    rows, total = reviews.list_reviews(status=status, model=model, due_before=due_before, limit=PAGE + 1,
                                       offset=offset, after=after)
    rows, next_after = _page(rows)
    views = [summary(r).model_dump(mode="json") for r in rows]
    models = sorted({m.name for m in registry.list_models(serving_only=False)})
    args = {k: v for k, v in request.args.items() if k not in ("offset", "after", "lang")}
    return render_template("web/console_queue.html", reviews=views, total=total,
                           waiting=reviews.count_reviews(status="open"),
                           overdue=reviews.overdue_count(), status=status, model=model or "", due_before=due_text,
                           statuses=STATUSES, models=models, paged=bool(offset or after), next_after=next_after,
                           args=args, problem=problem,
                           none_waiting=request.args.get("none") == "1", labels=labels)


@bp.post("/console/next")
def take_next() -> Any:
    who = _reviewer()
    review = reviews.claim(who)
    if review is None:
        return redirect("/console?none=1", code=303)
    return redirect(f"/console/cases/{review.id}", code=303)


# --- the case ---------------------------------------------------------------------------------------------

def _inputs(manifest: Manifest, inputs: dict[str, Any], lang: str) -> list[dict[str, Any]]:
    rows = []
    for feature in manifest.features:
        if feature.name in inputs:
            rows.append({"name": feature.name, "label": feature.labels.get(lang) or feature.name,
                         "value": display_value(feature, inputs[feature.name], lang),
                         "withheld": feature.disclosure == "withhold"})
    return rows


def _factors(manifest: Manifest, explanation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every attribution of the decision, largest first; each marked shown to the person or withheld."""
    if not explanation or not explanation.get("attributions"):
        return []
    shown = {f["feature"] for f in explanation.get("factors", [])}
    rows = []
    for name, value in explanation["attributions"].items():
        try:
            feature = manifest.feature(name)
        except KeyError:
            continue
        rows.append({"name": name, "label": feature.labels.get(explanation["language"]) or name,
                     "contribution": float(value), "withheld": feature.disclosure == "withhold",
                     "shown": name in shown})
    return sorted(rows, key=lambda r: -abs(r["contribution"]))


def _case_page(who: Principal, review_id: str, *, status: int = 200, problem: str | None = None,
               errors: dict[str, str] | None = None, form: MultiDict[str, str] | None = None,
               lease_lost: bool = False) -> Any:
    lang = choose_language()
    review = access.visible_review(who, review_id, access.Action.WORK_REVIEW)
    view = case_view(review, lang).model_dump(mode="json")
    access.record_access(who, review.decision_id, "review_case")
    manifest = registry.manifest_of(access.visible_decision(who, review.decision_id).model_id)
    now = utcnow()
    lease_end = review.lease_expires_at
    held = (review.status == "claimed" and review.claimed_by == who.id and lease_end is not None and lease_end > now)
    rescored = None
    if review.rescore_decision_id:
        rescored = rescore_view(review.id, access.visible_decision(who, review.rescore_decision_id)).model_dump(mode="json")
    corrected = []
    for name, value in (review.corrected_data or {}).items():
        feature = manifest.feature(name)
        corrected.append({"name": name, "label": feature.labels.get(lang) or name,
                          "was": display_value(feature, view["decision"]["inputs"].get(name), lang),
                          "now": display_value(feature, value, lang)})
    latest = None
    if review.extended_until is None:
        settings = current_settings()
        latest = deadlines.add_months(deadlines.local_date(review.requested_at, settings.zone),
                                      settings.review_max_extension_months)
    return make_response(render_template(
        "web/console_case.html", c=view, review=review, held=held, lease_left=int((lease_end - now).total_seconds()) if held and lease_end else 0,
        inputs=_inputs(manifest, view["decision"]["inputs"], lang), factors=_factors(manifest, view["explanation"]),
        manifest=manifest, lang=lang, rescored=rescored, corrected=corrected, open=review.status in OPEN_REVIEW,
        problem=problem, errors=errors or {}, form=form or MultiDict(), lease_lost=lease_lost, labels=labels,
        outcome_label=lambda code: labels.outcome(manifest, code, lang), latest_extension=latest,
        other_outcomes=[o for o in view["outcomes"] if o != view["decision"]["outcome"]],
    ), status)


@bp.get("/console/cases/<review_id>")
def case(review_id: str) -> Any:
    who = _reviewer()
    if access.visible_review(who, review_id, access.Action.WORK_REVIEW).kind == reviews.CONFIRMATION:
        return redirect(f"/console/confirmations/{review_id}", code=303)  # a held decision, not a review
    return _case_page(who, review_id)


def _token() -> int:
    try:
        return int(request.form.get("fencing_token") or "")
    except ValueError:
        return -1  # never a live token: answered as a lost lease


def _act(review_id: str, action: Any) -> Any:
    """Run one action on a held case; a lost lease or a closed case is a 409 page and nothing changed."""
    who = _reviewer()
    access.visible_review(who, review_id, access.Action.WORK_REVIEW)
    try:
        action(who)
    except reviews.StaleLease:
        return _case_page(who, review_id, status=409, lease_lost=True)
    except reviews.InvalidTransition:
        return _case_page(who, review_id, status=409,
                          problem=_("This case is no longer open (it was resolved or withdrawn). Nothing you sent changed it."))
    except Forbidden as exc:
        if exc.code == "reviewer_is_operator":
            return _case_page(who, review_id, status=403,
                              problem=_("You operated this decision, so you may not review it. Nothing was changed."))
        raise
    return None


@bp.post("/console/cases/<review_id>/claim")
def take(review_id: str) -> Any:
    who = _reviewer()
    access.visible_review(who, review_id, access.Action.WORK_REVIEW)
    try:
        reviews.claim(who, review_id=review_id)
    except reviews.InvalidTransition:
        return _case_page(who, review_id, status=409, problem=_("This case is no longer open, so it cannot be taken."))
    except Forbidden as exc:
        if exc.code == "reviewer_is_operator":
            return _case_page(who, review_id, status=403,
                              problem=_("You operated this decision, so you may not review it. Nothing was changed."))
        raise
    except Conflict:
        return _case_page(who, review_id, status=409, problem=_("Another reviewer holds this case. Take the next case instead."))
    return redirect(f"/console/cases/{review_id}", code=303)


@bp.post("/console/cases/<review_id>/renew")
def renew(review_id: str) -> Any:
    failed = _act(review_id, lambda who: reviews.renew(who, review_id, _token()))
    return failed or redirect(f"/console/cases/{review_id}", code=303)


@bp.post("/console/cases/<review_id>/release")
def release(review_id: str) -> Any:
    failed = _act(review_id, lambda who: reviews.release(who, review_id, _token()))
    return failed or redirect("/console", code=303)


@bp.post("/console/cases/<review_id>/rescore")
def rescore(review_id: str) -> Any:
    try:
        failed = _act(review_id, lambda who: reviews.rescore(who, review_id, _token()))
    except ValidationFailed:
        return _case_page(_reviewer(), review_id, status=422, problem=_("The person sent no corrected data to score."))
    return failed or redirect(f"/console/cases/{review_id}#rescore", code=303)


def _resolve_errors(form: MultiDict[str, str], outcomes: list[str]) -> dict[str, str]:
    errors = {}
    outcome = form.get("outcome") or ""
    if outcome not in reviews.OUTCOMES:
        errors["outcome"] = _("Choose the outcome of the review.")
    if outcome == "changed" and (form.get("new_outcome") or "") not in outcomes:
        errors["new_outcome"] = _("Choose the new outcome.")
    for lang in ("kk", "ru"):
        if not (form.get(f"reasons_{lang}") or "").strip():
            errors[f"reasons_{lang}"] = _("Write the reasons in Kazakh and in Russian.")
    if form.get("point_of_view_considered") != "yes":
        errors["point_of_view_considered"] = _("Confirm that you considered the person's point of view.")
    return errors


@bp.post("/console/cases/<review_id>/resolve")
def resolve(review_id: str) -> Any:
    who = _reviewer()
    review = access.visible_review(who, review_id, access.Action.WORK_REVIEW)
    form = request.form
    manifest = registry.manifest_of(access.visible_decision(who, review.decision_id).model_id)
    outcomes = [manifest.policy.outcome_above, manifest.policy.outcome_below]
    errors = _resolve_errors(form, outcomes)
    if errors:
        return _case_page(who, review_id, status=422, errors=errors, form=form)
    outcome = form["outcome"]
    reasons = {lang: form.get(f"reasons_{lang}", "").strip() for lang in ("kk", "ru", "en")}
    reasons = {k: v for k, v in reasons.items() if v}
    try:
        failed = _act(review_id, lambda w: reviews.resolve(
            w, review_id, _token(), outcome=outcome, new_outcome=form.get("new_outcome") if outcome == "changed" else None,
            reasons=reasons, point_of_view_considered=True))
    except ValidationFailed as exc:
        return _case_page(who, review_id, status=422, form=form, problem=exc.message)
    return failed or redirect(f"/console/cases/{review_id}?resolved=1", code=303)


@bp.post("/console/cases/<review_id>/extend")
def extend(review_id: str) -> Any:
    who = _reviewer()
    form = request.form
    errors = {}
    try:
        until = dt.date.fromisoformat(form.get("until") or "")
    except ValueError:
        errors["until"] = _("Enter the new deadline as YYYY-MM-DD.")
    reason = (form.get("reason") or "").strip()
    if not reason:
        errors["reason"] = _("Write the reason for the extension.")
    if errors:
        return _case_page(who, review_id, status=422, errors=errors, form=form)
    try:
        failed = _act(review_id, lambda w: reviews.extend(w, review_id, _token(), until=until, reason=reason))
    except ValidationFailed as exc:
        named = exc.details[0]["field"] if exc.details else "until"
        return _case_page(who, review_id, status=422, errors={named if named == "reason" else "until": exc.message},
                          form=form)
    except Conflict as exc:
        if exc.code == "already_extended":
            return _case_page(who, review_id, status=409, problem=_("The deadline was extended once already."))
        raise
    return failed or redirect(f"/console/cases/{review_id}?extended=1", code=303)


# --- the confirmation queue: decisions held for an officer (autonomy low) ---------------------------------

CONFIRMATION_STATUSES = ("open", "queued", "claimed", "resolved")


@bp.get("/console/confirmations")
def confirmations() -> Any:
    _reviewer()
    status = request.args.get("status") or "open"
    status = status if status in CONFIRMATION_STATUSES else "open"
    model = (request.args.get("model") or "").strip()[:100] or None
    offset, after = _page_start()
    rows, total = reviews.list_reviews(status=status, model=model, limit=PAGE + 1, offset=offset, after=after,
                                       kind=reviews.CONFIRMATION)
    rows, next_after = _page(rows)
    models = sorted({m.name for m in registry.list_models(serving_only=False)})
    args = {k: v for k, v in request.args.items() if k not in ("offset", "after", "lang")}
    return render_template("web/console_confirmations.html", rows=[summary(r).model_dump(mode="json") for r in rows],
                           total=total, waiting=reviews.count_reviews(status="open", kind=reviews.CONFIRMATION),
                           status=status, model=model or "", models=models, statuses=CONFIRMATION_STATUSES,
                           paged=bool(offset or after), next_after=next_after, args=args,
                           none_waiting=request.args.get("none") == "1", labels=labels)


@bp.post("/console/confirmations/next")
def take_next_confirmation() -> Any:
    who = _reviewer()
    held = reviews.claim(who, kind=reviews.CONFIRMATION)
    if held is None:
        return redirect("/console/confirmations?none=1", code=303)
    return redirect(f"/console/confirmations/{held.id}", code=303)


def _held_decision(who: Principal, review_id: str) -> Any:
    """The confirmation case `review_id` if the reviewer sees it (a review case of another kind: 404)."""
    review = access.visible_review(who, review_id, access.Action.WORK_REVIEW)
    if review.kind != reviews.CONFIRMATION:
        raise NotFound("The resource does not exist.")
    return review


def _confirmation_page(who: Principal, review_id: str, *, status: int = 200, problem: str | None = None,
                       errors: dict[str, str] | None = None, form: MultiDict[str, str] | None = None,
                       lease_lost: bool = False) -> Any:
    lang = choose_language()
    review = _held_decision(who, review_id)
    view = case_view(review, lang).model_dump(mode="json")
    access.record_access(who, review.decision_id, "confirmation_case")
    manifest = registry.manifest_of(access.visible_decision(who, review.decision_id).model_id)
    now = utcnow()
    lease_end = review.lease_expires_at
    held = (review.status == "claimed" and review.claimed_by == who.id and lease_end is not None and lease_end > now)
    return make_response(render_template(
        "web/console_confirmation.html", c=view, held=held,
        lease_left=int((lease_end - now).total_seconds()) if held and lease_end else 0,
        inputs=_inputs(manifest, view["decision"]["inputs"], lang), factors=_factors(manifest, view["explanation"]),
        open=review.status in OPEN_REVIEW, problem=problem, errors=errors or {}, form=form or MultiDict(),
        lease_lost=lease_lost, labels=labels, outcome_label=lambda code: labels.outcome(manifest, code, lang),
        other_outcomes=[o for o in view["outcomes"] if o != view["decision"]["outcome"]],
        reasons=[(code, (review.reasons or {}).get(code)) for code in ("kk", "ru", "en") if (review.reasons or {}).get(code)],
    ), status)


@bp.get("/console/confirmations/<review_id>")
def confirmation(review_id: str) -> Any:
    return _confirmation_page(_reviewer(), review_id)


def _act_on_held(review_id: str, action: Any) -> Any:
    """Run one action on a held decision the reviewer holds; a lost lease or a closed case is a 409 page."""
    who = _reviewer()
    _held_decision(who, review_id)
    try:
        action(who)
    except reviews.StaleLease:
        return _confirmation_page(who, review_id, status=409, lease_lost=True)
    except reviews.InvalidTransition:
        return _confirmation_page(who, review_id, status=409,
                                  problem=_("This decision is no longer waiting for confirmation. Nothing you sent changed it."))
    return None


@bp.post("/console/confirmations/<review_id>/claim")
def take_confirmation(review_id: str) -> Any:
    who = _reviewer()
    _held_decision(who, review_id)
    try:
        reviews.claim(who, review_id=review_id, kind=reviews.CONFIRMATION)
    except reviews.InvalidTransition:
        return _confirmation_page(who, review_id, status=409,
                                  problem=_("This decision is no longer waiting for confirmation, so it cannot be taken."))
    except Conflict:
        return _confirmation_page(who, review_id, status=409,
                                  problem=_("Another officer holds this decision. Take the next held decision instead."))
    return redirect(f"/console/confirmations/{review_id}", code=303)


@bp.post("/console/confirmations/<review_id>/renew")
def renew_confirmation(review_id: str) -> Any:
    failed = _act_on_held(review_id, lambda who: reviews.renew(who, review_id, _token()))
    return failed or redirect(f"/console/confirmations/{review_id}", code=303)


@bp.post("/console/confirmations/<review_id>/release")
def release_confirmation(review_id: str) -> Any:
    failed = _act_on_held(review_id, lambda who: reviews.release(who, review_id, _token()))
    return failed or redirect("/console/confirmations", code=303)


def _confirm_errors(form: MultiDict[str, str], outcomes: list[str]) -> dict[str, str]:
    errors = {}
    outcome = form.get("outcome") or ""
    if outcome not in reviews.CONFIRM_OUTCOMES:
        errors["outcome"] = _("Choose whether you confirm the system's outcome or change it.")
    if outcome == "changed":
        if (form.get("new_outcome") or "") not in outcomes:
            errors["new_outcome"] = _("Choose the new outcome.")
        for lang in ("kk", "ru"):
            if not (form.get(f"reasons_{lang}") or "").strip():
                errors[f"reasons_{lang}"] = _("To change the outcome, write the reasons in Kazakh and in Russian.")
    return errors


@bp.post("/console/confirmations/<review_id>/confirm")
def confirm(review_id: str) -> Any:
    who = _reviewer()
    review = _held_decision(who, review_id)
    form = request.form
    manifest = registry.manifest_of(access.visible_decision(who, review.decision_id).model_id)
    decided = access.visible_decision(who, review.decision_id).outcome
    errors = _confirm_errors(form, [o for o in manifest.policy.outcomes if o != decided])
    if errors:
        return _confirmation_page(who, review_id, status=422, errors=errors, form=form)
    outcome = form["outcome"]
    reasons = {lang: (form.get(f"reasons_{lang}") or "").strip() for lang in ("kk", "ru", "en")}
    reasons = {k: v for k, v in reasons.items() if v}
    try:
        failed = _act_on_held(review_id, lambda w: reviews.confirm(
            w, review_id, _token(), outcome=outcome, new_outcome=form.get("new_outcome") if outcome == "changed" else None,
            reasons=reasons))
    except ValidationFailed as exc:
        return _confirmation_page(who, review_id, status=422, form=form, problem=exc.message)
    return failed or redirect(f"/console/confirmations/{review_id}?confirmed=1", code=303)
