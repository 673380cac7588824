"""Human review over HTTP: the person's request and the reviewers' queue."""

from __future__ import annotations

import datetime as dt

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from gateway import access, reviews
from gateway.api.common import ERRORS, caller, json_response, keyset_after, principal
from gateway.auth import Principal
from gateway.errors import ValidationFailed
from gateway.i18n import request_language
from gateway.models import ReviewRequest, Role
from gateway.presenters.review import case_view, rescore_view, summary
from gateway.schemas import (
    ClaimIn,
    ConfirmationQuery,
    ConfirmIn,
    DecisionPath,
    DecisionReviewPath,
    ExtendIn,
    LeaseIn,
    ReleaseIn,
    Rescored,
    ResolveIn,
    ReviewCase,
    ReviewList,
    ReviewPath,
    ReviewQuery,
    ReviewRequestIn,
    ReviewSummary,
)

bp = APIBlueprint("reviews", __name__, url_prefix="/v1", abp_tags=[Tag(name="reviews")])
BEARER = [{"bearer": []}]


@bp.post("/decisions/<decision_id>/reviews", security=BEARER, responses={201: ReviewSummary, **ERRORS})
def request_review(path: DecisionPath, body: ReviewRequestIn) -> Response:
    """Request human review of a decision, with the person's point of view (the person, or its agency for them)."""
    who = caller()
    review = reviews.request_review(
        who, path.decision_id, point_of_view=body.point_of_view, contest_grounds=list(body.contest_grounds),
        corrected_data=body.corrected_data, language=body.language,
    )
    return json_response(summary(review), 201, {"Location": f"/v1/reviews/{review.id}"})


@bp.post("/decisions/<decision_id>/reviews/<rid:review_id>/withdraw", security=BEARER,
         responses={200: ReviewSummary, **ERRORS})
def withdraw_review(path: DecisionReviewPath) -> Response:
    """Withdraw your open review request (the person only); the decision stays as it was."""
    review = reviews.withdraw(caller(), path.decision_id, path.review_id)
    return json_response(summary(review))


@bp.get("/reviews/<rid:review_id>", security=BEARER, responses={200: ReviewSummary, **ERRORS})
def get_review(path: ReviewPath) -> Response:
    """A review's status, deadline and outcome (whoever sees its decision)."""
    who = caller()
    review = access.visible_review(who, path.review_id)
    view = summary(review)
    access.record_access(who, review.decision_id, "review")
    return json_response(view)


def _reviewer(review_id: str) -> Principal:
    """The reviewer working on this case: 404 for callers who don't see it, 403 for those who only read it."""
    access.visible_review(caller(), review_id, access.Action.WORK_REVIEW)
    return principal(Role.REVIEWER)


def _case(who: Principal, review: ReviewRequest) -> Response:
    view = case_view(review, request_language())  # ?lang=, then Accept-Language: the reviewer's language
    access.record_access(who, review.decision_id, "review_case")
    return json_response(view)


def _date(value: str, field: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.upper())  # RFC 3339 allows "t" and "z"; 3.11 reads "Z"
    except ValueError:
        raise ValidationFailed(f"{field} is not a valid date", details=[{"field": field, "rule": "date", "message": value}]) from None
    try:
        return (parsed if parsed.tzinfo else reviews.end_of_day(parsed.date()) - dt.timedelta(days=1)).astimezone(dt.UTC)
    except (OverflowError, ValueError):
        # The ends of the calendar (0001-01-01, 9999-12-31) have no local midnight or UTC instant. A schema-valid
        # date is answered, never refused: nothing is due before the first days, everything before the last.
        return (dt.datetime.min if parsed.year < 5000 else dt.datetime.max).replace(tzinfo=dt.UTC)


@bp.get("/reviews", security=BEARER, responses={200: ReviewList, **ERRORS})
def list_reviews(query: ReviewQuery) -> Response:
    """The review queue, ordered by due date; overdue cases are flagged, never dropped."""
    principal(Role.REVIEWER, Role.AUDITOR)
    due_before = _date(query.due_before, "due_before") if query.due_before is not None else None
    after = keyset_after(query.after, dt.datetime, dt.datetime, str)
    rows, total = reviews.list_reviews(status=query.status, model=query.model, due_before=due_before,
                                       overdue=query.overdue, limit=query.limit + 1, offset=query.offset,
                                       after=after)
    rows, next_after = _page(rows, query.limit)
    overdue = reviews.overdue_count()
    return json_response(ReviewList(reviews=[summary(r) for r in rows], total=total.value,
                                    total_is_lower_bound=total.lower_bound, limit=query.limit, offset=query.offset,
                                    overdue_total=overdue.value, overdue_total_is_lower_bound=overdue.lower_bound,
                                    next_after=next_after))


