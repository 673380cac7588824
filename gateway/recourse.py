"""Recourse: what the person could change to get the other outcome, computed once and frozen.

Only adverse decisions get recourse. The search (``explainers.recourse.RecourseSearch``) proposes changes to
the features the manifest offers (``Feature.offered_for_recourse``: mutable, and never sensitive, withheld or
monitored-only), within their declared range or categories, in their allowed direction, on their declared
step; the cost of a change is |change| / scale (a category change costs 1). Every option is then verified
here, by scoring the changed row with the loaded model version that made the decision (the same scoring
function as the decision's own score) and applying its policy: an option that does not lead to the other
outcome, or whose values the manifest would refuse, is never stored.

When: for a cheap model (one explained exactly: trees and linear models, where scoring a few thousand rows
costs milliseconds) the options are computed before the decision's write transaction and inserted in it,
like an exact explanation; otherwise the transaction inserts a pending row, the job of the ``recourse`` task
kind (gateway/jobs/recourse.py), which computes it after commit. Either way the row is written once and its
digest (a commitment to the record keyed by the decision's data key) goes into an audit leaf: ``decision:recorded`` (with the decision) or
``decision:recourse:recorded`` (by the job). Serving renders the stored row only.

What an option reveals about withheld features: see ``explainers/recourse.py`` - a statement about the
model's output at one point next to the person's own, naming no withheld feature and publishing no
attribution; withheld features are never changed.

The table (``recourse``) holds personal data: the person's own values of the changed features; the retention
purge clears its options with the decision's other personal data (gateway.retention.PERSONAL_DATA).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from explainers import MutableFeature, RecourseSearch
from explainers import __version__ as explainers_version
from explainers.factors import band_of
from gateway import links
from gateway.access import visible_decision
from gateway.auth import Caller
from gateway.errors import GatewayError, ValidationFailed
from gateway.extensions import db
from gateway.features import validate_features
from gateway.manifest import Feature, Manifest, Policy
from gateway.models import Decision, Recourse, RecourseStatus, ScoringModel
from gateway.retention import check_not_purged
from gateway.runtime import LoadedModel
from gateway.settings import current_settings

log = logging.getLogger("gateway.recourse")

METHOD = "verified_grid_search"
MAX_OPTIONS = 3  # diverse options shown to the person (each changes another set of features)
MAX_STEPS = 20  # single-feature changes: up to this many steps each way the direction allows
PAIR_STEPS = 6  # pairs of features, when single changes give fewer than MAX_OPTIONS: a coarser grid


class RecoursePending(Exception):
    """The options are being computed; ask again shortly (HTTP 202 with Retry-After)."""

    retry_after = 2


class RecourseFailed(GatewayError):
    """The recourse job gave up on this decision (a known state, not an outage: no Retry-After)."""

    status_code, code = 409, "recourse_failed"


def cheap(model: LoadedModel) -> bool:
    """Whether recourse is computed with the decision: the model is explained exactly (trees, linear)."""
    return model.explanation is not None and model.explanation.exact


def offered(manifest: Manifest) -> list[Feature]:
    """The features recourse may propose to change, in schema order."""
    return [f for f in manifest.features if f.offered_for_recourse()]


def _spec(feature: Feature) -> MutableFeature:
    if feature.type == "number":
        return MutableFeature(feature.name, "number", feature.min, feature.max, step=feature.recourse_step(),
                              scale=feature.scale, direction=feature.direction)
    if feature.type == "category":
        return MutableFeature(feature.name, "category", categories=tuple(feature.categories or ()))
    return MutableFeature(feature.name, "boolean")


def binary_policy(manifest: Manifest) -> Policy | None:
    """The binary policy recourse searches across, or None: the search flips a score across one threshold, so
    multi-class and regression decisions get no options yet (the row says why, `policy_kind_unsupported`)."""
    return manifest.policy if isinstance(manifest.policy, Policy) else None


def parameters(model: LoadedModel) -> dict[str, Any]:
    """The search as it runs for this model version (stored with the options, part of their digest)."""
    policy = binary_policy(model.manifest)
    if policy is None:
        return {"policy_kind": model.manifest.policy.kind, "explainers_version": explainers_version}
    features = []
    for f in offered(model.manifest):
        entry: dict[str, Any] = {"name": f.name, "type": f.type}
        if f.type == "number":
            entry |= {"min": f.min, "max": f.max, "step": f.recourse_step(), "scale": f.scale or f.recourse_step(),
                      "direction": f.direction}
        features.append(entry)
    return {"features": features, "max_options": MAX_OPTIONS, "max_steps": MAX_STEPS, "pair_steps": PAIR_STEPS,
            "threshold": policy.threshold, "favourable": _favourable(policy),
            "explainers_version": explainers_version}


def _favourable(policy: Policy) -> str:
    return "below" if policy.adverse_outcome == policy.outcome_above else "above"


def _value(feature: Feature, value: Any) -> Any:
    """A proposed value as the manifest takes it: whole numbers for integer features."""
    if feature.type == "number":
        number = float(value)
        return int(number) if feature.integer else number
    return value


def _band_edges(model: LoadedModel, feature: Feature) -> list[float] | None:
    if feature.disclosure != "band":
        return None
    if feature.bands is not None:
        return list(feature.bands)
    fitted = getattr(model.explanation.selector, "band_edges_", {}) if model.explanation else {}
    edges = fitted.get(feature.name)
    return list(edges) if edges is not None else None


def compute(model: LoadedModel, row: dict[str, Any], score: float | None = None) -> dict[str, Any]:
    """Search and verify the options of an adverse row; return the ready row's column values (no times).

    The search scores its candidates as variants of the row (`LoadedModel.score_variants`: each changed value
    transformed once, the scores bit for bit those of the whole rows); the options found are then verified as
    whole rows. `score`: the row's score by this model version when the caller has it (not computed again)."""
    manifest = model.manifest
    features = offered(manifest)
    params = parameters(model)
    policy = binary_policy(manifest)
    if policy is None:
        return _ready(params, [], "policy_kind_unsupported")
    if not features:
        return _ready(params, [], "no_mutable_features")
    search = RecourseSearch(model.score_variants, [_spec(f) for f in features], threshold=policy.threshold,
                            favourable=_favourable(policy),  # type: ignore[arg-type]
                            max_options=MAX_OPTIONS, max_steps=MAX_STEPS, pair_steps=PAIR_STEPS, variants=True).fit()
    candidates: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
    for found in search.explain(row, score):
        proposed = {name: _value(manifest.feature(name), v) for name, v in found.changes.items()}
        changed = row | proposed
        try:
            validate_features(manifest, changed)
        except ValidationFailed:
            log.error("recourse option %s left the declared values; dropped", sorted(proposed))
            continue
        candidates.append((found, proposed, changed))
    # Every option verified with the model version that decided, in one scoring call.
    verified = [float(s) for s in model.score([changed for _, _, changed in candidates])] if candidates else []
    options = []
    for (found, proposed, _), score in zip(candidates, verified, strict=True):
        if policy.decide(score)[1]:
            log.error("recourse option %s does not change the outcome when re-scored; dropped", sorted(proposed))
            continue
        changes: dict[str, Any] = {}
        for name in sorted(proposed):
            feature = manifest.feature(name)
            change: dict[str, Any] = {"from": row[name], "to": proposed[name]}
            edges = _band_edges(model, feature)
            if edges is not None:
                change["from_band"] = list(band_of(row[name], edges))
            changes[name] = change
        options.append({"changes": changes, "cost": round(found.cost, 9), "score": score})
    return _ready(params, options, None if options else "none_found")


