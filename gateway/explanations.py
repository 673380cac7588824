"""Explanations of the main influencing factors: computed once, frozen, rendered in kk/ru/en.

Exact explainers (TreeSHAP, LinearSHAP) run before the decision's write transaction and their result
is inserted in it. Other models get a pending row in the same transaction: that row is the job of the
``explain`` task kind (gateway/jobs/explain.py), which computes it after commit. Serving an explanation never recomputes SHAP:
the stored attributions and selection are rendered, deterministically, in the asked language.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import pandas as pd
from babel.numbers import format_decimal, format_percent
from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select

from explainers import ExactExplainer, ExplainerError, FactorSelector, make_explainer
from explainers.base import BaseExplainer, RawExplanation
from gateway.access import visible_decision  # the access rules live in gateway.access
from gateway.auth import Caller
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.manifest import Feature, Manifest
from gateway.models import Decision, Explanation, ExplanationStatus, ScoringModel

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


@dataclass(frozen=True)
class ExplanationTools:
    """A model version's fitted explainer and factor selector (built once per process)."""

    explainer: BaseExplainer
    selector: FactorSelector
    exact: bool
    background_sha256: str


def build_tools(manifest: Manifest, model: Any, background: pd.DataFrame, background_sha256: str) -> ExplanationTools:
    """Fit the explainer and the factor selector on the model's background data."""
    explainer = make_explainer(
        model,
        output_space=manifest.explanation.output_space,
        random_state=manifest.explanation.random_state,
        positive_class=manifest.policy.positive_class,
    ).fit(background)
    selector = FactorSelector(
        {f.name: f.disclosure for f in manifest.features},
        max_factors=manifest.explanation.max_factors,
        bands={f.name: f.bands for f in manifest.features if f.bands is not None},
    ).fit(background)
    exact = isinstance(explainer, ExactExplainer)
    # Warm compiled code (the model-agnostic explainer's numba code takes seconds on its first call)
    # here, once per model version, so that gunicorn's workers inherit it instead of each paying for it.
    explainer.explain(background.iloc[:1])
    return ExplanationTools(explainer, selector, exact, background_sha256)


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
    """The explanation row to insert with a decision: ready (exact) or pending (the explain job's row)."""
    base: dict[str, Any] = {"attempts": 0, "created_at": now}
    if tools is None:  # only versions registered before registration required background data
        raise ExplainerError("the model version has no background data to explain against; "
                             "register a version with background data")
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


# --- reading and rendering --------------------------------------------------------------------------

def _number(value: float, lang: str) -> str:
    return format_decimal(value, format="#,##0.##", locale=lang)


def _size(contribution: float, output_space: str, lang: str) -> str:
    if output_space == "probability":
        return _("%(points)s percentage points", points=format_decimal(abs(contribution) * 100, format="0.0", locale=lang))
    return _("%(size)s on the log-odds scale", size=format_decimal(abs(contribution), format="0.00", locale=lang))


def _quantity(feature: Feature, value: float, lang: str) -> str:
    number = _number(value, lang)
    return f"{number} {feature.unit.get(lang)}" if feature.unit else number


def display_value(feature: Feature, value: Any, lang: str) -> str:
    """The person's value in raw units, as they would read it."""
    if feature.type == "category":
        return feature.category_label(str(value), lang)
    if feature.type == "boolean":
        return _("yes") if value else _("no")
    return _quantity(feature, float(value), lang)


def display_band(feature: Feature, band: list[float | None], lang: str) -> str:
    """The range a banded value falls in (its lower edge included, its upper edge not)."""
    low, high = band
    if low is not None and high is not None:
        return _("from %(low)s to under %(high)s", low=_quantity(feature, low, lang), high=_quantity(feature, high, lang))
    if low is not None:
        return _("%(low)s or more", low=_quantity(feature, low, lang))
    if high is not None:
        return _("under %(high)s", high=_quantity(feature, high, lang))
    return _("any value")


