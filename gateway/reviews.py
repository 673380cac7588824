"""Human review: a person contests a decision; a reviewer claims, decides, and the outcome supersedes it.

States and the transitions allowed between them are data (TRANSITIONS). A claim holds a lease and a
fencing token: every later action must present the token of a lease still running, so a holder that
was paused past its lease (and whose case another reviewer claimed) cannot resolve it. Every change is
written with its notice rows and audit leaf in one transaction.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from gateway import deadlines, decisions, keystore, registry, rollups, runtime
from gateway.access import Action, visible_decision, visible_review
from gateway.audit import leaf_values
from gateway.auth import Caller, Principal
from gateway.contacts import committer
from gateway.db import Total, bounded_count, write_transaction
from gateway.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gateway.extensions import db
from gateway.features import check_value, validate_features
from gateway.ids import decode_cursor, encode_cursor, new_id, utcnow
from gateway.manifest import Manifest
from gateway.models import (
    CLAIMED_SQL,
    LISTED_DUE,
    OPEN_REVIEW,
    OPEN_REVIEW_SQL,
    REVIEW_KIND,
    ApiClient,
    Decision,
    LogLeaf,
    Notification,
    NotificationStatus,
    ReviewRequest,
    ReviewStatus,
    table,
)
from gateway.retention import check_not_purged
from gateway.rollups import stamp
from gateway.schemas.reviews import POINT_OF_VIEW_MAX
from gateway.settings import current_settings
from gateway.text import refuse_control_characters

GROUNDS = ("wrong_data", "wrong_assessment", "other")
REVIEW = REVIEW_KIND
CONFIRMATION = decisions.CONFIRMATION
CONFIRM_OUTCOMES = ("confirmed", "changed")
AGENCY_OUTCOME = "agency_outcome"  # the outbox kind of the signed callback to the agency
POINT_OF_VIEW_MAX_LENGTH = POINT_OF_VIEW_MAX  # characters; the API schema and the review page share this limit
OUTCOMES = ("upheld", "changed", "annulled")
ANNULLED = "annulled"

# (state, action) -> next state. Anything else is refused with 409 naming the current state.
TRANSITIONS: dict[tuple[str, str], str] = {
    (ReviewStatus.QUEUED, "claim"): ReviewStatus.CLAIMED,
    (ReviewStatus.CLAIMED, "claim"): ReviewStatus.CLAIMED,  # only once the holder's lease ran out
    (ReviewStatus.CLAIMED, "renew"): ReviewStatus.CLAIMED,
    (ReviewStatus.CLAIMED, "release"): ReviewStatus.QUEUED,
    (ReviewStatus.CLAIMED, "resolve"): ReviewStatus.RESOLVED,
    (ReviewStatus.CLAIMED, "rescore"): ReviewStatus.CLAIMED,
    # Only the holder of a running lease extends (fencing token), like every other action after a claim.
    (ReviewStatus.CLAIMED, "extend"): ReviewStatus.CLAIMED,
    # The person may withdraw their request while it is open, even while a reviewer holds it.
    (ReviewStatus.QUEUED, "withdraw"): ReviewStatus.WITHDRAWN,
    (ReviewStatus.CLAIMED, "withdraw"): ReviewStatus.WITHDRAWN,
}


class InvalidTransition(Conflict):
    """This action is not allowed in the review's current state."""

    code = "invalid_transition"


class StaleLease(Conflict):
    """The lease is not yours or has run out; claim the case again."""

    code = "stale_lease"


def _transition(review: ReviewRequest, action: str) -> str:
    nxt = TRANSITIONS.get((ReviewStatus(review.status), action))
    if nxt is None:
        raise InvalidTransition(f"cannot {action} a review that is {review.status}", details={"status": review.status})
    return str(nxt)


# --- deadlines ----------------------------------------------------------------------------------------

def end_of_day(day: dt.date) -> dt.datetime:
    """The deadline instant of a legal day in this deployment (see gateway.deadlines)."""
    return deadlines.end_of_day(day, current_settings().zone)


def request_window_ends(decided_at: dt.datetime) -> dt.date:
    """The last day on which review may be requested without being late: decision date + the window."""
    return deadlines.review_request_deadline(decided_at, current_settings())


def effective_due(review: ReviewRequest) -> dt.datetime:
    return review.extended_until or review.due_at


# --- the person's side ----------------------------------------------------------------------------------

def _decision_for(principal: Caller, decision_id: str) -> Decision:
    return visible_decision(principal, decision_id, Action.REQUEST_REVIEW)