def _ready(params: dict[str, Any], options: list[dict[str, Any]], reason: str | None) -> dict[str, Any]:
    return {"status": RecourseStatus.READY.value, "method": METHOD, "options": options, "reason": reason,
            "parameters": params, "last_error": None}


def digest(decision_id: str, values: dict[str, Any], commit: Callable[[Any], str]) -> str:
    """The commitment to a ready row's record, keyed by the decision's data key (gateway.contacts): what the
    audit leaf pins. The options hold the person's values, so never a plain hash (it could be tested against
    guesses); once the purge destroys the key, the leaf and its proofs stay valid and reveal nothing."""
    return commit({"decision_id": decision_id, **{k: values[k] for k in ("method", "options", "reason", "parameters")}})


def values_for_decision(model: LoadedModel, row: dict[str, Any], adverse: bool, now: dt.datetime,
                        score: float | None = None) -> dict[str, Any] | None:
    """The recourse to insert with a decision (see `row_values`): None (not adverse), ready (a cheap model,
    computed now, before the write transaction) or pending (the recourse job's row)."""
    pending = pending_for_decision(adverse, now)
    if pending is None:
        return None
    base: dict[str, Any] = {"attempts": 0, "created_at": now}
    if not cheap(model):
        return pending
    try:
        values = compute(model, row, score)
    except Exception as exc:  # noqa: BLE001 - recourse is not part of the decision: the job retries it
        log.exception("recourse for a decision of %s %s failed at decision time; left to the recourse job",
                      model.name, model.version)
        return pending | {"last_error": f"{type(exc).__name__}: {exc}"[:1000]}
    return base | values | {"computed_at": now}


