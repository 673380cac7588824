"""Model lifecycle: upload, register, activate, suspend (loading lives in gateway.runtime)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import current_app
from sqlalchemy import func, or_, select

from explainers import ExplainerError, choose_explainer
from gateway import runtime
from gateway.adapters import AdapterError, pin_remote
from gateway.adapters.base import ClassProbabilities
from gateway.audit import canonical_json, record_leaf
from gateway.db import Total, bounded_count
from gateway.errors import Conflict, ModelUnavailable, NotFound, ValidationFailed
from gateway.extensions import db
from gateway.features import example_row, to_frame
from gateway.ids import isoformat, new_id, utcnow
from gateway.manifest import Manifest, MultiClassPolicy, RegressionPolicy, classification_problems
from gateway.models import Blob, Decision, Incident, ModelStatus, ScoringModel
from gateway.settings import Settings, current_settings

SERVING = (ModelStatus.ACTIVE.value, ModelStatus.SUSPENDED.value)


def store_blob(data: bytes) -> str:
    """Add bytes to the content-addressed store (no commit); return their sha256."""
    sha = hashlib.sha256(data).hexdigest()
    if db.session.get(Blob, sha) is None:
        db.session.add(Blob(sha256=sha, size=len(data), data=data, created_at=utcnow()))
    return sha


def check_risk_assessment(manifest: Manifest, max_age: int, today: dt.date | None = None) -> None:
    """Refuse a medium- or high-risk model without a risk assessment dated within `max_age` days."""
    if manifest.risk_class == "minimal":
        return
    done = manifest.assessed_on
    if done is None:
        raise ModelUnavailable(
            f"model {manifest.name} {manifest.version} is {manifest.risk_class}-risk and has no risk_assessment; "
            f"a {manifest.risk_class}-risk model is served only with a risk assessment dated within the last "
            f"{max_age} days",
            code="risk_assessment_missing",
        )
    today = today or utcnow().date()
    if (today - done).days > max_age:
        raise ModelUnavailable(
            f"model {manifest.name} {manifest.version} is {manifest.risk_class}-risk and its risk assessment of "
            f"{done} is older than {max_age} days; renew it and register a new version",
            code="risk_assessment_expired",
        )


def check_classification(manifest: Manifest) -> None:
    """Refuse to serve a version the AI Law's risk regime refuses (one registered before it was enforced)."""
    problems = classification_problems(manifest)
    if problems:
        raise ModelUnavailable(
            f"model {manifest.name} {manifest.version} does not meet the AI Law's classification rules: "
            f"{problems[0]['message']}",
            code="classification_refused",
        )


def refuse_unclassified(manifest: Manifest) -> None:
    """ValidationFailed naming every rule (and its article) the manifest breaks; nothing when it complies."""
    problems = classification_problems(manifest)
    if problems:
        raise ValidationFailed(
            f"model {manifest.name} {manifest.version} is refused: " + "; ".join(p["message"] for p in problems),
            code="classification_refused", details=problems,
        )