def _channels(decision_id: str) -> list[str]:
    return sorted(db.session.execute(
        select(Notification.channel).where(Notification.decision_id == decision_id).distinct()
    ).scalars())


def _notices(decision: Decision, kind: str, review: ReviewRequest, now: dt.datetime) -> list[dict[str, Any]]:
    # The deadline as announced now: a notice rendered later (a retry after an extension) still says what it
    # said when it was written. `due_on` is the last day itself, not the midnight that ends it.
    due = effective_due(review)
    context = {"review_id": review.id, "due_at": due.isoformat(),
               "due_on": deadlines.last_day(due, current_settings().zone).isoformat()}
    return [
        {
            "id": new_id("ntf"), "decision_id": decision.id, "kind": kind, "channel": channel,
            "language": review.language, "status": NotificationStatus.PENDING.value, "attempts": 0,
            "next_attempt_at": now, "created_at": now, "context": context,
        }
        for channel in _channels(decision.id)
    ]


def _check_corrected(manifest: Manifest, corrected: dict[str, Any] | None) -> None:
    if not corrected:
        return
    problems = []
    for name, value in corrected.items():
        try:
            feature = manifest.feature(name)
        except KeyError:
            problems.append({"field": f"corrected_data.{name}", "rule": "unknown",
                             "message": f"the model has no feature {name!r}"})
            continue
        problem = check_value(feature, value, f"corrected_data.{name}")
        if problem:
            problems.append(problem)
    if problems:
        raise ValidationFailed(f"{len(problems)} invalid field(s)", details=problems)


def request_review(principal: Caller, decision_id: str, *, point_of_view: str, contest_grounds: list[str],
                   corrected_data: dict[str, Any] | None, language: str | None,
                   now: dt.datetime | None = None) -> ReviewRequest:
    """Open a review of a decision; the person is told it was received and by when it is due."""
    now = now or utcnow()
    refuse_control_characters({"point_of_view": point_of_view}, multiline=True)
    decision = _decision_for(principal, decision_id)
    check_not_purged(decision)  # the data a reviewer would look at was deleted under the retention rule
    _check_corrected(registry.manifest_of(decision.model_id), corrected_data)
    open_review = _open_review(decision.id)
    if open_review is not None:
        raise Conflict("this decision already has an open review", code="review_open",
                       details={"review_id": open_review})
    review = ReviewRequest(
        id=new_id("rev"), decision_id=decision.id, status=ReviewStatus.QUEUED.value, point_of_view=point_of_view,
        contest_grounds=list(contest_grounds), corrected_data=corrected_data or None,
        language=language or decision.language, requested_by=principal.id, requested_at=now,
        due_at=deadlines.due_date(now, current_settings()), fencing_token=0,
        # Accepted after the window the notice printed, but flagged: the reviewer decides what it means.
        late=deadlines.local_date(now, current_settings().zone) > request_window_ends(decision.created_at),
    )
    try:
        with write_transaction() as session:
            session.add(review)
            session.flush()
            notices = _notices(decision, "review_received", review, now)
            if notices:
                session.execute(insert(table(Notification)), notices)
            commit = _committer(decision)
            _leaf(session, "review:requested", review, now, decision_id=decision.id, grounds=review.contest_grounds,
                  corrected=sorted(corrected_data or {}), due_at=review.due_at.isoformat(), late=review.late,
                  point_of_view_commitment=commit(point_of_view),
                  corrected_data_commitment=commit(corrected_data) if corrected_data else None)
    except IntegrityError:
        # Another request for the same decision committed first (the partial unique index).
        db.session.rollback()
        raise Conflict("this decision already has an open review", code="review_open",
                       details={"review_id": _open_review(decision.id)}) from None
    return review


def withdraw(principal: Caller, decision_id: str, review_id: str, *, now: dt.datetime | None = None) -> ReviewRequest:
    """The person withdraws their open review request; they are told it was withdrawn.

    Only the person may (gateway.access: WITHDRAW_REVIEW); anyone who does not see the decision, or a
    review of another decision, gets NotFound; a review that is no longer open gets InvalidTransition.
    """
    now = now or utcnow()
    found = visible_review(principal, review_id, Action.WITHDRAW_REVIEW)
    if found.decision_id != decision_id or found.kind != REVIEW:
        raise NotFound("The resource does not exist.")
    with write_transaction() as session:
        review = session.execute(select(ReviewRequest).where(ReviewRequest.id == review_id).with_for_update()).scalar_one()
        previous = review.status
        review.status = _transition(review, "withdraw")
        review.claimed_by, review.lease_expires_at = None, None
        review.finished_at = stamp(now)
        decision = session.get(Decision, review.decision_id)
        assert decision is not None
        session.flush()
        notices = _notices(decision, "review_withdrawn", review, now)
        if notices:
            session.execute(insert(table(Notification)), notices)
        _leaf(session, "review:withdrawn", review, now, decision_id=decision.id, previous_status=previous,
              withdrawn_by=principal.id)
    return review


