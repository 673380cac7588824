"""The review request form: fields built from the model's feature schema, checked on the server.

Every problem is a message in the page's language attached to its field; nothing is recorded until
the whole form is valid (and then reviews.request_review checks it all again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from gateway.features import check_value
from gateway.manifest import Feature, Manifest
from gateway.reviews import GROUNDS, POINT_OF_VIEW_MAX_LENGTH
from gateway.text import forbidden_character

PREFIX = "corrected."


@dataclass
class ReviewForm:
    """What the person sent (to show it again) and what is wrong with it, by field id."""

    point_of_view: str = ""
    grounds: list[str] = field(default_factory=list)
    corrected: dict[str, str] = field(default_factory=dict)  # as typed, to show again
    language: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # field id -> message
    values: dict[str, Any] = field(default_factory=dict)  # parsed corrected values

    @property
    def valid(self) -> bool:
        return not self.errors


def mutable_features(manifest: Manifest) -> list[Feature]:
    """The features a person may offer corrected values for (the manifest marks them mutable)."""
    return [f for f in manifest.features if f.mutable]


def _number(feature: Feature, text: str) -> tuple[float | int | None, str | None]:
    try:
        value = float(text.replace(",", ".").replace("\u00a0", "").replace(" ", ""))
    except ValueError:
        return None, _("Enter a number.")
    if not math.isfinite(value):
        return None, _("Enter a number.")
    if feature.integer:
        if not value.is_integer():
            return None, _("Enter a whole number.")
        return int(value), None
    return value, None


def _range_message(feature: Feature) -> str:
    low = f"{feature.min:g}" if feature.min is not None else None
    high = f"{feature.max:g}" if feature.max is not None else None
    if low is not None and high is not None:
        return _("Enter a value from %(min)s to %(max)s.", min=low, max=high)
    if low is not None:
        return _("Enter a value of at least %(min)s.", min=low)
    return _("Enter a value of at most %(max)s.", max=high)


def parse(form: MultiDict[str, str], manifest: Manifest, languages: list[str]) -> ReviewForm:
    """Read and check the posted form against the manifest (messages in the current language)."""
    result = ReviewForm(
        point_of_view=(form.get("point_of_view") or "").strip(),
        grounds=form.getlist("contest_grounds"),
        language=form.get("language") or "",
    )
    if not result.point_of_view:
        result.errors["point_of_view"] = _("Write your point of view: what is wrong with the decision and why.")
    elif forbidden_character(result.point_of_view, multiline=True) is not None:
        result.errors["point_of_view"] = _("Your point of view contains a control character that cannot be kept. "
                                           "Retype it as plain text.")
    elif len(result.point_of_view) > POINT_OF_VIEW_MAX_LENGTH:
        result.errors["point_of_view"] = _("Your point of view is too long: at most %(max)s characters, you wrote %(count)s.",
                                           max=POINT_OF_VIEW_MAX_LENGTH, count=len(result.point_of_view))
    if not result.grounds:
        result.errors["contest_grounds"] = _("Choose at least one reason.")
    elif any(g not in GROUNDS for g in result.grounds) or len(set(result.grounds)) != len(result.grounds):
        result.errors["contest_grounds"] = _("Choose reasons from the list only.")
    if result.language not in languages:
        result.errors["language"] = _("Choose a language from the list.")

    mutable = {f.name: f for f in mutable_features(manifest)}
    for key in form:
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        text = (form.get(key) or "").strip()
        if name not in mutable:
            # Not offered by the form (a withheld or fixed input, or no such input): never recorded.
            result.errors["corrected"] = _("Only the values offered in this form can be corrected.")
            continue
        result.corrected[name] = text
        if text == "":
            continue  # no change
        feature = mutable[name]
        value: Any
        problem: str | None = None
        if feature.type == "number":
            value, problem = _number(feature, text)
            if problem is None and check_value(feature, value, name) is not None:
                problem = _range_message(feature)
        elif feature.type == "category":
            value = text
            if check_value(feature, value, name) is not None:
                problem = _("Choose a value from the list.")
        else:
            value = {"true": True, "false": False}.get(text)
            if value is None:
                problem = _("Choose a value from the list.")
        if problem:
            result.errors[f"corrected-{name}"] = problem
        else:
            result.values[name] = value
    return result