def register(
    manifest: Manifest,
    artifact: bytes | None,
    background: bytes | None,
    *,
    activate: bool,
    registered_by: str,
    on_plan: Callable[[str], None] | None = None,
    settings: Settings | None = None,
) -> tuple[ScoringModel, bool]:
    """Register a model version; return (row, created). Same name+version+artifact is a no-op.

    A version for which no explanation can be produced is refused (the right to an explanation is part
    of every decision); `on_plan` is told which explainer the version gets, before it is activated.
    A remote model (`manifest.source`) has no artifact: what its server reports (name, version, platform)
    is asked for here and stored as its artifact, so that its decisions pin it.
    """
    settings = settings or current_settings()
    refuse_unclassified(manifest)
    if manifest.source is not None:
        artifact = _pin(manifest, background, settings)
    elif artifact is None:
        raise ValidationFailed("the manifest names no artifact", details=[
            {"field": "sha256", "rule": "required", "message": "a model that is not remote needs its artifact"}])
    sha = hashlib.sha256(artifact).hexdigest()
    if manifest.source is None and sha != manifest.sha256:
        raise ValidationFailed(
            "the artifact does not match the manifest's sha256",
            details=[{"field": "sha256", "rule": "artifact_hash", "message": f"manifest says {manifest.sha256}, artifact is {sha}"}],
        )
    if background is not None:
        bsha = hashlib.sha256(background).hexdigest()
        if bsha != manifest.explanation.background_sha256:
            raise ValidationFailed(
                "the background data does not match explanation.background_sha256",
                details=[{"field": "explanation.background_sha256", "rule": "background_hash",
                          "message": f"manifest says {manifest.explanation.background_sha256}, data is {bsha}"}],
            )
    elif manifest.explanation.background_sha256 is not None:
        raise ValidationFailed("explanation.background_sha256 is set but no background data was given")

    existing = db.session.execute(
        select(ScoringModel).where(ScoringModel.name == manifest.name, ScoringModel.version == manifest.version)
    ).scalar_one_or_none()
    if existing is not None:
        # Read the stored manifest through today's model, so fields added since (with their defaults) compare equal.
        stored = Manifest.model_validate(existing.manifest).model_dump(mode="json")
        if existing.artifact_sha256 != sha or stored != manifest.model_dump(mode="json"):
            raise Conflict(
                f"model {manifest.name} {manifest.version} is already registered with a different "
                "artifact or manifest; register a new version instead",
                details={"registered_sha256": existing.artifact_sha256},
            )
        if activate and existing.status != ModelStatus.ACTIVE:
            activate_version(manifest.name, manifest.version, settings=settings)
        return existing, False

    try:
        adapter = runtime.adapter_for(manifest, artifact, settings.raw)
    except AdapterError as exc:
        raise ValidationFailed(f"the artifact cannot be used: {exc}", code="artifact_rejected") from exc
    sample = [example_row(manifest)]
    if background is not None:
        frame = runtime.read_background(manifest, background)
        sample += frame.to_dict("records")
    try:
        scores = adapter.score(to_frame(manifest, sample))
    except Exception as exc:
        raise ValidationFailed(f"the model failed to score rows valid under its manifest: {exc}", code="artifact_rejected") from exc
    if isinstance(manifest.policy, RegressionPolicy):
        if len(scores) != len(sample) or not all(math.isfinite(float(s)) for s in scores):
            raise ValidationFailed("the model's values are not finite numbers", code="artifact_rejected")
    elif len(scores) != len(sample) or not all(0.0 <= float(s) <= 1.0 for s in scores):
        raise ValidationFailed("the model's scores are not probabilities in [0, 1]", code="artifact_rejected")
    if isinstance(manifest.policy, MultiClassPolicy):
        _check_classes(manifest.policy, adapter)
    if background is None:
        native = adapter.native()
        try:
            chosen = choose_explainer(native.pipeline if native is not None else adapter.score).name
        except ExplainerError as exc:
            chosen = f"none ({exc})"
        raise ValidationFailed(
            f"model {manifest.name} {manifest.version} cannot be explained: its explainer ({chosen}) needs "
            "background data (explanation.background_sha256, rows uploaded to /v1/blobs), and every decision "
            "must have an explanation",
            details=[{"field": "explanation.background_sha256", "rule": "required_for_explanation",
                      "message": f"the {chosen} explainer explains against background data; none was given"}],
        )
    try:
        tools = runtime.explanation_tools(manifest, adapter, frame, hashlib.sha256(background).hexdigest())
    except (ExplainerError, ValueError) as exc:
        raise ValidationFailed(f"the model cannot be explained as its manifest asks: {exc}",
                               code="artifact_rejected") from exc
    assert tools is not None
    if on_plan is not None:
        on_plan(runtime.describe(tools))

    now = utcnow()
    row = ScoringModel(
        id=new_id("mdl"),
        name=manifest.name,
        version=manifest.version,
        status=ModelStatus.REGISTERED.value,
        adapter=manifest.adapter,
        artifact_sha256=store_blob(artifact),
        background_sha256=store_blob(background) if background is not None else None,
        risk_class=manifest.risk_class,
        manifest=manifest.model_dump(mode="json"),
        registered_at=now,
        registered_by=registered_by,
        status_changed_at=now,
    )
    db.session.add(row)
    db.session.flush()
    record_leaf(db.session, "model:registered", row.id, {
        "model_id": row.id, "name": row.name, "version": row.version, "sha256": row.artifact_sha256,
        "background_sha256": row.background_sha256, "manifest_sha256": _manifest_digest(row.manifest),
        "registered_by": registered_by, "at": isoformat(now)}, now)
    if activate:
        activate_version(manifest.name, manifest.version, settings=settings)
    return row, True


