"""The public algorithm register: every model version that ever decided, with its pre-use notice."""

from __future__ import annotations

from typing import Any

from babel.numbers import format_decimal
from flask import Blueprint, render_template
from flask_babel import lazy_gettext

from gateway import registry
from gateway.web import labels
from gateway.web.common import choose_language

bp = Blueprint("register", __name__)
SENSITIVE = {
    "protected_attribute": lazy_gettext("protected personal characteristics"),
    "biometric": lazy_gettext("biometric data"),
    "health": lazy_gettext("health data"),
    "other": lazy_gettext("other sensitive data"),
}
GLOBAL_FACTORS_SHOWN = 10


@bp.get("/register")
def index() -> Any:
    lang = choose_language()
    return render_template("web/register.html", entries=registry.register_entries(), lang=lang, labels=labels)


@bp.get("/register/<name>/<version>")
def model(name: str, version: str) -> Any:
    lang = choose_language()
    entry = registry.register_entry(name, version)
    m = entry.manifest
    shown = [f for f in m.features if f.disclosure != "withhold"]
    withheld = [f for f in m.features if f.disclosure == "withhold"]
    importance = registry.global_factors(entry.row.id)
    scale = 100.0 if m.explanation.output_space == "probability" else 1.0
    ranked = sorted((f for f in shown if f.name in importance), key=lambda f: (-importance[f.name], f.name))
    factors = [{"label": f.labels.get(lang),
                "size": format_decimal(importance[f.name] * scale, format="0.0" if scale == 100.0 else "0.00", locale=lang)}
               for f in ranked[:GLOBAL_FACTORS_SHOWN]]
    categories = sorted({str(SENSITIVE.get(f.sensitive, SENSITIVE["other"])) for f in withheld if f.sensitive})
    return render_template(
        "web/register_model.html", entry=entry, m=m, lang=lang, labels=labels, inputs=shown, withheld=withheld,
        categories=categories, factors=factors, probability=scale == 100.0,
        # Not the manifest's confidential_ground: its text may name the withheld inputs (the example's does),
        # and the register states them as a count and a kind only.
    )
