"""Recourse as the person reads it: each verified option as a sentence in kk, ru or en. Deterministic."""

from __future__ import annotations

from typing import Any

from flask_babel import force_locale
from flask_babel import gettext as _

from gateway import explanations, recourse
from gateway.auth import Caller
from gateway.ids import isoformat
from gateway.manifest import Manifest
from gateway.models import Decision, Recourse
from gateway.presenters.explanation import display_band, display_value
from gateway.schemas import RecourseOut
from gateway.settings import current_settings


def _outcome(manifest: Manifest, code: str, lang: str) -> str:
    label = (manifest.policy.outcome_labels or {}).get(code)
    return label.get(lang) if label else code


def _other_outcome(manifest: Manifest, decision: Decision) -> str | None:
    """The outcome an option leads to (binary policies only: other kinds get no options)."""
    policy = recourse.binary_policy(manifest)
    if policy is None:
        return None
    return policy.outcome_below if decision.outcome == policy.outcome_above else policy.outcome_above


def _change(manifest: Manifest, name: str, change: dict[str, Any], lang: str) -> dict[str, Any]:
    feature = manifest.feature(name)
    band = change.get("from_band")
    current = display_band(feature, band, lang) if band is not None else display_value(feature, change["from"], lang)
    return {"feature": name, "label": feature.labels.get(lang), "current": current,
            "proposed": display_value(feature, change["to"], lang), "to": change["to"]}


def _sentence(changes: list[dict[str, Any]], outcome: str) -> str:
    clauses = [_("“%(label)s” were %(new)s instead of %(old)s", label=c["label"], new=c["proposed"], old=c["current"])
               for c in changes]
    joined = clauses[0]
    for clause in clauses[1:]:
        joined = _("%(first)s and %(second)s", first=joined, second=clause)
    return _("If %(changes)s, the outcome would have been: %(outcome)s.", changes=joined, outcome=outcome)


def _none_text(reason: str) -> str:
    if reason == "none_found":
        return _("No change to the information you can change, within its allowed values, would have led to "
                 "another outcome.")
    if reason == "no_mutable_features":
        return _("The system uses no information about you that you could change.")
    if reason == "policy_kind_unsupported":
        return _("Options to change the outcome are computed only for decisions between two outcomes; this "
                 "decision is of another kind.")
    if reason == "not_adverse":
        return _("This decision is not adverse to you, so there is nothing you would need to change.")
    return _("No options to change this decision were computed: it was made before the gateway offered them.")


def render(decision: Decision, row: Recourse | None, manifest: Manifest, lang: str) -> dict[str, Any]:
    """The recourse as the person reads it, in `lang`: options (cheapest first) and their sentences."""
    reason: str | None
    if not decision.adverse:
        status, reason = "not_adverse", "not_adverse"
    elif row is None:
        status, reason = "unavailable", "not_computed"
    else:
        status, reason = "ready", row.reason
    with force_locale(lang):
        other = _other_outcome(manifest, decision)
        other_label = _outcome(manifest, other, lang) if other is not None else ""
        options, sentences = [], []
        for option in (row.options or []) if row is not None and status == "ready" else []:
            changes = [_change(manifest, name, change, lang) for name, change in sorted(option["changes"].items())]
            sentence = _sentence(changes, other_label)
            sentences.append(sentence)
            options.append({"changes": changes, "cost": option["cost"], "score": option["score"], "outcome": other,
                            "text": sentence})
        text = {
            "heading": _("What you could change"),
            "intro": (_("Each of these changes would have led to another outcome: the system that made the decision "
                        "scored every one of them. They are possibilities, not advice and not a promise about a "
                        "future decision.") if options else None),
            "options": sentences,
            "none": _none_text(reason) if reason is not None and not options else None,
            "scope": _("Only information you can change is considered, within its allowed values: never "
                       "confidential or sensitive information, and never facts you cannot change."),
        }
    return {
        "decision_id": decision.id,
        "language": lang,
        "outcome": decision.outcome,
        "effective_outcome": decision.effective_outcome,
        "adverse": decision.adverse,
        "status": status,
        "reason": reason if not options else None,
        "method": row.method if row is not None else None,
        "options": options,
        "text": text,
        "computed_at": isoformat(row.computed_at) if row is not None and row.computed_at is not None else None,
        "digest": row.digest if row is not None else None,
    }


def recourse_view(caller: Caller, decision_id: str, lang: str | None) -> RecourseOut:
    """The stored recourse rendered in `lang` (default: the decision's language); RecoursePending while computed."""
    decision, row, manifest = recourse.stored(caller, decision_id)
    language = explanations.language_for(decision, lang, current_settings().languages)
    return RecourseOut.model_validate(render(decision, row, manifest, language))