def _check_classes(policy: MultiClassPolicy, adapter: Any) -> None:
    """A multi-class policy names every class of the model, each once, and no other."""
    if not isinstance(adapter, ClassProbabilities):
        raise ValidationFailed(f"the {adapter.kind} adapter gives no class probabilities: a multi-class policy needs them",
                               code="artifact_rejected")
    model = sorted(str(c) for c in adapter.classes)
    named = sorted(str(c.class_) for c in policy.classes)
    if model != named:
        raise ValidationFailed(
            f"policy.classes {named} are not the model's classes {model}",
            details=[{"field": "policy.classes", "rule": "model_classes",
                      "message": f"the model's classes are {model}"}])


def _pin(manifest: Manifest, background: bytes | None, settings: Settings) -> bytes:
    """Ask a remote model's server what it serves, scoring rows valid under the manifest once."""
    assert manifest.source is not None
    sample = [example_row(manifest)]
    if background is not None:
        sample += runtime.read_background(manifest, background).to_dict("records")
    try:
        return pin_remote(manifest.source, to_frame(manifest, sample[:8]), positive_class=manifest.policy.adapter_class,
                          config=dict(settings.raw))
    except AdapterError as exc:
        raise ValidationFailed(f"the remote model cannot be used: {exc}", code="artifact_rejected") from exc


def _manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(manifest).encode()).hexdigest()


def _version(name: str, version: str) -> ScoringModel:
    row = db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.version == version)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"model {name} {version} is not registered")
    return row


def activate_version(name: str, version: str, *, settings: Settings | None = None) -> ScoringModel:
    """Make `version` the serving version of `name` (no commit); the previous one stops serving."""
    settings = settings or current_settings()
    row = _version(name, version)
    manifest = Manifest.model_validate(row.manifest)
    check_classification(manifest)
    check_risk_assessment(manifest, settings.risk_assessment_max_age_days)
    now = utcnow()
    for other in db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.status.in_(SERVING), ScoringModel.id != row.id)
    ).scalars():
        other.status, other.status_changed_at, other.status_reason = ModelStatus.REGISTERED.value, now, f"replaced by {version}"
    previous = row.status
    row.status, row.status_changed_at, row.status_reason = ModelStatus.ACTIVE.value, now, None
    if previous != row.status:
        record_leaf(db.session, "model:activated", row.id, {"model_id": row.id, "name": name, "version": version,
                                                             "at": isoformat(now)}, now)
    return row


def suspend(name: str, reason: str, incident_id: str) -> ScoringModel:
    """Stop serving `name` at once (the kill switch; no commit), naming the incident that asks for it."""
    row = db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.status.in_(SERVING))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"model {name} has no serving version")
    incident = db.session.get(Incident, incident_id)
    if incident is None or incident.model_name != name:
        raise NotFound(f"no incident {incident_id} of model {name} is registered; open one with POST /v1/incidents "
                       "(suspending a model needs an incident reference)", code="incident_not_found")
    now = utcnow()
    row.status, row.status_changed_at = ModelStatus.SUSPENDED.value, now
    row.status_reason = f"{reason} (incident {incident_id})"
    record_leaf(db.session, "model:suspended", row.id, {"model_id": row.id, "name": row.name, "version": row.version,
                                                         "reason": reason, "incident_id": incident_id,
                                                         "at": isoformat(now)}, now)
    return row


def list_models(*, serving_only: bool, after: str | None = None, limit: int | None = None,
                offset: int = 0) -> list[ScoringModel]:
    """Registered versions by name (then registration time); `after`: only names after it (keyset paging of the
    serving register, where each name has one active version)."""
    query = select(ScoringModel).order_by(ScoringModel.name, ScoringModel.registered_at)
    if serving_only:
        query = query.where(ScoringModel.status == ModelStatus.ACTIVE.value)
    if after is not None:
        query = query.where(ScoringModel.name > after)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return list(db.session.execute(query).scalars())


