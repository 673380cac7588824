"""Explanations of the main influencing factors: computed once, frozen, served as stored.

Exact explainers (TreeSHAP, LinearSHAP) run before the decision's write transaction and their result
is inserted in it. Other models get a pending row in the same transaction, computed after commit by
the background worker. Serving an explanation never recomputes SHAP: the stored attributions and
selection are rendered (gateway.presenters.explanation), deterministically, in the asked language.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import select, update

from explainers import ExplainerError
from explainers.base import RawExplanation
from gateway import runtime
from gateway.access import visible_decision  # the access rules live in gateway.access
from gateway.auth import Caller
from gateway.db import rowcount, write_transaction
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.features import to_frame
from gateway.ids import utcnow
from gateway.manifest import Manifest
from gateway.models import Decision, Explanation, ExplanationStatus, ScoringModel
from gateway.runtime import ExplanationTools

# How far an exact explanation may be from the model's own score (probability space).
SCORE_TOLERANCE = 1e-6


class ExplanationPending(Exception):
    """The explanation is being computed; ask again shortly (HTTP 202 with Retry-After)."""

    retry_after = 2


class ExplanationUnavailable(GatewayError):
    """No explanation could be computed for this decision."""

    status_code, code = 503, "explanation_unavailable"


def _selection_json(selection: Any) -> dict[str, Any]:
    data: dict[str, Any] = dataclasses.asdict(selection)
    for factor in data["factors"]:
        if factor["band"] is not None:
            factor["band"] = list(factor["band"])
    return data


def computed_values(tools: ExplanationTools, raw: RawExplanation, row: dict[str, Any], score: float) -> dict[str, Any]:
    """Column values of a ready explanation; refuses one that does not add up or match the score."""
    if tools.exact and raw.additivity_error > SCORE_TOLERANCE:
        raise ExplainerError(f"additivity error {raw.additivity_error:.3g} exceeds {SCORE_TOLERANCE}")
    if raw.output_space == "probability" and abs(raw.output - score) > SCORE_TOLERANCE:
        raise ExplainerError(f"the explained output {raw.output!r} differs from the score {score!r}")
    selection = tools.selector.select(raw, row)
    return {
        "status": ExplanationStatus.READY.value,
        "method": raw.method,
        "output_space": raw.output_space,
        "explainer_version": raw.explainer_version,
        "shap_version": raw.shap_version,
        "background_sha256": tools.background_sha256,
        "random_state": raw.random_state,
        "base_value": raw.base_value,
        "output": raw.output,
        "attributions": dict(raw.attributions),
        "selection": _selection_json(selection),
        "additivity_error": raw.additivity_error,
    }


def values_for_decision(tools: ExplanationTools | None, row: dict[str, Any], score: float,
                        now: dt.datetime) -> dict[str, Any]:
    """The explanation row to insert with a decision: ready (exact), pending (job) or unavailable."""
    base: dict[str, Any] = {"attempts": 0, "created_at": now}
    if tools is None:
        return base | {"status": ExplanationStatus.UNAVAILABLE.value,
                       "last_error": "the model was registered without background data"}
    if not tools.exact:
        return base | {"status": ExplanationStatus.PENDING.value, "next_attempt_at": now,
                       "background_sha256": tools.background_sha256}
    raw = tools.explainer.explain([row])[0]  # records: the explainer's verified fast path, no DataFrame
    return base | computed_values(tools, raw, row, score) | {"computed_at": now}


def audit_digest(values: dict[str, Any]) -> dict[str, Any] | None:
    """What of an explanation goes into the decision's audit record (None when it comes later)."""
    if values["status"] != ExplanationStatus.READY.value:
        return None
    return {k: values[k] for k in ("method", "output_space", "explainer_version", "shap_version",
                                    "background_sha256", "random_state", "base_value", "attributions")}


# --- the job for model-agnostic explanations --------------------------------------------------------

def run_pending(limit: int = 20, *, now: dt.datetime | None = None) -> int:
    """Compute up to `limit` pending explanations (after their decisions committed); return how many."""
    now = now or utcnow()
    pending = db.session.execute(
        select(Explanation.decision_id)
        .where(Explanation.status == ExplanationStatus.PENDING.value, Explanation.next_attempt_at <= now)
        .order_by(Explanation.next_attempt_at).limit(limit)
    ).scalars().all()
    done = 0
    for decision_id in pending:
        decision = db.session.get(Decision, decision_id)
        assert decision is not None
        model = runtime.cache().get(decision.model_id)
        try:
            if model.explanation is None:
                raise ExplainerError("the model has no explainer")
            frame = to_frame(model.manifest, [decision.inputs])
            raw = model.explanation.explainer.explain(frame)[0]
            values = computed_values(model.explanation, raw, decision.inputs, decision.score) | {"computed_at": now}
        except ExplainerError as exc:
            values = {"status": ExplanationStatus.FAILED.value, "last_error": str(exc)}
        db.session.commit()
        with write_transaction() as session:
            # Only a still-pending row is written: a second worker that got here first wins.
            result = session.execute(
                update(Explanation)
                .where(Explanation.decision_id == decision_id, Explanation.status == ExplanationStatus.PENDING.value)
                .values(**values, attempts=Explanation.attempts + 1, next_attempt_at=None)
            )
            done += rowcount(result)
    return done


# --- reading -----------------------------------------------------------------------------------------

def stored(principal: Caller, decision_id: str) -> tuple[Decision, Explanation, Manifest]:
    decision = visible_decision(principal, decision_id)
    explanation = db.session.get(Explanation, decision_id)
    if explanation is None or explanation.status == ExplanationStatus.UNAVAILABLE:
        raise ExplanationUnavailable("no explanation exists for this decision: "
                                     + (explanation.last_error if explanation and explanation.last_error else "none was recorded"))
    if explanation.status == ExplanationStatus.PENDING:
        raise ExplanationPending()
    if explanation.status == ExplanationStatus.FAILED:
        raise ExplanationUnavailable(f"the explanation could not be computed: {explanation.last_error}")
    manifest_data = db.session.execute(select(ScoringModel.manifest).where(ScoringModel.id == decision.model_id)).scalar_one()
    return decision, explanation, Manifest.model_validate(manifest_data)


def language_for(decision: Decision, lang: str | None, offered: tuple[str, ...]) -> str:
    return lang if lang in offered else decision.language