def _open_review(decision_id: str) -> str | None:
    found = db.session.execute(
        select(ReviewRequest.id, ReviewRequest.kind)
        .where(ReviewRequest.decision_id == decision_id, ReviewRequest.status.in_(OPEN_REVIEW))
    ).first()
    if found is not None and found.kind == CONFIRMATION:
        raise Conflict("this decision waits for an officer's confirmation; it can be reviewed once it is confirmed",
                       code="pending_confirmation")
    return found.id if found is not None else None


def _committer(decision: Decision) -> Callable[[Any], str]:
    """Commitments to the person's data in review leaves: keyed by the decision's data key (purgeable)."""
    settings = current_settings()
    return committer(settings.contact_key, settings.subject_key, decision.id, keystore.wrapped(decision.id))


def _leaf(session: Any, kind: str, review: ReviewRequest, now: dt.datetime, **fields: Any) -> None:
    record = {"review_id": review.id, "at": now.isoformat(), **fields}
    session.execute(insert(table(LogLeaf)), leaf_values(kind, review.id, record, now))


# --- the reviewer's side --------------------------------------------------------------------------------

def _lease(seconds: int | None) -> dt.timedelta:
    settings = current_settings()
    default, maximum = settings.review_lease_seconds, settings.review_max_lease_seconds
    value = default if seconds is None else seconds
    if not 30 <= value <= maximum:
        raise ValidationFailed(f"lease_seconds must be between 30 and {maximum}",
                               details=[{"field": "lease_seconds", "rule": "range", "message": f"30..{maximum}"}])
    return dt.timedelta(seconds=value)


def _claimable(now: dt.datetime) -> Any:
    return or_(
        ReviewRequest.status == ReviewStatus.QUEUED.value,
        and_(ReviewRequest.status == ReviewStatus.CLAIMED.value, ReviewRequest.lease_expires_at <= now),
    )


def identity(value: str) -> str:
    """The comparable form of a person's name or id: NFKC, case-folded, invisible format characters dropped,
    whitespace trimmed and collapsed. " Reviewer-2", "reviewer-2" and "ＲＥＶＩＥＷＥＲ-2" are one identity."""
    text = unicodedata.normalize("NFKC", value)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(unicodedata.normalize("NFKC", text.casefold()).split())


def operated_by(principal: Principal, operator_id: str | None, operator: str | None) -> bool:
    """Whether the reviewer is the official who operated the decision (the one rule every action checks).

    A decision that records its operator's identity (``operator_id``: an API client id, or ``oidc:<subject>``,
    checked at intake) is compared by that identity only, with the reviewer's own recorded identity (the
    principal id of a key or a sign-in link; ``oidc:<subject>`` of an OIDC official): exact, never by name.
    A decision without one (older records, agencies that send only a name) falls back to the free-text
    ``operator`` compared with the reviewer's name and id as normalised identities."""
    if operator_id is not None:
        return operator_id == principal.id
    if operator is None:
        return False
    found = identity(operator)
    return bool(found) and found in {identity(principal.name), identity(principal.id)}


def _not_operator(principal: Principal, decision: Decision) -> None:
    if operated_by(principal, decision.operator_id, decision.operator):
        raise Forbidden("a reviewer may not review a decision they operated", code="reviewer_is_operator")


def claim(principal: Principal, *, review_id: str | None = None, lease_seconds: int | None = None,
          now: dt.datetime | None = None, kind: str = REVIEW) -> ReviewRequest | None:
    """Claim the named case, or the next one due, of `kind` (review or confirmation); None when none waits."""
    now = now or utcnow()
    lease = _lease(lease_seconds)
    with write_transaction() as session:
        query = select(ReviewRequest).join(Decision, Decision.id == ReviewRequest.decision_id)
        query = query.where(ReviewRequest.kind == kind)
        if review_id is not None:
            review = session.execute(query.where(ReviewRequest.id == review_id).with_for_update()).scalar_one_or_none()
            if review is None:
                raise NotFound("The resource does not exist.")
            decision = session.get(Decision, review.decision_id)
            assert decision is not None
            if kind == REVIEW:
                _not_operator(principal, decision)
            if review.status == ReviewStatus.CLAIMED and review.lease_expires_at and review.lease_expires_at > now:
                raise Conflict("another reviewer holds this case", code="review_claimed",
                               details={"lease_expires_at": review.lease_expires_at.isoformat()})
            _transition(review, "claim")
        else:
            review = _next_claimable(session, query, principal, now)
            if review is None:
                return None
        review.status = _transition(review, "claim")
        review.claimed_by = principal.id
        review.lease_expires_at = now + lease
        review.fencing_token += 1
    return review


