"""Register, version, activate and suspend models; load each version's adapter once per process."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from flask import Flask, current_app
from sqlalchemy import func, or_, select

from explainers import ExplainerError
from gateway.adapters import AdapterError, ModelAdapter, load_adapter
from gateway.adapters.fast import FastScorer, verified_fast_scorer
from gateway.errors import Conflict, ModelUnavailable, NotFound, ValidationFailed
from gateway.explanations import ExplanationTools, build_tools
from gateway.extensions import db
from gateway.features import example_row, to_frame, validate_features
from gateway.ids import new_id, utcnow
from gateway.manifest import Manifest
from gateway.models import Blob, Decision, ModelStatus, ScoringModel

SERVING = (ModelStatus.ACTIVE.value, ModelStatus.SUSPENDED.value)


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version ready to score: its manifest and its adapter."""

    id: str
    name: str
    version: str
    sha256: str
    manifest: Manifest
    adapter: ModelAdapter
    background: pd.DataFrame | None
    explanation: ExplanationTools | None
    fast: FastScorer | None = None

    def score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The positive-class probability of validated raw rows (verified fast path, else the adapter)."""
        if self.fast is not None:
            scores = self.fast.score(rows)
            if scores is not None:
                return scores
        return self.adapter.score(to_frame(self.manifest, rows))


class ModelCache:
    """Adapters loaded once per model version per process."""

    def __init__(self) -> None:
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str) -> LoadedModel:
        found = self._loaded.get(model_id)
        if found is not None:
            return found
        with self._lock:
            found = self._loaded.get(model_id)
            if found is None:
                row = db.session.get(ScoringModel, model_id)
                if row is None:
                    raise NotFound(f"model {model_id} is not registered")
                found = _load(row)
                self._loaded[model_id] = found
            return found

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._loaded


def cache() -> ModelCache:
    return current_app.extensions["gateway.models"]


def init_app(app: Flask) -> None:
    app.extensions["gateway.models"] = ModelCache()


def _blob(sha256: str) -> bytes:
    data = db.session.execute(select(Blob.data).where(Blob.sha256 == sha256)).scalar_one_or_none()
    if data is None:
        raise ModelUnavailable(f"the stored artifact {sha256} is missing")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelUnavailable(f"the stored artifact {sha256} does not match its hash; refusing to load it")
    return data


def _read_background(manifest: Manifest, data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    names = [f.name for f in manifest.features]
    missing = sorted(set(names) - set(frame.columns))
    if missing:
        raise ValidationFailed(f"the background data lacks columns {missing}")
    rows: list[dict[str, Any]] = []
    for i, raw in enumerate(frame[names].to_dict("records")):
        values: dict[str, Any] = {}
        for f in manifest.features:
            text = raw[f.name]
            if f.type == "number":
                try:
                    values[f.name] = float(text)
                except ValueError:
                    raise ValidationFailed(f"background row {i + 1}: {f.name} is not a number: {text!r}") from None
            elif f.type == "boolean":
                values[f.name] = text.strip().lower() in ("1", "true", "yes")
            else:
                values[f.name] = text
        validate_features(manifest, values, prefix=f"background[{i + 1}]")
        rows.append(values)
    return to_frame(manifest, rows)


def _adapter_for(manifest: Manifest, artifact: bytes) -> ModelAdapter:
    return load_adapter(
        manifest.adapter,
        artifact,
        positive_class=manifest.policy.positive_class,
        feature_names=[f.name for f in manifest.features],
        config=current_app.config,
    )


def _load(row: ScoringModel) -> LoadedModel:
    manifest = Manifest.model_validate(row.manifest)
    try:
        adapter = _adapter_for(manifest, _blob(row.artifact_sha256))
    except AdapterError as exc:
        raise ModelUnavailable(f"model {row.name} {row.version} cannot be loaded: {exc}") from exc
    background = _read_background(manifest, _blob(row.background_sha256)) if row.background_sha256 else None
    tools = _tools(manifest, adapter, background, row.background_sha256)
    return LoadedModel(row.id, row.name, row.version, row.artifact_sha256, manifest, adapter, background, tools,
                       _fast_scorer(manifest, adapter, background))


def _fast_scorer(manifest: Manifest, adapter: ModelAdapter, background: pd.DataFrame | None) -> FastScorer | None:
    """A scorer that skips scikit-learn's per-call validation, kept only if it matches the pipeline exactly."""
    check = to_frame(manifest, [example_row(manifest)])
    if background is not None:
        check = pd.concat([check, background], ignore_index=True)
    numeric = {f.name for f in manifest.features if f.type == "number"}
    return verified_fast_scorer(adapter.native(), [f.name for f in manifest.features], numeric, check,
                                adapter.score(check))


def _tools(manifest: Manifest, adapter: ModelAdapter, background: pd.DataFrame | None,
           background_sha256: str | None) -> ExplanationTools | None:
    """Fit the model's explainer on its background data (exact for trees and linear models)."""
    if background is None or background_sha256 is None:
        return None
    native = adapter.native()
    model: Any = native.pipeline if native is not None else (lambda frame: adapter.score(frame))
    return build_tools(manifest, model, background, background_sha256)


def store_blob(data: bytes) -> str:
    """Add bytes to the content-addressed store (no commit); return their sha256."""
    sha = hashlib.sha256(data).hexdigest()
    if db.session.get(Blob, sha) is None:
        db.session.add(Blob(sha256=sha, size=len(data), data=data, created_at=utcnow()))
    return sha