def pending_for_decision(adverse: bool, now: dt.datetime) -> dict[str, Any] | None:
    """The recourse row of a decision whose options the recourse job searches after commit (None: not adverse)."""
    if not adverse:
        return None
    return {"attempts": 0, "created_at": now, "status": RecourseStatus.PENDING.value, "next_attempt_at": now}


def row_values(decision_id: str, values: dict[str, Any], commit: Callable[[Any], str]) -> dict[str, Any]:
    """The row to insert for `decision_id`: a ready one gets its digest (what the audit leaf pins)."""
    found = values | {"decision_id": decision_id}
    if values["status"] == RecourseStatus.READY.value:
        found["digest"] = digest(decision_id, values, commit)
    return found


def audit_digest(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """What of the recourse goes into the decision's audit record (None when there is none yet)."""
    if values is None or values["status"] != RecourseStatus.READY.value:
        return None
    return {"method": values["method"], "digest": values["digest"], "options": len(values["options"])}


def state(decision: Decision, row: Recourse | None) -> dict[str, Any]:
    """The recourse's status for the decision view: not_adverse, unavailable, pending, ready (with the
    number of options), failed (and why the last attempt failed) or purged."""
    if not decision.adverse:
        return {"status": "not_adverse", "options": 0, "reason": None, "attempts": 0}
    if row is None:
        return {"status": "unavailable", "options": 0, "reason": "none was computed", "attempts": 0}
    if decision.purged_at is not None:
        return {"status": "purged", "options": 0, "reason": "deleted under the retention rule", "attempts": row.attempts}
    return {"status": row.status, "options": len(row.options or []), "reason": row.last_error or row.reason,
            "attempts": row.attempts}


# --- reading -----------------------------------------------------------------------------------------

def stored(caller: Caller, decision_id: str) -> tuple[Decision, Recourse | None, Manifest]:
    """The decision, its recourse row (None: not adverse, or decided before recourse existed) and manifest."""
    decision = visible_decision(caller, decision_id)
    check_not_purged(decision)  # the options held the person's values: deleted under the retention rule
    row = db.session.get(Recourse, decision_id)
    if row is not None and row.status == RecourseStatus.PENDING:
        raise RecoursePending()
    manifest_data = db.session.execute(select(ScoringModel.manifest).where(ScoringModel.id == decision.model_id)).scalar_one()
    manifest = Manifest.model_validate(manifest_data)
    if row is not None and row.status == RecourseStatus.FAILED:
        owner = manifest.notice.owner.get(decision.language)
        review = links.api_links(current_settings().base_url, decision.id)["review"]
        raise RecourseFailed(
            f"The options to change this decision could not be computed ({row.last_error}). "
            f"Contact the system's owner, {owner}, at {manifest.notice.contact}. "
            f"You can also request a human review of the decision: {review}",
            details={"reason": row.last_error, "contact": manifest.notice.contact, "owner": owner, "review": review,
                     "attempts": row.attempts},
        )
    return decision, row, manifest