CLAIM_PAGE = 20


def _next_claimable(session: Any, query: Any, principal: Principal, now: dt.datetime) -> ReviewRequest | None:
    """The next case due that this reviewer did not operate, locked for the claim; cases locked by other claims
    are skipped. A recorded operator_id is compared in the database; the free-text fallback (decisions without
    one) as normalised identities, in Python: the database cannot apply NFKC."""
    due = func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at)
    # The open-cases condition word for word as ix_reviews_claim_order's: the planner then reads that index in
    # order and stops at the first claimable case (no scan and sort of every review ever requested).
    query = query.where(text(f"reviews.{OPEN_REVIEW_SQL}"))
    query = query.add_columns(Decision.operator_id, Decision.operator).where(_claimable(now))
    # The recorded identity is compared in the database: a reviewer's own cases are not even paged through.
    query = query.where(or_(ReviewRequest.kind == CONFIRMATION, Decision.operator_id.is_(None),
                            Decision.operator_id != principal.id))
    query = query.order_by(due, ReviewRequest.requested_at, ReviewRequest.id)
    offset = 0
    while True:
        page = session.execute(query.limit(CLAIM_PAGE).offset(offset)
                               .with_for_update(skip_locked=True, of=ReviewRequest)).all()
        for review, operator_id, operator in page:
            # The officer who operated a held decision may confirm it; only reviews exclude them.
            if review.kind == CONFIRMATION or not operated_by(principal, operator_id, operator):
                return review  # type: ignore[no-any-return]
        if len(page) < CLAIM_PAGE:
            return None
        offset += CLAIM_PAGE


def _held(session: Any, principal: Principal, review_id: str, token: int, now: dt.datetime, action: str,
          kind: str = REVIEW) -> ReviewRequest:
    review = session.execute(select(ReviewRequest).where(ReviewRequest.id == review_id).with_for_update()).scalar_one_or_none()
    if review is None:
        raise NotFound("The resource does not exist.")
    if action not in ("renew", "release") and review.kind != kind:
        raise InvalidTransition(f"this case is a {review.kind}, not a {kind}: "
                                + ("confirm it" if review.kind == CONFIRMATION else "resolve it"),
                                details={"status": review.status, "kind": review.kind})
    if review.kind == REVIEW:
        # The operator can never act on their own case, whatever they hold (a token seen on a page, a lease
        # taken before the operator was known): refused before the lease is looked at.
        decision = session.get(Decision, review.decision_id)
        assert decision is not None
        _not_operator(principal, decision)
    _transition(review, action)
    if review.claimed_by != principal.id or review.fencing_token != token:
        raise StaleLease("this case is held by another claim; claim it again", details={"status": review.status})
    if review.lease_expires_at is None or review.lease_expires_at <= now:
        raise StaleLease("your lease on this case has run out; claim it again", details={"status": review.status})
    return review


def renew(principal: Principal, review_id: str, token: int, *, lease_seconds: int | None = None,
          now: dt.datetime | None = None) -> ReviewRequest:
    now = now or utcnow()
    lease = _lease(lease_seconds)
    with write_transaction() as session:
        review = _held(session, principal, review_id, token, now, "renew")
        review.lease_expires_at = now + lease
    return review


def release(principal: Principal, review_id: str, token: int, *, now: dt.datetime | None = None) -> ReviewRequest:
    now = now or utcnow()
    with write_transaction() as session:
        review = _held(session, principal, review_id, token, now, "release")
        review.status = _transition(review, "release")
        review.claimed_by = None
        review.lease_expires_at = None
    return review


def _refuse_control_in_reasons(reasons: dict[str, str], new_outcome: str | None) -> None:
    refuse_control_characters({f"reasons.{lang}": text for lang, text in sorted(reasons.items())}, multiline=True)
    refuse_control_characters({"new_outcome": new_outcome}, multiline=False)


