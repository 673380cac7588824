"""Explanations of the main influencing factors: computed once, frozen, served as stored.

Exact explainers (TreeSHAP, LinearSHAP) run before the decision's write transaction and their result
is inserted in it. Other models get a pending row in the same transaction: that row is the job of the
``explain`` task kind (gateway/jobs/explain.py), which computes it after commit. Serving an explanation never recomputes SHAP: the stored attributions and
selection are rendered (gateway.presenters.explanation), deterministically, in the asked language.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from explainers import ExactExplainer, ExplainerError
from explainers.base import RawExplanation
from gateway import links
from gateway.access import visible_decision  # the access rules live in gateway.access
from gateway.auth import Caller
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.manifest import Manifest
from gateway.models import Decision, Explanation, ExplanationStatus, ScoringModel
from gateway.retention import check_not_purged
from gateway.runtime import ExplanationTools
from gateway.settings import current_settings

# How far an exact explanation may be from the model's own score (probability space).
SCORE_TOLERANCE = 1e-6


class ExplanationPending(Exception):
    """The explanation is being computed; ask again shortly (HTTP 202 with Retry-After)."""

    retry_after = 2


class ExplanationUnavailable(GatewayError):
    """No explanation could be computed for this decision."""

    status_code, code = 503, "explanation_unavailable"


class ExplanationFailed(GatewayError):
    """The explanation job gave up on this decision (a known state, not an outage: no Retry-After)."""

    status_code, code = 409, "explanation_failed"


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _fields(obj: Any) -> dict[str, Any]:
    names = _FIELD_NAMES.get(type(obj))
    if names is None:  # dataclasses.fields() rebuilds its tuple on every call: a batch calls this 6 times a row
        names = _FIELD_NAMES[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    return {name: getattr(obj, name) for name in names}


def _selection_json(selection: Any) -> dict[str, Any]:
    """The selection as JSON values (what dataclasses.asdict gives, without its deep copies: a batch makes
    thousands of these a second)."""
    data = _fields(selection)
    factors = []
    for factor in selection.factors:
        item = _fields(factor)
        if item["band"] is not None:
            item["band"] = list(item["band"])
        factors.append(item)
    data["factors"] = factors
    if selection.confidential is not None:
        data["confidential"] = _fields(selection.confidential)
    return data


def computed_values(tools: ExplanationTools, raw: RawExplanation, row: dict[str, Any], score: float) -> dict[str, Any]:
    """Column values of a ready explanation; refuses one that does not add up or match the score."""
    # A value in the model's units (regression) is held to the same tolerance relative to its size.
    tolerance = SCORE_TOLERANCE * max(1.0, abs(score)) if raw.output_space == "value" else SCORE_TOLERANCE
    if tools.exact and raw.additivity_error > tolerance:
        raise ExplainerError(f"additivity error {raw.additivity_error:.3g} exceeds {tolerance:.3g}")
    if raw.output_space in ("probability", "value") and abs(raw.output - score) > tolerance:
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
    """The explanation row to insert with a decision: ready (exact) or pending (the explain job's row)."""
    return values_for_decisions(tools, [row], [score], now)[0]


def values_for_decisions(tools: ExplanationTools | None, rows: list[dict[str, Any]], scores: list[float],
                         now: dt.datetime, *, margins: Any = None) -> list[dict[str, Any]]:
    """The explanation rows of many decisions, explained with one call on their matrix (exact explainers).

    `margins`: the rows' raw margins when scoring computed them (binary boosting), given with the scores."""
    base: dict[str, Any] = {"attempts": 0, "created_at": now}
    if tools is None:  # only versions registered before registration required background data
        raise ExplainerError("the model version has no background data to explain against; "
                             "register a version with background data")
    if not tools.exact:
        return [base | {"status": ExplanationStatus.PENDING.value, "next_attempt_at": now,
                        "background_sha256": tools.background_sha256} for _ in rows]
    explainer = tools.explainer
    # Records: the explainer's verified fast path, no DataFrame. The scores (and margins) are the model's own
    # outputs: the exact explainer checks additivity against them instead of predicting again.
    raws = (explainer.explain(rows, outputs=scores, margins=margins) if isinstance(explainer, ExactExplainer)
            else explainer.explain(rows))
    return [base | computed_values(tools, raw, row, score) | {"computed_at": now}
            for raw, row, score in zip(raws, rows, scores, strict=True)]


def audit_digest(values: dict[str, Any], commit: Callable[[Any], str]) -> dict[str, Any] | None:
    """What of an explanation goes into the decision's audit record (None when it comes later).

    The attributions are the person's (they follow from their inputs): the record holds their commitment
    (`commit`, keyed by the decision's data key), never the values, so the purge leaves the leaf valid.
    """
    if values["status"] != ExplanationStatus.READY.value:
        return None
    digest = {k: values[k] for k in ("method", "output_space", "explainer_version", "shap_version",
                                      "background_sha256", "random_state", "base_value")}
    return digest | {"attributions_commitment": commit(values["attributions"])}


# --- reading -----------------------------------------------------------------------------------------

def stored(principal: Caller, decision_id: str) -> tuple[Decision, Explanation, Manifest]:
    decision = visible_decision(principal, decision_id)
    check_not_purged(decision)  # the values were the person's: deleted under the retention rule
    explanation = db.session.get(Explanation, decision_id)
    if explanation is None or explanation.status == ExplanationStatus.UNAVAILABLE:
        raise ExplanationUnavailable("no explanation exists for this decision: "
                                     + (explanation.last_error if explanation and explanation.last_error else "none was recorded"))
    if explanation.status == ExplanationStatus.PENDING:
        raise ExplanationPending()
    manifest_data = db.session.execute(select(ScoringModel.manifest).where(ScoringModel.id == decision.model_id)).scalar_one()
    manifest = Manifest.model_validate(manifest_data)
    if explanation.status == ExplanationStatus.FAILED:
        raise failed(decision, explanation, manifest)
    return decision, explanation, manifest


def failed(decision: Decision, explanation: Explanation, manifest: Manifest) -> ExplanationFailed:
    """What the person is told when the explanation job gave up: what happened, whom to contact, their review."""
    owner = manifest.notice.owner.get(decision.language)
    review = links.api_links(current_settings().base_url, decision.id)["review"]
    return ExplanationFailed(
        f"The explanation of this decision could not be computed ({explanation.last_error}). "
        f"Contact the system's owner, {owner}, at {manifest.notice.contact}. "
        f"You can also request a human review of the decision: {review}",
        details={"reason": explanation.last_error, "contact": manifest.notice.contact, "owner": owner,
                 "review": review, "attempts": explanation.attempts},
    )


def state(explanation: Explanation | None) -> dict[str, Any]:
    """The explanation's status for the decision view, and when it failed (or is being retried), why."""
    if explanation is None:
        return {"status": ExplanationStatus.UNAVAILABLE.value, "reason": "none was recorded", "attempts": 0}
    shown = explanation.status in (ExplanationStatus.FAILED, ExplanationStatus.UNAVAILABLE) or explanation.attempts
    return {"status": explanation.status, "reason": explanation.last_error if shown else None,
            "attempts": explanation.attempts}


def language_for(decision: Decision, lang: str | None, offered: tuple[str, ...]) -> str:
    return lang if lang in offered else decision.language