def check_risk_assessment(manifest: Manifest, today: dt.date | None = None) -> None:
    """Refuse a high-risk model without a risk assessment dated within the configured period."""
    if manifest.risk_class != "high":
        return
    max_age = int(current_app.config["RISK_ASSESSMENT_MAX_AGE_DAYS"])
    if manifest.risk_assessment_date is None:
        raise ModelUnavailable(
            f"model {manifest.name} {manifest.version} is high-risk and has no risk_assessment_date; "
            "a high-risk model is served only with a risk assessment dated within the last "
            f"{max_age} days",
            code="risk_assessment_missing",
        )
    done = manifest.risk_assessment_date
    today = today or utcnow().date()
    if (today - done).days > max_age:
        raise ModelUnavailable(
            f"model {manifest.name} {manifest.version} is high-risk and its risk assessment of {done} is "
            f"older than {max_age} days; renew it and register a new version",
            code="risk_assessment_expired",
        )


def register(
    manifest: Manifest,
    artifact: bytes,
    background: bytes | None,
    *,
    activate: bool,
    registered_by: str,
) -> tuple[ScoringModel, bool]:
    """Register a model version; return (row, created). Same name+version+artifact is a no-op."""
    sha = hashlib.sha256(artifact).hexdigest()
    if sha != manifest.sha256:
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
        if existing.artifact_sha256 != sha or existing.manifest != manifest.model_dump(mode="json"):
            raise Conflict(
                f"model {manifest.name} {manifest.version} is already registered with a different "
                "artifact or manifest; register a new version instead",
                details={"registered_sha256": existing.artifact_sha256},
            )
        if activate and existing.status != ModelStatus.ACTIVE:
            activate_version(manifest.name, manifest.version)
        return existing, False

    try:
        adapter = _adapter_for(manifest, artifact)
    except AdapterError as exc:
        raise ValidationFailed(f"the artifact cannot be used: {exc}", code="artifact_rejected") from exc
    sample = [example_row(manifest)]
    if background is not None:
        frame = _read_background(manifest, background)
        sample += frame.to_dict("records")
    try:
        scores = adapter.score(to_frame(manifest, sample))
    except Exception as exc:
        raise ValidationFailed(f"the model failed to score rows valid under its manifest: {exc}", code="artifact_rejected") from exc
    if len(scores) != len(sample) or not all(0.0 <= float(s) <= 1.0 for s in scores):
        raise ValidationFailed("the model's scores are not probabilities in [0, 1]", code="artifact_rejected")
    if background is not None:
        try:
            _tools(manifest, adapter, frame, hashlib.sha256(background).hexdigest())
        except (ExplainerError, ValueError) as exc:
            raise ValidationFailed(f"the model cannot be explained as its manifest asks: {exc}",
                                   code="artifact_rejected") from exc

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
    if activate:
        activate_version(manifest.name, manifest.version)
    return row, True


def _version(name: str, version: str) -> ScoringModel:
    row = db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.version == version)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"model {name} {version} is not registered")
    return row


def activate_version(name: str, version: str) -> ScoringModel:
    """Make `version` the serving version of `name` (no commit); the previous one stops serving."""
    row = _version(name, version)
    check_risk_assessment(Manifest.model_validate(row.manifest))
    now = utcnow()
    for other in db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.status.in_(SERVING), ScoringModel.id != row.id)
    ).scalars():
        other.status, other.status_changed_at, other.status_reason = ModelStatus.REGISTERED.value, now, f"replaced by {version}"
    row.status, row.status_changed_at, row.status_reason = ModelStatus.ACTIVE.value, now, None
    return row


def suspend(name: str, reason: str) -> ScoringModel:
    """Stop serving `name` at once (the kill switch; no commit)."""
    row = db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.status.in_(SERVING))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"model {name} has no serving version")
    row.status, row.status_changed_at, row.status_reason = ModelStatus.SUSPENDED.value, utcnow(), reason
    return row


def list_models(*, serving_only: bool) -> list[ScoringModel]:
    query = select(ScoringModel).order_by(ScoringModel.name, ScoringModel.registered_at)
    if serving_only:
        query = query.where(ScoringModel.status == ModelStatus.ACTIVE.value)
    return list(db.session.execute(query).scalars())


def public_model(name: str) -> ScoringModel:
    """Return the serving version of `name` (active or suspended), else NotFound."""
    row = db.session.execute(
        select(ScoringModel).where(ScoringModel.name == name, ScoringModel.status.in_(SERVING))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no model named {name!r} is being served")
    return row


def warm(app: Flask) -> list[str]:
    """Load every active model into this process's cache (before gunicorn forks workers)."""
    with app.app_context():
        loaded = []
        for row in list_models(serving_only=True):
            cache().get(row.id)
            loaded.append(f"{row.name} {row.version}")
        return loaded


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
        loaded = cache().get(model_id)
        tools, background = loaded.explanation, loaded.background
        result: dict[str, float] = {}
        if tools is not None and background is not None and len(background):
            raws = tools.explainer.explain(background)
            names = raws[0].attributions.keys()
            result = {n: float(np.mean([abs(r.attributions[n]) for r in raws])) for n in names}
        found[model_id] = result
    return found[model_id]