def resolve(principal: Principal, review_id: str, token: int, *, outcome: str, new_outcome: str | None,
            reasons: dict[str, str], point_of_view_considered: bool, now: dt.datetime | None = None) -> ReviewRequest:
    """Decide the review; its outcome supersedes the decision's effective outcome (the original stays)."""
    now = now or utcnow()
    _refuse_control_in_reasons(reasons, new_outcome)
    if point_of_view_considered is not True:
        raise ValidationFailed("the reviewer must confirm that the person's point of view was considered",
                               details=[{"field": "point_of_view_considered", "rule": "must_be_true", "message": "must be true"}])
    with write_transaction() as session:
        review = _held(session, principal, review_id, token, now, "resolve")
        decision = session.get(Decision, review.decision_id)
        assert decision is not None
        policy = registry.manifest_of(decision.model_id).policy
        effective = _effective_after(outcome, new_outcome, decision.outcome, tuple(policy.outcomes))
        if not (reasons.get(review.language) or "").strip():
            raise ValidationFailed(
                f"give the reasons in the person's language ({review.language})",
                details=[{"field": f"reasons.{review.language}", "rule": "required",
                          "message": "the person is answered in their language"}])
        review.status = _transition(review, "resolve")
        review.outcome, review.new_outcome = outcome, new_outcome if outcome == "changed" else None
        review.reasons = {k: v for k, v in reasons.items() if v.strip()}
        review.point_of_view_considered = True
        review.resolved_by, review.resolved_at = principal.id, now
        review.lease_expires_at, review.finished_at = None, stamp(now)
        previous = decision.effective_outcome
        # Compare-and-set on the decision too: the supersession is append-only history in the audit log.
        session.execute(update(Decision).where(Decision.id == decision.id)
                        .values(effective_outcome=effective, effective_review_id=review.id))
        session.flush()
        notices = _notices(decision, "review_outcome", review, now)
        if decision.confirmation is not None:  # a held decision: its agency hears the final outcome
            notices += _agency_callback(decision, review, "superseded_by_review", now)
        if notices:
            session.execute(insert(table(Notification)), notices)
        _leaf(session, "review:resolved", review, now, decision_id=decision.id, outcome=outcome,
              previous_effective_outcome=previous, effective_outcome=effective, resolved_by=principal.id,
              reasons_commitment=_committer(decision)(review.reasons), point_of_view_considered=True)
    return review


def _agency_callback(decision: Decision, review: ReviewRequest, event: str, now: dt.datetime) -> list[dict[str, Any]]:
    """The outbox row of the signed callback telling the agency a held decision's final outcome (none when
    the agency has no AGENCY_CALLBACK_URLS entry: it polls GET /v1/decisions/{id})."""
    body = db.session.execute(select(ApiClient.body).where(ApiClient.id == decision.client_id)).scalar_one()
    if body not in current_settings().agency_callback_urls:
        return []
    return [{
        "id": new_id("ntf"), "decision_id": decision.id, "kind": AGENCY_OUTCOME, "channel": "webhook",
        "language": decision.language, "status": NotificationStatus.PENDING.value, "attempts": 0,
        "next_attempt_at": now, "created_at": now, "context": {"review_id": review.id, "event": event},
    }]


