"""The loaded model: adapter, fast scorer and explanation tools of one version, cached per process.

One owner for everything a decision needs in memory. Services (decisions, explanations, registry,
reviews) ask `cache(app).get(model_id)`; nothing here decides, records or renders.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from flask import Flask, current_app
from sqlalchemy import select

from explainers import ExactExplainer, FactorSelector, TreeExplainer, Variants, make_explainer
from explainers.base import BaseExplainer
from gateway.adapters import AdapterError, ModelAdapter, is_remote, load_adapter
from gateway.adapters.base import ClassProbabilities, RecordScorer
from gateway.adapters.fast import FastScorer, verified_fast_scorer
from gateway.errors import ModelUnavailable, NotFound, ValidationFailed
from gateway.extensions import db
from gateway.features import example_row, to_frame, to_records, validate_features
from gateway.manifest import Manifest, MultiClassPolicy, RegressionPolicy
from gateway.models import Blob, ModelStatus, ScoringModel

__all__ = ["ExplanationTools", "LoadedModel", "ModelCache", "adapter_for", "build_tools", "cache", "class_tools", "describe",
           "explanation_tools", "health", "init_app", "read_background"]


@dataclass(frozen=True)
class ExplanationTools:
    """A model version's fitted explainer and factor selector (built once per process)."""

    explainer: BaseExplainer
    selector: FactorSelector
    exact: bool
    background_sha256: str

    @property
    def kind(self) -> str:
        """What the person's explanation will be: exact (tree or linear) or a model-agnostic estimate."""
        name = self.explainer.method_name
        return f"exact ({name})" if self.exact else f"model-agnostic estimate ({name})"


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
    by_class: Mapping[str, ExplanationTools] | None = None  # multi-class: each class's explainer

    def score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The positive-class probability of validated raw rows (verified fast path, else the adapter: from
        plain values when it takes them, a remote model's request made without a DataFrame)."""
        return self.score_margins(rows)[0]

    def score_margins(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        """`score`, and the raw margins (classes_[1]'s) when the verified fast path computed them on the way
        (binary boosting): the exact explainer takes them instead of predicting again."""
        if self.fast is not None:
            found = self.fast.score_margins(rows)
            if found is not None:
                return found
        return self._adapter_scores(rows), None

    def score_variants(self, variants: Variants) -> np.ndarray:
        """`score` of the variants' rows, bit for bit: the verified fast path transforms the base row once and each
        changed value once (the recourse search's hundreds of candidates of one row)."""
        if self.fast is not None:
            found = self.fast.score_variants(variants)
            if found is not None:
                return found[0]
        return self._adapter_scores(variants.rows())

    def _adapter_scores(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The adapter's scores: from plain values when it takes them, else from a DataFrame."""
        if isinstance(self.adapter, RecordScorer):
            return self.adapter.score_records(to_records(self.manifest, rows))
        return self.adapter.score(to_frame(self.manifest, rows))

    def assess(self, row: dict[str, Any]) -> tuple[float, str, bool]:
        """Score a validated row and apply the policy: (score, outcome, adverse).

        Binary: the positive class's probability against the threshold. Multi-class: the most probable class
        decides (the first in the model's order on a tie) and the score is its probability. Regression: the
        model's value, in its units, and the band it falls in.
        """
        return self.assess_rows([row])[0]

    def assess_rows(self, rows: list[dict[str, Any]]) -> list[tuple[float, str, bool]]:
        """`assess` for many validated rows, scored in one call of the model (one remote call per batch)."""
        return self.assess_rows_margins(rows)[0]

    def assess_rows_margins(self, rows: list[dict[str, Any]]) -> tuple[list[tuple[float, str, bool]], np.ndarray | None]:
        """`assess_rows`, and the rows' raw margins when scoring computed them (`score_margins`)."""
        policy = self.manifest.policy
        if isinstance(policy, MultiClassPolicy):
            adapter = cast(ClassProbabilities, self.adapter)
            table = np.asarray(self.adapter.probabilities_of_records(to_records(self.manifest, rows))
                               if isinstance(self.adapter, RecordScorer)
                               else adapter.probabilities(to_frame(self.manifest, rows)), dtype=float)
            found = []
            for proba in table:
                k = int(np.argmax(proba))
                found.append((float(proba[k]), *policy.decide_class(adapter.classes[k])))
            return found, None
        scores, margins = self.score_margins(rows)
        return [(score, *policy.decide(score)) for score in (float(s) for s in scores)], margins

    def tools_for(self, outcome: str) -> ExplanationTools | None:
        """The explainer of a decision with this outcome (multi-class: the decided class's probability)."""
        policy = self.manifest.policy
        if isinstance(policy, MultiClassPolicy) and self.by_class is not None:
            return self.by_class[str(policy.class_of(outcome))]
        return self.explanation


class ModelCache:
    """Adapters loaded once per model version per process."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        # name -> id of the version last seen active: a hint only; the decision's write checks it is still
        # the active version (gateway.decisions) and forgets it when not.
        self.active: dict[str, str] = {}

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
                found = _load(row, self.config)
                self._loaded[model_id] = found
            return found

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._loaded


def cache() -> ModelCache:
    """This app's model cache."""
    found: ModelCache = current_app.extensions["gateway.models"]
    return found


def init_app(app: Flask) -> None:
    app.extensions["gateway.models"] = ModelCache(app.config)


def blob(sha256: str) -> bytes:
    """Stored bytes, checked against their hash at every load."""
    data = db.session.execute(select(Blob.data).where(Blob.sha256 == sha256)).scalar_one_or_none()
    if data is None:
        raise ModelUnavailable(f"the stored artifact {sha256} is missing")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelUnavailable(f"the stored artifact {sha256} does not match its hash; refusing to load it")
    return bytes(data)


def read_background(manifest: Manifest, data: bytes) -> pd.DataFrame:
    """Parse and validate a background CSV against the manifest's features."""
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


def adapter_for(manifest: Manifest, artifact: bytes, config: Mapping[str, Any]) -> ModelAdapter:
    return load_adapter(
        manifest.adapter,
        artifact,
        positive_class=manifest.policy.adapter_class,
        feature_names=[f.name for f in manifest.features],
        config=dict(config),
        source=manifest.source,
    )


def _load(row: ScoringModel, config: Mapping[str, Any]) -> LoadedModel:
    manifest = Manifest.model_validate(row.manifest)
    try:
        adapter = adapter_for(manifest, blob(row.artifact_sha256), config)
    except AdapterError as exc:
        raise ModelUnavailable(f"model {row.name} {row.version} cannot be loaded: {exc}") from exc
    background = read_background(manifest, blob(row.background_sha256)) if row.background_sha256 else None
    by_class = class_tools(manifest, adapter, background, row.background_sha256)
    tools = next(iter(by_class.values())) if by_class else explanation_tools(manifest, adapter, background,
                                                                             row.background_sha256)
    fast = None if by_class or isinstance(manifest.policy, RegressionPolicy) else _fast_scorer(manifest, adapter, background)
    return LoadedModel(row.id, row.name, row.version, row.artifact_sha256, manifest, adapter, background, tools,
                       fast, by_class)


def _fast_scorer(manifest: Manifest, adapter: ModelAdapter, background: pd.DataFrame | None) -> FastScorer | None:
    """A scorer that skips scikit-learn's per-call validation, kept only if it matches the pipeline exactly."""
    if adapter.native() is None:  # an opaque or remote model: nothing to compile (and no call to make)
        return None
    check = to_frame(manifest, [example_row(manifest)])
    if background is not None:
        check = pd.concat([check, background], ignore_index=True)
    numeric = {f.name for f in manifest.features if f.type == "number"}
    return verified_fast_scorer(adapter.native(), [f.name for f in manifest.features], numeric, check,
                                adapter.score(check))


def explanation_tools(manifest: Manifest, adapter: ModelAdapter, background: pd.DataFrame | None,
                      background_sha256: str | None) -> ExplanationTools | None:
    """Fit the model's explainer on its background data (exact for trees and linear models).

    Multi-class: the explainer of the first class (`class_tools` has every class's); regression: the model's
    value explained in its own units by the model-agnostic explainer.
    """
    if background is None or background_sha256 is None:
        return None
    policy = manifest.policy
    if isinstance(policy, MultiClassPolicy):
        found = class_tools(manifest, adapter, background, background_sha256)
        return next(iter(found.values())) if found else None
    if isinstance(policy, RegressionPolicy):
        native = adapter.native()
        if native is not None and TreeExplainer.why_unsupported(native.pipeline) is None \
                and "value" in TreeExplainer.output_spaces_for(native.pipeline):
            # A boosted regressor (LightGBM, XGBoost): exact TreeSHAP in the model's units, in the transaction.
            return build_tools(manifest, native.pipeline, background, background_sha256, positive_class=None,
                               output_space="value")
        # The target error is stated relative to the spread of the model's values over the background.
        spread = float(np.std(adapter.score(background))) or 1.0
        return build_tools(manifest, lambda frame: adapter.score(frame), background, background_sha256,
                           positive_class=None, output_space="value",
                           target_error=manifest.explanation.target_error * spread, warm=not is_remote(adapter))
    native = adapter.native()
    model: Any = native.pipeline if native is not None else (lambda frame: adapter.score(frame))
    return build_tools(manifest, model, background, background_sha256, warm=not is_remote(adapter))


def class_tools(manifest: Manifest, adapter: ModelAdapter, background: pd.DataFrame | None,
                background_sha256: str | None) -> dict[str, ExplanationTools] | None:
    """A multi-class model's explainers, one per class (each explains that class's probability)."""
    policy = manifest.policy
    if not isinstance(policy, MultiClassPolicy) or background is None or background_sha256 is None:
        return None
    native = adapter.native()
    classes = cast(ClassProbabilities, adapter).classes
    found: dict[str, ExplanationTools] = {}
    for c in policy.classes:
        index = [str(k) for k in classes].index(str(c.class_))
        model: Any = (native.pipeline if native is not None
                      else (lambda frame, i=index: cast(ClassProbabilities, adapter).probabilities(frame)[:, i]))
        found[str(c.class_)] = build_tools(manifest, model, background, background_sha256,
                                           positive_class=classes[index], output_space="probability",
                                           warm=not is_remote(adapter))
    return found


def describe(tools: ExplanationTools) -> str:
    """Which explainer a model version gets, in one line for the operator who registers it."""
    explainer: Any = tools.explainer
    rows = getattr(explainer, "background_size_", None)
    if tools.exact:
        kind = {"tree": "exact tree SHAP", "linear": "exact linear SHAP"}.get(explainer.name, f"exact {explainer.name}")
        return (f"{kind} ({explainer.method}) against {rows} background rows, "
                "computed with each decision in its transaction")
    return (f"model-agnostic {explainer.method} ({explainer.max_evals} model evaluations per decision over {rows} "
            "background rows), computed by the explain job after each decision commits")


def build_tools(manifest: Manifest, model: Any, background: pd.DataFrame, background_sha256: str, *,
                positive_class: Any = ..., output_space: str | None = None,
                target_error: float | None = None, warm: bool = True) -> ExplanationTools:
    """Fit the explainer and the factor selector on the model's background data."""
    explainer = make_explainer(
        model,
        output_space=output_space or manifest.explanation.output_space,
        random_state=manifest.explanation.random_state,
        positive_class=manifest.policy.adapter_class if positive_class is ... else positive_class,
        target_error=target_error if target_error is not None else manifest.explanation.target_error,
        max_evals_cap=manifest.explanation.max_evals_cap,
    ).fit(background)
    selector = FactorSelector(
        {f.name: f.disclosure for f in manifest.features},
        max_factors=manifest.explanation.max_factors,
        bands={f.name: f.bands for f in manifest.features if f.bands is not None},
    ).fit(background)
    exact = isinstance(explainer, ExactExplainer)
    # Warm compiled code (the model-agnostic explainer's numba code takes seconds on its first call)
    # here, once per model version, so that gunicorn's workers inherit it instead of each paying for it.
    # A remote model is not warmed: that would be a whole explanation's remote calls at every load.
    if warm:
        explainer.explain(background.iloc[:1])
    return ExplanationTools(explainer, selector, exact, background_sha256)


def health(model: LoadedModel) -> dict[str, Any] | None:
    """A remote model's state in this process (its circuit breaker), for /readyz; None for other models."""
    check = getattr(model.adapter, "health", None)
    return check() if callable(check) else None


def warm(app: Flask) -> list[str]:
    """Load every active model into this process's cache (before gunicorn forks workers)."""
    with app.app_context():
        loaded = []
        rows = db.session.execute(select(ScoringModel).where(ScoringModel.status == ModelStatus.ACTIVE.value)
                                  .order_by(ScoringModel.name, ScoringModel.registered_at)).scalars()
        for row in rows:
            cache().get(row.id)
            loaded.append(f"{row.name} {row.version}")
        return loaded