def count_models(*, serving_only: bool) -> Total:
    """How many versions are registered (or serving), exact up to LIST_COUNT_CAP, a lower bound beyond."""
    query = select(ScoringModel)
    if serving_only:
        query = query.where(ScoringModel.status == ModelStatus.ACTIVE.value)
    return bounded_count(query, current_settings().list_count_cap)


def public_model(name: str) -> ScoringModel:
    """Return the serving version of `name` (active or suspended), else NotFound."""
    row = db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.status.in_(SERVING))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no model named {name!r} is being served")
    return row


# --- the public algorithm register --------------------------------------------------------------------

def manifest_of(model_id: str) -> Manifest:
    """A registered version's manifest (immutable once registered), parsed once per process."""
    found: dict[str, Manifest] = current_app.extensions.setdefault("gateway.manifests", {})
    manifest = found.get(model_id)
    if manifest is None:
        data = db.session.execute(select(ScoringModel.manifest).where(ScoringModel.id == model_id)).scalar_one_or_none()
        if data is None:
            raise NotFound(f"model {model_id} is not registered")
        manifest = found[model_id] = Manifest.model_validate(data)
    return manifest


@dataclass(frozen=True)
class RegisterEntry:
    """One model version in the public register, with the dates it decided from and to."""

    row: ScoringModel
    manifest: Manifest
    served_from: dt.datetime | None
    served_to: dt.datetime | None  # None while it serves


def _entry(row: ScoringModel, first: dt.datetime | None) -> RegisterEntry:
    serving = row.status in SERVING
    start = first or (row.status_changed_at if serving else None)
    # A version stops deciding when it is suspended, replaced or retired: that is its last status change.
    end = None if row.status == ModelStatus.ACTIVE.value else row.status_changed_at
    return RegisterEntry(row, manifest_of(row.id), start, end)


def register_entries() -> list[RegisterEntry]:
    """Every version that serves now or ever decided, by name then newest first."""
    used = select(Decision.model_id, func.min(Decision.created_at).label("first")).group_by(Decision.model_id).subquery()
    rows = db.session.execute(
        select(ScoringModel, used.c.first).outerjoin(used, used.c.model_id == ScoringModel.id)
        .where(or_(ScoringModel.status.in_(SERVING), used.c.first.is_not(None)))
        .order_by(ScoringModel.name, ScoringModel.registered_at.desc())
    ).all()
    return [_entry(row, first_at) for row, first_at in rows]


def register_entry(name: str, version: str) -> RegisterEntry:
    """One version of the register; NotFound for a version that never served."""
    for entry in register_entries():
        if entry.row.name == name and entry.row.version == version:
            return entry
    raise NotFound(f"model {name} {version} is not in the register")


def global_factors(model_id: str) -> dict[str, float]:
    """Mean |attribution| per raw feature over the version's background data (computed once, cached).

    The register's "main factors in general": the same explainer and background as the decisions'
    explanations, so the figures are comparable with a person's own factors. Empty without background.
    """
    found: dict[str, dict[str, float]] = current_app.extensions.setdefault("gateway.global_factors", {})
    if model_id not in found:
        loaded = runtime.cache().get(model_id)
        tools, background = loaded.explanation, loaded.background
        result: dict[str, float] = {}
        if tools is not None and background is not None and len(background):
            if loaded.by_class:
                # Multi-class: each background row explained as its own decision would be (its decided class).
                decided = loaded.assess_rows(background.to_dict("records"))
                raws = [loaded.tools_for(outcome).explainer.explain(background.iloc[[i]])[0]  # type: ignore[union-attr]
                        for i, (_, outcome, _) in enumerate(decided)]
            else:
                raws = tools.explainer.explain(background)
            names = raws[0].attributions.keys()
            result = {n: float(np.mean([abs(r.attributions[n]) for r in raws])) for n in names}
        found[model_id] = result
    return found[model_id]