def confirm(principal: Principal, review_id: str, token: int, *, outcome: str, new_outcome: str | None,
            reasons: dict[str, str], now: dt.datetime | None = None) -> ReviewRequest:
    """An authorised officer confirms a held decision or changes its outcome; the person's notice goes now
    (saying a person decided with the system's help) and the agency is called back."""
    now = now or utcnow()
    _refuse_control_in_reasons(reasons, new_outcome)
    if outcome not in CONFIRM_OUTCOMES:
        raise ValidationFailed(f"outcome must be one of {list(CONFIRM_OUTCOMES)}",
                               details=[{"field": "outcome", "rule": "enum", "message": f"one of {list(CONFIRM_OUTCOMES)}"}])
    with write_transaction() as session:
        review = _held(session, principal, review_id, token, now, "resolve", kind=CONFIRMATION)
        decision = session.get(Decision, review.decision_id)
        assert decision is not None
        policy = registry.manifest_of(decision.model_id).policy
        if outcome == "confirmed":
            effective = _effective_after("upheld", new_outcome, decision.outcome, tuple(policy.outcomes))
        else:
            effective = _effective_after("changed", new_outcome, decision.outcome, tuple(policy.outcomes))
            if not any(v.strip() for v in reasons.values()):
                raise ValidationFailed("give the reasons for changing the system's outcome",
                                       details=[{"field": f"reasons.{decision.language}", "rule": "required",
                                                 "message": "required when the outcome is changed"}])
        review.status = _transition(review, "resolve")
        review.outcome, review.new_outcome = outcome, new_outcome if outcome == "changed" else None
        review.reasons = {k: v for k, v in reasons.items() if v.strip()} or None
        review.resolved_by, review.resolved_at = principal.id, now
        review.lease_expires_at, review.finished_at = None, stamp(now)
        session.execute(update(Decision).where(Decision.id == decision.id)
                        .values(effective_outcome=effective, effective_review_id=review.id, confirmation=outcome))
        session.flush()
        context = {"confirmation_id": review.id}
        rows = [
            {"id": new_id("ntf"), "decision_id": decision.id, "kind": decisions.NOTICE, "channel": channel,
             "language": decision.language, "status": NotificationStatus.PENDING.value, "attempts": 0,
             "next_attempt_at": now, "created_at": now, "context": context}
            for channel in sorted(decisions.contact_of(decision))
        ]
        rows += _agency_callback(decision, review, outcome, now)
        if rows:
            session.execute(insert(table(Notification)), rows)
        _leaf(session, "decision:confirmed", review, now, decision_id=decision.id, outcome=outcome,
              system_outcome=decision.outcome, effective_outcome=effective, confirmed_by=principal.id)
    return review


def _effective_after(outcome: str, new_outcome: str | None, original: str, allowed: tuple[str, ...]) -> str:
    if outcome == "upheld":
        if new_outcome is not None:
            raise ValidationFailed("new_outcome is only for 'changed'",
                                   details=[{"field": "new_outcome", "rule": "not_allowed", "message": "omit it"}])
        return original
    if outcome == "annulled":
        if new_outcome is not None:
            raise ValidationFailed("new_outcome is only for 'changed'",
                                   details=[{"field": "new_outcome", "rule": "not_allowed", "message": "omit it"}])
        return ANNULLED
    if new_outcome not in allowed or new_outcome == original:
        other = [o for o in allowed if o != original]
        raise ValidationFailed(f"a changed outcome must be one of the model's other outcomes: {other}",
                               details=[{"field": "new_outcome", "rule": "outcome", "message": f"one of {other}"}])
    return new_outcome


def rescore(principal: Principal, review_id: str, token: int, *, now: dt.datetime | None = None) -> Decision:
    """Score the person's corrected data with the model version of the original decision.

    The result is a new decision linked to the review (the original stays as it was), with its own
    explanation, notice and audit leaf. It informs the reviewer; the review's resolution decides.
    """
    now = now or utcnow()
    settings = current_settings()
    with write_transaction() as session:  # check the lease before the (slower) scoring
        review = _held(session, principal, review_id, token, now, "rescore")
        if not review.corrected_data:
            raise ValidationFailed("the person sent no corrected data to rescore",
                                   details=[{"field": "corrected_data", "rule": "required", "message": "none was sent"}])
        original = session.get(Decision, review.decision_id)
        assert original is not None
        corrected, inputs = dict(review.corrected_data), dict(original.inputs)
    model = runtime.cache().get(original.model_id)
    row = validate_features(model.manifest, inputs | corrected)
    scored = decisions.score_and_explain(model, row, now)
    new = decisions.NewDecision(
        id=new_id("dec"), model=model, client_id=original.client_id, subject_ref=original.subject_ref,
        contact=decisions.contact_of(original, settings), language=review.language, scored=scored,
        role_of_ai="supports_officer", operator=principal.name, operator_id=principal.id,
        reference=f"rescore:{original.id}", created_at=now,
        audit_extra={"rescore_of": original.id, "review_id": review.id},
    )
    with write_transaction() as session:
        review = _held(session, principal, review_id, token, now, "rescore")  # still ours?
        decisions.add_decision(session, new, settings)
        review.rescore_decision_id = new.id
        _leaf(session, "review:rescored", review, now, decision_id=original.id, rescore_decision_id=new.id,
              corrected=sorted(corrected), score=scored.score, outcome=scored.outcome)
    decision = db.session.get(Decision, new.id)
    assert decision is not None
    return decision


