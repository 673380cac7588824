"""Manifest validation and the decision policy."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.manifest import Manifest, Policy, load_manifest

LABELS = {"kk": "Жасы", "ru": "Возраст", "en": "Age"}
TEXT = {"kk": "Мәтін", "ru": "Текст", "en": "Text"}


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "demo",
        "version": "1",
        "adapter": "skops",
        "sha256": "0" * 64,
        "features": [
            {"name": "age", "type": "number", "labels": LABELS, "min": 18, "max": 100},
            {"name": "colour", "type": "category", "labels": LABELS, "categories": ["red", "blue"]},
        ],
        "policy": {"positive_class": "good", "threshold": 0.5, "outcome_above": "approved",
                   "outcome_below": "declined", "adverse_outcome": "declined"},
        "notice": {k: TEXT for k in ("purpose", "functions", "limitations", "owner", "legal_basis")} | {"contact": "a@b.kz"},
        "risk_class": "minimal",
    }
    data.update(overrides)
    return copy.deepcopy(data)


def errors_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Manifest.model_validate(data)
    return str(info.value)


def test_example_manifest_is_valid(german_manifest: Path) -> None:
    manifest, folder = load_manifest(german_manifest)
    assert manifest.name == "german-credit"
    assert (folder / manifest.artifact).exists()  # type: ignore[operator]
    disclosures = [f.disclosure for f in manifest.features]
    assert disclosures.count("withhold") >= 2 and "band" in disclosures


def test_json_and_toml_manifests_load_alike(german_manifest: Path, tmp_path: Path) -> None:
    manifest, _ = load_manifest(german_manifest)
    as_json = tmp_path / "m.json"
    as_json.write_text(json.dumps(manifest.model_dump(mode="json")))
    assert load_manifest(as_json)[0] == manifest


def test_minimal_manifest_is_valid() -> None:
    assert Manifest.model_validate(minimal()).explanation.max_factors == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["features"].append(copy.deepcopy(d["features"][0])), "duplicate names ['age']"),
        (lambda d: d["features"][0].update(min=10, max=5), "min 10.0 is greater than max 5.0"),
        (lambda d: d["features"][1].pop("categories"), "needs a non-empty 'categories'"),
        (lambda d: d["features"][1].update(categories=["a", "a"]), "categories are not unique"),
        (lambda d: d["features"][0].update(categories=["x"]), "a number has no categories"),
        (lambda d: d["features"][1].update(category_labels={"red": LABELS}), "category_labels lacks ['blue']"),
        (lambda d: d["features"][0].update(disclosure="withhold"), "confidential_ground is required"),
        (lambda d: d["features"][0].update(disclosure="band"), "banded without 'bands'"),
        (lambda d: d["features"][0].update(bands=[50, 30]), "strictly increasing"),
        (lambda d: d["features"][0].update(bands=[10, 30]), "not inside (min, max)"),
        (lambda d: d["features"][0].update(name="Age!"), "pattern"),
        (lambda d: d["features"][0]["labels"].pop("kk"), "kk"),
        (lambda d: d["policy"].update(adverse_outcome="maybe"), "adverse_outcome must be"),
        (lambda d: d["policy"].update(outcome_below="approved"), "must differ"),
        (lambda d: d["policy"].update(threshold=1.0), "less than 1"),
        (lambda d: d.update(risk_class="high"), "needs risk_assessment"),
        (lambda d: d.update(sha256="abc"), "pattern"),
        (lambda d: d.update(surprise=1), "Extra inputs are not permitted"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(change: Any, message: str) -> None:
    data = minimal()
    change(data)
    assert message in errors_of(data)


def test_risk_assessment_date_accepts_toml_dates_and_iso_strings() -> None:
    from_toml = tomllib.loads("risk_assessment_date = 2026-11-01")["risk_assessment_date"]
    a = Manifest.model_validate(minimal(risk_class="high", risk_assessment_date=from_toml))
    b = Manifest.model_validate(minimal(risk_class="high", risk_assessment_date="2026-11-01"))
    assert a.risk_assessment_date == b.risk_assessment_date
    assert "date" in errors_of(minimal(risk_class="high", risk_assessment_date="2026-13-45"))


@pytest.mark.parametrize(
    ("score", "outcome", "adverse"),
    [(0.0, "declined", True), (0.4999999, "declined", True), (0.5, "approved", False), (1.0, "approved", False)],
)
def test_policy_threshold_is_inclusive_above(score: float, outcome: str, adverse: bool) -> None:
    policy = Policy.model_validate(minimal()["policy"])
    assert policy.decide(score) == (outcome, adverse)


def test_policy_without_adverse_outcome_is_never_adverse() -> None:
    policy = Policy(positive_class=1, threshold=0.3, outcome_above="eligible", outcome_below="ineligible")
    assert policy.decide(0.1) == ("ineligible", False)
    assert policy.decide(0.3) == ("eligible", False)


def test_recourse_metadata_defaults_and_who_is_offered() -> None:
    features = [
        {"name": "months", "type": "number", "labels": LABELS, "min": 1, "max": 120, "integer": True},
        {"name": "rate", "type": "number", "labels": LABELS, "min": 0, "max": 1, "step": 0.05, "scale": 0.1,
         "direction": "decrease"},
        {"name": "free", "type": "number", "labels": LABELS},
        {"name": "age", "type": "number", "labels": LABELS, "min": 18, "max": 100, "mutable": False,
         "direction": "increase"},
        {"name": "group", "type": "category", "labels": LABELS, "categories": ["a", "b"], "sensitive": "other"},
        {"name": "secret", "type": "category", "labels": LABELS, "categories": ["a", "b"], "disclosure": "withhold"},
    ]
    m = Manifest.model_validate(minimal(features=features, explanation={"confidential_ground": TEXT}))
    assert [m.feature(n).recourse_step() for n in ("months", "rate", "free")] == [6.0, 0.05, 1.0]
    assert m.feature("rate").scale == 0.1 and m.feature("rate").direction == "decrease"
    assert [f.name for f in m.features if f.offered_for_recourse()] == ["months", "rate", "free"]


@pytest.mark.parametrize(("change", "message"), [
    ({"step": 0}, "feature 'age': step must be a positive number, got 0"),
    ({"scale": float("inf")}, "feature 'age': scale must be a positive number, got inf"),
    ({"step": 200}, "feature 'age': step 200 is larger than the range [18, 100]"),
    ({"step": 1.5, "integer": True}, "feature 'age': step must be a whole number for an integer feature, got 1.5"),
    ({"direction": "sideways"}, "direction"),
])
def test_bad_recourse_metadata_is_refused(change: dict[str, Any], message: str) -> None:
    data = minimal()
    data["features"][0].update(change)
    assert message in errors_of(data)


def test_recourse_metadata_on_a_category_is_refused() -> None:
    data = minimal()
    data["features"][1]["step"] = 1
    assert "feature 'colour': recourse settings (step) apply to number features only" in errors_of(data)