def _page(rows: list[ReviewRequest], limit: int) -> tuple[list[ReviewRequest], str | None]:
    """A queue page (`rows` holds one case more than the page when there is a next page) and the cursor of its
    last case in the queue's order (due date, request time, id); None on the last page."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], reviews.queue_cursor(rows[limit - 1])


@bp.post("/reviews/claim", security=BEARER, responses={200: ReviewCase, 204: None, **ERRORS})
def claim(body: ClaimIn) -> Response:
    """Claim the next case due (or a named one) with a lease and a fencing token; 204 when none is waiting."""
    who = principal(Role.REVIEWER)
    review = reviews.claim(who, review_id=body.review_id, lease_seconds=body.lease_seconds)
    if review is None:
        return Response(status=204)
    return _case(who, review)


@bp.post("/reviews/<rid:review_id>/renew", security=BEARER, responses={200: ReviewCase, **ERRORS})
def renew(path: ReviewPath, body: LeaseIn) -> Response:
    """Extend your lease on a case you hold."""
    who = _reviewer(path.review_id)
    return _case(who, reviews.renew(who, path.review_id, body.fencing_token, lease_seconds=body.lease_seconds))


@bp.post("/reviews/<rid:review_id>/release", security=BEARER, responses={200: ReviewSummary, **ERRORS})
def release(path: ReviewPath, body: ReleaseIn) -> Response:
    """Give a case back to the queue."""
    who = _reviewer(path.review_id)
    return json_response(summary(reviews.release(who, path.review_id, body.fencing_token)))


@bp.post("/reviews/<rid:review_id>/resolve", security=BEARER, responses={200: ReviewSummary, **ERRORS})
def resolve(path: ReviewPath, body: ResolveIn) -> Response:
    """Decide a case you hold: upheld, changed (with the new outcome) or annulled, with reasons."""
    who = _reviewer(path.review_id)
    review = reviews.resolve(who, path.review_id, body.fencing_token, outcome=body.outcome,
                             new_outcome=body.new_outcome, reasons=body.reasons.model_dump(exclude_none=True),
                             point_of_view_considered=body.point_of_view_considered)
    return json_response(summary(review))


@bp.post("/reviews/<rid:review_id>/extend", security=BEARER, responses={200: ReviewSummary, **ERRORS})
def extend(path: ReviewPath, body: ExtendIn) -> Response:
    """Extend the deadline once (at most 2 months after the request); the person is notified at once."""
    who = _reviewer(path.review_id)
    try:
        until = dt.date.fromisoformat(body.until)
    except ValueError:
        raise ValidationFailed("until is not a valid date",
                               details=[{"field": "until", "rule": "date", "message": body.until}]) from None
    return json_response(summary(reviews.extend(who, path.review_id, body.fencing_token, until=until, reason=body.reason)))


@bp.post("/reviews/<rid:review_id>/rescore", security=BEARER, responses={201: Rescored, **ERRORS})
def rescore(path: ReviewPath, body: ReleaseIn) -> Response:
    """Score the person's corrected data: a new decision linked to the review; the original stays."""
    who = _reviewer(path.review_id)
    decision = reviews.rescore(who, path.review_id, body.fencing_token)
    return json_response(rescore_view(path.review_id, decision), 201,
                         {"Location": f"/v1/decisions/{decision.id}"})


# --- the confirmation queue: held decisions (autonomy low, adverse review first) ---------------------------

@bp.get("/confirmations", security=BEARER, responses={200: ReviewList, **ERRORS})
def list_confirmations(query: ConfirmationQuery) -> Response:
    """Decisions held for an authorised officer's confirmation (the review queue's cases of kind confirmation)."""
    principal(Role.REVIEWER, Role.AUDITOR)
    after = keyset_after(query.after, dt.datetime, dt.datetime, str)
    rows, total = reviews.list_reviews(status=query.status, model=query.model, limit=query.limit + 1,
                                       offset=query.offset, kind=reviews.CONFIRMATION, after=after)
    rows, next_after = _page(rows, query.limit)
    return json_response(ReviewList(reviews=[summary(r) for r in rows], total=total.value,
                                    total_is_lower_bound=total.lower_bound, limit=query.limit, offset=query.offset,
                                    overdue_total=0, overdue_total_is_lower_bound=False, next_after=next_after))


@bp.post("/confirmations/claim", security=BEARER, responses={200: ReviewCase, 204: None, **ERRORS})
def claim_confirmation(body: ClaimIn) -> Response:
    """Claim the next held decision (or a named one) with a lease and a fencing token; 204 when none waits.

    Renew or release the lease with /v1/reviews/{id}/renew and /release (one queue engine)."""
    who = principal(Role.REVIEWER)
    review = reviews.claim(who, review_id=body.review_id, lease_seconds=body.lease_seconds, kind=reviews.CONFIRMATION)
    if review is None:
        return Response(status=204)
    return _case(who, review)


@bp.post("/reviews/<rid:review_id>/confirm", security=BEARER, responses={200: ReviewSummary, **ERRORS})
def confirm(path: ReviewPath, body: ConfirmIn) -> Response:
    """Confirm a held decision you hold, or change its outcome: the person's notice goes now (a person decided,
    with the system's help) and the agency is called back."""
    who = _reviewer(path.review_id)
    review = reviews.confirm(who, path.review_id, body.fencing_token, outcome=body.outcome,
                             new_outcome=body.new_outcome,
                             reasons=body.reasons.model_dump(exclude_none=True))
    return json_response(summary(review))