def extend(principal: Principal, review_id: str, token: int, *, until: dt.date, reason: str,
           now: dt.datetime | None = None) -> ReviewRequest:
    """Extend the deadline once, to at most REVIEW_MAX_EXTENSION_MONTHS after the request; notify at once.

    Only the reviewer holding the case (a running lease and its fencing token) extends it, and never the
    decision's own operator.
    """
    now = now or utcnow()
    refuse_control_characters({"reason": reason}, multiline=True)
    with write_transaction() as session:
        review = _held(session, principal, review_id, token, now, "extend")
        if review.extended_until is not None:
            raise Conflict("the deadline was extended once already; it can be extended only once",
                           code="already_extended", details={"extended_until": review.extended_until.isoformat()})
        settings = current_settings()
        zone = settings.zone
        latest = deadlines.add_months(deadlines.local_date(review.requested_at, zone), settings.review_max_extension_months)
        if until > latest:  # checked first: the end of 9999-12-31 is past what a datetime can hold
            raise ValidationFailed(f"the deadline can be extended to {latest.isoformat()} at the latest",
                                   details=[{"field": "until", "rule": "max", "message": f"at most {latest.isoformat()}"}])
        new_due = deadlines.end_of_day(until, zone)
        if new_due <= review.due_at:
            raise ValidationFailed("the new deadline must be later than the current one",
                                   details=[{"field": "until", "rule": "min",
                                             "message": f"after {deadlines.local_date(review.due_at - dt.timedelta(seconds=1), zone)}"}])
        review.extended_until, review.extension_reason = new_due, reason
        review.extended_by, review.extended_at = principal.id, now
        decision = session.get(Decision, review.decision_id)
        assert decision is not None
        session.flush()
        notices = _notices(decision, "review_extended", review, now)
        if notices:
            session.execute(insert(table(Notification)), notices)
        _leaf(session, "review:extended", review, now, extended_until=new_due.isoformat(), reason=reason,
              extended_by=principal.id)
    return review


def _queue_due(status: str | None, overdue: bool | None) -> ColumnElement[Any]:
    """The effective due date as the index serving these filters spells it: every case of a kind is listed on
    ix_reviews_queue_order (LISTED_DUE, the same value); a status or the overdue cases on ix_reviews_status_queue_order
    or the open cases' ix_reviews_claim_order. A filter or cursor on the other spelling would not bound the range."""
    if status is None and not overdue:
        return LISTED_DUE
    return func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at)


def _queue(*, status: str | None, model: str | None, due_before: dt.datetime | None, overdue: bool | None,
           now: dt.datetime, kind: str) -> Select[ReviewRequest]:
    """The cases of `kind` matching the filters, unordered. Each status filter has an index in the queue's order
    (0026): all cases of a kind, one status of a kind, and the open ones (the claim order, a partial index whose
    condition is repeated word for word so both planners may use it)."""
    due = _queue_due(status, overdue)
    query = select(ReviewRequest).where(ReviewRequest.kind == kind)
    if model:  # the join only when filtering by model: a join the planners cannot drop costs a lookup per case
        query = query.join(Decision, Decision.id == ReviewRequest.decision_id).where(Decision.model_name == model)
    if status == "open" or overdue:  # queued or claimed: the cases still waiting for a decision
        query = query.where(text(f"reviews.{OPEN_REVIEW_SQL}"))
    if status and status != "open":
        query = query.where(ReviewRequest.status == status)
    if due_before:
        query = query.where(due < due_before)
    if overdue:
        query = query.where(due < now)
    elif overdue is False:
        query = query.where(~and_(due < now, ReviewRequest.status.in_(OPEN_REVIEW)))
    return query


def list_reviews(*, status: str | None = None, model: str | None = None, due_before: dt.datetime | None = None,
                 overdue: bool | None = None, limit: int = 50, offset: int = 0,
                 now: dt.datetime | None = None, kind: str = REVIEW,
                 after: tuple[dt.datetime, dt.datetime, str] | None = None) -> tuple[list[ReviewRequest], Total]:
    """The queue of `kind`, ordered by (effective) due date, with its size for paging (exact up to
    LIST_COUNT_CAP, a lower bound beyond).

    `after` is the sort key (due, requested_at, id) of the previous page's last case (keyset paging)."""
    now = now or utcnow()
    query = _queue(status=status, model=model, due_before=due_before, overdue=overdue, now=now, kind=kind)
    total = bounded_count(query, current_settings().list_count_cap)
    due = _queue_due(status, overdue)
    if after is not None:
        a_due, a_requested, a_id = after
        # `due >= a_due` bounds the index range, so the page starts at the cursor instead of reading (and
        # dropping) every earlier case; the OR then drops the cursor's own due date's earlier cases.
        query = query.where(due >= a_due, or_(due > a_due, and_(due == a_due, or_(
            ReviewRequest.requested_at > a_requested,
            and_(ReviewRequest.requested_at == a_requested, ReviewRequest.id > a_id)))))
    rows = db.session.execute(query.order_by(due, ReviewRequest.requested_at, ReviewRequest.id).limit(limit).offset(offset)).scalars()
    return list(rows), total


