"""A review as the person, the agency and the queue see it, and the reviewer's whole case."""

from __future__ import annotations

import datetime as dt

from gateway import registry, reviews
from gateway.extensions import db
from gateway.ids import isoformat_or_none, utcnow
from gateway.models import OPEN_REVIEW, Decision, Explanation, ReviewRequest
from gateway.presenters.explanation import render
from gateway.schemas import Rescored, ReviewCase, ReviewSummary


def summary(review: ReviewRequest, now: dt.datetime | None = None) -> ReviewSummary:
    """What the agency, the person and the queue see of a review."""
    now = now or utcnow()
    due = reviews.effective_due(review)
    return ReviewSummary.model_validate({
        "review_id": review.id,
        "decision_id": review.decision_id,
        "status": review.status,
        "contest_grounds": review.contest_grounds,
        "requested_at": isoformat_or_none(review.requested_at),
        "due_at": isoformat_or_none(review.due_at),
        "extended_until": isoformat_or_none(review.extended_until),
        "extension_reason": review.extension_reason,
        "effective_due_at": isoformat_or_none(due),
        "overdue": review.status in OPEN_REVIEW and due < now,
        "outcome": review.outcome,
        "new_outcome": review.new_outcome,
        "reasons": review.reasons,
        "point_of_view_considered": review.point_of_view_considered,
        "resolved_by": review.resolved_by,
        "resolved_at": isoformat_or_none(review.resolved_at),
        "rescore_decision_id": review.rescore_decision_id,
        "late": bool(review.late),
        "kind": review.kind,
    })


def case_view(review: ReviewRequest, lang: str = "ru") -> ReviewCase:
    """Everything a reviewer needs to decide: inputs, score, outcome, explanation, the person's view, notice."""
    decision = db.session.get(Decision, review.decision_id)
    assert decision is not None
    manifest = registry.manifest_of(decision.model_id)
    explanation = db.session.get(Explanation, decision.id)
    rendered = None
    # Once purged under the retention rule the explanation's values are gone: the case shows none.
    if explanation is not None and explanation.status == "ready" and decision.purged_at is None:
        rendered = render(decision, explanation, manifest, lang) | {"attributions": explanation.attributions}
    return ReviewCase.model_validate(summary(review).model_dump() | {
        "fencing_token": review.fencing_token,
        "lease_expires_at": isoformat_or_none(review.lease_expires_at),
        "claimed_by": review.claimed_by,
        "point_of_view": review.point_of_view,
        "corrected_data": review.corrected_data,
        "language": review.language,
        "decision": {
            "decision_id": decision.id,
            "model": {"name": decision.model_name, "version": decision.model_version, "sha256": decision.artifact_sha256},
            "inputs": decision.inputs,
            "score": decision.score,
            "outcome": decision.outcome,
            "effective_outcome": decision.effective_outcome,
            "adverse": decision.adverse,
            "role_of_ai": decision.role_of_ai,
            "operator": decision.operator,
            "operator_id": decision.operator_id,
            "created_at": isoformat_or_none(decision.created_at),
        },
        "explanation": rendered,
        "notice": manifest.notice.model_dump(mode="json"),
        "outcomes": list(manifest.policy.outcomes),
    })


def rescore_view(review_id: str, decision: Decision) -> Rescored:
    explanation = db.session.get(Explanation, decision.id)
    rendered = None
    if explanation is not None and explanation.status == "ready" and decision.purged_at is None:
        rendered = render(decision, explanation, registry.manifest_of(decision.model_id), decision.language)
    return Rescored.model_validate({"review_id": review_id, "decision_id": decision.id, "rescore_of": (decision.reference or "")[len("rescore:"):],
            "score": decision.score, "outcome": decision.outcome, "adverse": decision.adverse, "explanation": rendered})
