"""A decision as its readers see it: outcome, effective outcome, notices, reviews, links."""

from __future__ import annotations

from typing import Any

from gateway import access, decisions, explanations, links, recourse, retention
from gateway.auth import Caller, capability_token
from gateway.ids import isoformat, isoformat_or_none
from gateway.models import Notification
from gateway.presenters.review import summary
from gateway.schemas import DecisionOut
from gateway.settings import current_settings


def notification_status(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "kind": n.kind,
        "channel": n.channel,
        "status": n.status,
        "attempts": n.attempts,
        "created_at": isoformat(n.created_at),
        "delivered_at": isoformat_or_none(n.delivered_at),
        # When the next attempt is due (pending / retrying); None once delivered or dead.
        "next_attempt_at": isoformat(n.next_attempt_at) if n.status in ("pending", "retrying") else None,
        "last_error": n.last_error,  # why the last attempt failed (never contains the address)
    }


def decision_view(caller: Caller, decision_id: str) -> DecisionOut:
    """Return a decision to a caller who sees it (gateway.access); anyone else gets NotFound."""
    record = decisions.decision_record(caller, decision_id)
    decision = record.decision
    token = capability_token(decision.id, decision.subject_ref) if access.shows_citizen_link(caller, decision) else None
    return DecisionOut.model_validate({
        "decision_id": decision.id,
        "model": {"name": decision.model_name, "version": decision.model_version, "sha256": decision.artifact_sha256},
        "score": decision.score,
        "outcome": decision.outcome,
        "adverse": decision.adverse,
        "effective_outcome": decision.effective_outcome,
        "role_of_ai": decision.role_of_ai,
        "language": decision.language,
        "inputs": decision.inputs,
        "operator": decision.operator,
        "operator_id": decision.operator_id,
        "reference": decision.reference,
        "created_at": isoformat(decision.created_at),
        "notifications": [notification_status(n) for n in record.notifications],
        # pending / ready / failed, and when it failed, why (a dead explanation job is never silent)
        "explanation": explanations.state(record.explanation),
        "recourse": recourse.state(decision, record.recourse),  # what the person could change (adverse only)
        "effective_outcome_set_by": decision.effective_review_id,
        "confirmation": decision.confirmation,
        "reviews": [summary(r) for r in record.reviews],
        "links": links.decision_links(current_settings().base_url, decision.id, token),
        "retention": retention.state(decision, current_settings()),
    })