def queue_cursor(review: ReviewRequest) -> str:
    """The `after=` cursor of a case: its place in the queue's order (effective due date, request time, id)."""
    return encode_cursor(review.extended_until or review.due_at, review.requested_at, review.id)


def queue_after(cursor: str | None) -> tuple[dt.datetime, dt.datetime, str] | None:
    """The sort key in a queue cursor; None for none, or for anything that is not a queue cursor."""
    if not cursor:
        return None
    found = decode_cursor(cursor, dt.datetime, dt.datetime, str)
    return (found[0], found[1], found[2]) if found is not None else None


def count_reviews(*, status: str | None = None, kind: str = REVIEW) -> Total:
    """How many cases of `kind` have `status` ("open": queued or claimed), exact up to LIST_COUNT_CAP."""
    query = _queue(status=status, model=None, due_before=None, overdue=None, now=utcnow(), kind=kind)
    return bounded_count(query, current_settings().list_count_cap)


def overdue_count(now: dt.datetime | None = None) -> Total:
    """How many open reviews are past their due date, exact up to LIST_COUNT_CAP (a range of the claim index)."""
    query = _queue(status=None, model=None, due_before=None, overdue=True, now=now or utcnow(), kind=REVIEW)
    return bounded_count(query, current_settings().list_count_cap)


def review_stats(now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Reviews per model: how many are in each state, and how many open ones are past their due date."""
    now = now or utcnow()
    due = func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at)
    late = and_(due < now, ReviewRequest.status.in_(OPEN_REVIEW))
    rows = db.session.execute(
        select(Decision.model_name, ReviewRequest.status, func.count(), func.sum(case((late, 1), else_=0)))
        .join(Decision, Decision.id == ReviewRequest.decision_id)
        .where(ReviewRequest.kind == REVIEW)
        .group_by(Decision.model_name, ReviewRequest.status)
    ).all()
    stats: dict[str, dict[str, int]] = {}
    for model, status, count, overdue in rows:
        counts = stats.setdefault(model, {s.value: 0 for s in ReviewStatus} | {"overdue": 0})
        counts[status] = int(count)
        counts["overdue"] += int(overdue or 0)
    return stats


def review_metrics(now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """What /metrics shows per model: review requests by status, and the open ones past their due date.

    Without reading the history: requests and their resolutions or withdrawals are counted once by the rollups
    (gateway.rollups); open = requested - resolved - withdrawn, of which the claimed ones (few: each holds a lease)
    and the overdue ones (past the deadline: each one is a breach) are read through their indexes.
    """
    now = now or utcnow()
    stats: dict[str, dict[str, int]] = {}

    def row(model: str) -> dict[str, int]:
        return stats.setdefault(model, {s.value: 0 for s in ReviewStatus} | {"overdue": 0})

    for stream in (rollups.REVIEWS_REQUESTED, rollups.REVIEWS_FINISHED):
        for (model, key), value in rollups.counts(stream, now).items():
            row(model)[key if key != "requested" else ReviewStatus.QUEUED.value] += value
    due = func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at)
    claimed = db.session.execute(select(ReviewRequest.decision_id).where(
        text(f"reviews.{CLAIMED_SQL}"), ReviewRequest.kind == REVIEW)).scalars().all()
    late = db.session.execute(select(ReviewRequest.decision_id).where(
        ReviewRequest.kind == REVIEW, due < now, text(f"reviews.{OPEN_REVIEW_SQL}"))).scalars().all()
    names = rollups.model_names([*claimed, *late])
    for decision_id in claimed:
        row(names[decision_id])[ReviewStatus.CLAIMED.value] += 1
    for counts in stats.values():  # what was requested and is neither finished nor claimed is queued
        counts[ReviewStatus.QUEUED.value] -= (counts[ReviewStatus.RESOLVED.value] + counts[ReviewStatus.WITHDRAWN.value]
                                             + counts[ReviewStatus.CLAIMED.value])
    for decision_id in late:
        row(names[decision_id])["overdue"] += 1
    return stats


def get_review(review_id: str) -> ReviewRequest:
    review = db.session.get(ReviewRequest, review_id)
    if review is None:
        raise NotFound("The resource does not exist.")
    return review
