"""The explanation as the person reads it: sentences, factors and chart in kk, ru or en. Deterministic."""

from __future__ import annotations

import io
from typing import Any

from babel.numbers import format_decimal, format_percent
from flask_babel import force_locale
from flask_babel import gettext as _
from matplotlib import rc_context
from matplotlib.figure import Figure

from gateway import explanations
from gateway.auth import Caller
from gateway.manifest import Feature, Manifest, MultiClassPolicy, RegressionPolicy
from gateway.models import Decision, Explanation
from gateway.schemas import ExplanationOut
from gateway.settings import current_settings


def _number(value: float, lang: str) -> str:
    return format_decimal(value, format="#,##0.##", locale=lang)


def _amount(value: float, policy: RegressionPolicy, lang: str) -> str:
    """A regression model's value in its units, e.g. "12,400 ₸"."""
    return policy.amount(value, lang)


def _size(contribution: float, output_space: str, lang: str, error: float | None = None,
          policy: RegressionPolicy | None = None) -> str:
    if output_space == "value" and policy is not None:
        if error is not None:
            return _("about %(amount)s, ± %(error)s", amount=_amount(abs(contribution), policy, lang),
                     error=_amount(error, policy, lang))
        return _amount(abs(contribution), policy, lang)
    if output_space == "probability":
        points = format_decimal(abs(contribution) * 100, format="0.0", locale=lang)
        if error is not None:  # an estimate: "about 4.5 percentage points, ± 0.3"
            return _("about %(points)s percentage points, ± %(error)s", points=points,
                     error=format_decimal(error * 100, format="0.0#", locale=lang))
        return _("%(points)s percentage points", points=points)
    size = format_decimal(abs(contribution), format="0.00", locale=lang)
    if error is not None:
        return _("about %(size)s on the log-odds scale, ± %(error)s", size=size,
                 error=format_decimal(error, format="0.00#", locale=lang))
    return _("%(size)s on the log-odds scale", size=size)


def _method_note(method: str | None, estimate: bool) -> str | None:
    """What the numbers are, when they are not exact Shapley values of the raw features."""
    if estimate:
        return _("These figures are estimates: the factors' shares were found by sampling the system's answers, "
                 "not computed exactly. Each figure is given with its precision: the exact value lies within ± of it "
                 "in about 19 cases out of 20. Factors whose figures overlap within that precision weigh about the same.")
    if method and method.endswith("_rescaled"):
        return _("Each factor's share was computed exactly on the system's internal scale (log-odds) and converted "
                 "to percentage points; the conversion divides the result among the factors approximately.")
    if method and "_column_sum" in method:
        return _("Each factor's share is the sum of the shares of its encoded parts, an approximation of the "
                 "factor's own share.")
    return None


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
    policy = manifest.policy
    amounts = policy if isinstance(policy, RegressionPolicy) else None
    with force_locale(lang):
        system = f"{manifest.name} {manifest.version}"
        outcome_label = (manifest.policy.outcome_labels or {}).get(decision.outcome)
        outcome = outcome_label.get(lang) if outcome_label else decision.outcome
        factors, sentences = [], []
        for f in selection.get("factors", []):
            feature = manifest.feature(f["feature"])
            label = feature.labels.get(lang)
            shown = display_band(feature, f["band"], lang) if f["disclosure"] == "band" else display_value(feature, f["value"], lang)
            size = _size(f["contribution"], space, lang, f.get("error"), amounts)
            if amounts is not None:
                sentence = (_("%(label)s — %(value)s: this raised the amount by %(size)s.", label=label, value=shown, size=size)
                            if f["direction"] == "raised" else
                            _("%(label)s — %(value)s: this lowered the amount by %(size)s.", label=label, value=shown, size=size))
            elif f["direction"] == "raised":
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
                "error": f.get("error"),
                "rank": f.get("rank"),
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
                size = _size(bucket["contribution"], space, lang, policy=amounts)
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
                         else _amount(base_value, amounts, lang) if amounts is not None
                         else format_decimal(base_value, format="0.00", locale=lang))
            baseline = _("The result starts from %(base)s, the average over a reference set of past applications; "
                         "each factor moved it up or down from there.", base=base_text)
        summary = _("An automated system (%(system)s, operated by %(owner)s) was applied to your case. "
                    "Outcome: %(outcome)s.", system=system, owner=manifest.notice.owner.get(lang), outcome=outcome)
        if amounts is not None:
            summary += " " + _("The system computed the amount %(amount)s; the factors below explain this amount.",
                               amount=_amount(decision.score, amounts, lang))
        elif isinstance(policy, MultiClassPolicy):
            summary += " " + _("The system chose the outcome it found most probable (%(probability)s); the factors "
                               "below explain the probability of this outcome «%(outcome)s».",
                               probability=format_percent(decision.score, format="0.0%", locale=lang), outcome=outcome)
        text = {
            "summary": summary,
            "role": (_("The system's result was the sole basis of this decision.")
                     if decision.role_of_ai == "sole_basis" else
                     _("The system's result supported an officer, who made the decision.")),
            "baseline": baseline,
            "factors_intro": _("The main factors that influenced the result:"),
            # What the numbers are: estimates with their precision, or exact values converted approximately.
            "precision": _method_note(explanation.method, bool(selection.get("estimate"))),
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
        "estimate": bool(selection.get("estimate")),
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


def _rendered(principal: Caller, decision_id: str, lang: str | None) -> dict[str, Any]:
    decision, explanation, manifest = explanations.stored(principal, decision_id)
    return render(decision, explanation, manifest,
                  explanations.language_for(decision, lang, current_settings().languages))


def explanation_view(principal: Caller, decision_id: str, lang: str | None) -> ExplanationOut:
    """Return the stored explanation rendered in `lang` (default: the decision's language)."""
    return ExplanationOut.model_validate(_rendered(principal, decision_id, lang))


def explanation_svg(principal: Caller, decision_id: str, lang: str | None) -> bytes:
    """Draw the factors as a horizontal bar chart (SVG, byte-stable for the same explanation)."""
    return draw_svg(_rendered(principal, decision_id, lang))


def draw_svg(view: dict[str, Any]) -> bytes:
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
                      else _("Contribution, in the amount's units") if view["output_space"] == "value"
                      else _("Contribution, log-odds"))
    rows = list(reversed(list(zip(labels, sizes, strict=False))))  # the largest factor on top
    # Labels are drawn literally: "$" in a label (a currency, a model's own text) is never mathtext, which
    # would garble it or, when it does not parse, fail every chart of the model.
    with rc_context({"svg.hashsalt": "decision-rights-gateway", "font.family": "DejaVu Sans",
                     "svg.fonttype": "path", "text.parse_math": False}):
        fig = Figure(figsize=(8, 0.6 * max(len(rows), 1) + 1.2))
        ax = fig.add_subplot()
        colours = ["#1b7837" if s >= 0 else "#c2410c" for _, s in rows]
        ax.barh(range(len(rows)), [r[1] for r in rows], color=colours)
        ax.axvline(0, color="#333333", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], parse_math=False)
        ax.set_xlabel(axis_label, parse_math=False)
        limit = max([abs(s) for _, s in rows] + [1e-9]) * 1.15
        ax.set_xlim(-limit, limit)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()