def render(decision: Decision, explanation: Explanation, manifest: Manifest, lang: str) -> dict[str, Any]:
    """The explanation as the person reads it, in `lang` (kk, ru or en). Deterministic."""
    selection = explanation.selection or {}
    space = explanation.output_space or "probability"
    with force_locale(lang):
        system = f"{manifest.name} {manifest.version}"
        outcome_label = (manifest.policy.outcome_labels or {}).get(decision.outcome)
        outcome = outcome_label.get(lang) if outcome_label else decision.outcome
        factors, sentences = [], []
        for f in selection.get("factors", []):
            feature = manifest.feature(f["feature"])
            label = feature.labels.get(lang)
            shown = display_band(feature, f["band"], lang) if f["disclosure"] == "band" else display_value(feature, f["value"], lang)
            size = _size(f["contribution"], space, lang)
            if f["direction"] == "raised":
                sentence = _("%(label)s — %(value)s: this raised the result by %(size)s.", label=label, value=shown, size=size)
            else:
                sentence = _("%(label)s — %(value)s: this lowered the result by %(size)s.", label=label, value=shown, size=size)
            sentences.append(sentence)
            factors.append({
                "feature": f["feature"],
                "label": label,
                "value": shown,
                "band": f["band"],
                "direction": f["direction"],
                "contribution": f["contribution"],
            })
        bucket = selection.get("confidential")
        confidential, confidential_text = None, None
        if bucket:
            ground = manifest.explanation.confidential_ground.get(lang) if manifest.explanation.confidential_ground else ""
            confidential = {"count": bucket["count"], "contribution_or_null": bucket["contribution"],
                            "direction": bucket["direction"], "legal_ground": ground}
            if bucket["contribution"] is None:
                together = (_("Together they raised the result.") if bucket["direction"] == "raised"
                            else _("Together they lowered the result."))
            else:
                size = _size(bucket["contribution"], space, lang)
                together = (_("Together they raised the result by %(size)s.", size=size) if bucket["direction"] == "raised"
                            else _("Together they lowered the result by %(size)s.", size=size))
            confidential_text = " ".join([
                _("Other factors (%(count)s), some of them confidential, are not listed one by one.", count=bucket["count"]),
                together,
                _("Reason: %(ground)s", ground=ground),
            ])
        disclosed = selection.get("base_value_disclosed", True)
        base_value = explanation.base_value if disclosed else None
        baseline = None
        if base_value is not None:
            base_text = (format_percent(base_value, format="0.0%", locale=lang) if space == "probability"
                         else format_decimal(base_value, format="0.00", locale=lang))
            baseline = _("The result starts from %(base)s, the average over a reference set of past applications; "
                         "each factor moved it up or down from there.", base=base_text)
        text = {
            "summary": _("An automated system (%(system)s, operated by %(owner)s) was applied to your case. "
                         "Outcome: %(outcome)s.", system=system, owner=manifest.notice.owner.get(lang), outcome=outcome),
            "role": (_("The system's result was the sole basis of this decision.")
                     if decision.role_of_ai == "sole_basis" else
                     _("The system's result supported an officer, who made the decision.")),
            "baseline": baseline,
            "factors_intro": _("The main factors that influenced the result:"),
            "factors": sentences,
            "confidential": confidential_text,
        }
    return {
        "decision_id": decision.id,
        "language": lang,
        "outcome": decision.outcome,
        "effective_outcome": decision.effective_outcome,
        "method": explanation.method,
        "output_space": space,
        "base_value": base_value,
        "score": decision.score,
        "output": explanation.output,
        "factors": factors,
        "confidential": confidential,
        "text": text,
        "role_of_ai": decision.role_of_ai,
        "additivity_error": explanation.additivity_error,
        "baseline": {"background_sha256": explanation.background_sha256, "random_state": explanation.random_state},
        "model": {"name": decision.model_name, "version": decision.model_version, "sha256": decision.artifact_sha256,
                  "explainer_version": explanation.explainer_version, "shap_version": explanation.shap_version},
    }


def _stored(principal: Caller, decision_id: str) -> tuple[Decision, Explanation, Manifest]:
    decision = visible_decision(principal, decision_id)
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
    review = f"{current_app.config['PUBLIC_BASE_URL'].rstrip('/')}/v1/decisions/{decision.id}/reviews"
    return ExplanationFailed(
        f"The explanation of this decision could not be computed ({explanation.last_error}). "
        f"Contact the system's owner, {owner}, at {manifest.notice.contact}. "
        f"You can also request a human review of the decision: {review}",
        details={"reason": explanation.last_error, "contact": manifest.notice.contact, "owner": owner,
                 "review": review, "attempts": explanation.attempts},
    )


def state(decision_id: str) -> dict[str, Any]:
    """The explanation's status for the decision view, and when it failed, why."""
    row = db.session.execute(select(Explanation.status, Explanation.last_error, Explanation.attempts)
                             .where(Explanation.decision_id == decision_id)).first()
    if row is None:
        return {"status": ExplanationStatus.UNAVAILABLE.value, "reason": "none was recorded", "attempts": 0}
    shown = row.status in (ExplanationStatus.FAILED, ExplanationStatus.UNAVAILABLE) or row.attempts
    return {"status": row.status, "reason": row.last_error if shown else None, "attempts": row.attempts}


def language_for(decision: Decision, lang: str | None) -> str:
    offered = current_app.config["LANGUAGES"]
    return lang if lang in offered else decision.language


def explanation_view(principal: Caller, decision_id: str, lang: str | None) -> dict[str, Any]:
    """Return the stored explanation rendered in `lang` (default: the decision's language)."""
    decision, explanation, manifest = _stored(principal, decision_id)
    return render(decision, explanation, manifest, language_for(decision, lang))


def explanation_svg(principal: Caller, decision_id: str, lang: str | None) -> bytes:
    """Draw the factors as a horizontal bar chart (SVG, byte-stable for the same explanation)."""
    view = explanation_view(principal, decision_id, lang)
    return draw_svg(view)


def draw_svg(view: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    lang = view["language"]
    scale = 100.0 if view["output_space"] == "probability" else 1.0
    labels = [f"{f['label']}: {f['value']}" for f in view["factors"]]
    sizes = [f["contribution"] * scale for f in view["factors"]]
    bucket = view["confidential"]
    with force_locale(lang):
        if bucket and bucket["contribution_or_null"] is not None:
            labels.append(_("Other factors (confidential)"))
            sizes.append(bucket["contribution_or_null"] * scale)
        axis_label = (_("Contribution, percentage points") if view["output_space"] == "probability"
                      else _("Contribution, log-odds"))
    rows = list(reversed(list(zip(labels, sizes))))  # the largest factor on top
    with matplotlib.rc_context({"svg.hashsalt": "decision-rights-gateway", "font.family": "DejaVu Sans",
                                "svg.fonttype": "path"}):
        fig = Figure(figsize=(8, 0.6 * max(len(rows), 1) + 1.2))
        ax = fig.add_subplot()
        colours = ["#1b7837" if s >= 0 else "#c2410c" for _, s in rows]
        ax.barh([r[0] for r in rows], [r[1] for r in rows], color=colours)
        ax.axvline(0, color="#333333", linewidth=0.8)
        ax.set_xlabel(axis_label)
        limit = max([abs(s) for _, s in rows] + [1e-9]) * 1.15
        ax.set_xlim(-limit, limit)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()

