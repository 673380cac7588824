"""The AI Law's risk regime at registration: each refusal names its rule and article; the example complies."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest

from gateway import registry
from gateway.errors import ModelUnavailable, ValidationFailed
from gateway.manifest import PROHIBITED_PRACTICES, Manifest, classification_problems, load_manifest
from tests.conftest import Gateway
from tests.support.registration import CLASSIFIED

LABELS = {"kk": "Жасы", "ru": "Возраст", "en": "Age"}
TEXT = {"kk": "Мәтін", "ru": "Текст", "en": "Text"}
ASSESSMENT = {"date": "2026-11-01", "summary": "assessed", "document_sha256": "ab" * 32}


def manifest(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "demo", "version": "1", "adapter": "skops", "sha256": "0" * 64,
        "features": [{"name": "age", "type": "number", "labels": LABELS, "min": 18, "max": 100}],
        "policy": {"positive_class": "good", "threshold": 0.5, "outcome_above": "approved",
                   "outcome_below": "declined", "adverse_outcome": "declined"},
        "notice": {k: TEXT for k in ("purpose", "functions", "limitations", "owner", "legal_basis")} | {"contact": "a@b.kz"},
        "risk_class": "minimal", **copy.deepcopy(CLASSIFIED),
    }
    data.update(overrides)
    return data


def refusals(data: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The rules a manifest breaks, by rule name (each problem names the field, the rule and the article)."""
    return {p["rule"]: p for p in classification_problems(Manifest.model_validate(data))}


def test_a_complete_classification_is_accepted() -> None:
    assert refusals(manifest()) == {}
    assert refusals(manifest(risk_class="high", autonomy="low", risk_assessment=ASSESSMENT)) == {}
    assert refusals(manifest(risk_class="high", adverse_review_first=True, risk_assessment=ASSESSMENT)) == {}


def test_autonomy_high_is_refused_with_the_reason() -> None:
    found = refusals(manifest(autonomy="high"))
    assert set(found) == {"ai_law_art_17_autonomy_high"}
    assert "Art. 17" in found["ai_law_art_17_autonomy_high"]["message"]
    assert "a person must make the final choice" in found["ai_law_art_17_autonomy_high"]["message"]


def test_an_old_manifest_without_classification_gets_the_migration_message() -> None:
    old = manifest()
    for key in ("autonomy", "purpose_category", "purpose_text", "prohibited_practices"):
        old.pop(key)
    old["role_of_ai"] = "supports_officer"
    found = refusals(old)
    assert set(found) == {"ai_law_art_17_autonomy", "ai_law_art_17_purpose", "ai_law_art_17_3_declaration"}
    assert "'supports_officer' to 'low'" in found["ai_law_art_17_autonomy"]["message"]
    assert "Art. 17(3)" in found["ai_law_art_17_3_declaration"]["message"]
    assert "Art. 5 of the EU AI Act" in found["ai_law_art_17_3_declaration"]["message"]


def test_role_of_ai_follows_autonomy_and_a_contradiction_is_refused() -> None:
    assert Manifest.model_validate(manifest(autonomy="low")).role_of_ai == "supports_officer"
    assert Manifest.model_validate(manifest(autonomy="medium")).role_of_ai == "sole_basis"
    with pytest.raises(ValueError, match="contradicts autonomy"):
        Manifest.model_validate(manifest(autonomy="low", role_of_ai="sole_basis"))


def test_the_purpose_category_is_a_closed_list() -> None:
    with pytest.raises(ValueError, match="purpose_category"):
        Manifest.model_validate(manifest(purpose_category="astrology"))


@pytest.mark.parametrize("practice", sorted(PROHIBITED_PRACTICES))
def test_each_prohibited_capability_declared_is_refused_naming_its_article(practice: str) -> None:
    data = manifest()
    data["prohibited_practices"][practice] = True
    found = refusals(data)
    assert set(found) == {"ai_law_art_17_3_prohibited"}
    problem = found["ai_law_art_17_3_prohibited"]
    assert problem["field"] == f"prohibited_practices.{practice}"
    assert PROHIBITED_PRACTICES[practice] in problem["message"] and "prohibited by" in problem["message"]


@pytest.mark.parametrize("practice", sorted(PROHIBITED_PRACTICES))
def test_each_prohibited_capability_left_undeclared_is_refused(practice: str) -> None:
    data = manifest()
    del data["prohibited_practices"][practice]
    found = refusals(data)
    assert set(found) == {"ai_law_art_17_3_declaration"}
    assert found["ai_law_art_17_3_declaration"]["field"] == f"prohibited_practices.{practice}"
    assert PROHIBITED_PRACTICES[practice] in found["ai_law_art_17_3_declaration"]["message"]


@pytest.mark.parametrize("risk", ["medium", "high"])
def test_medium_and_high_risk_need_a_risk_assessment(risk: str) -> None:
    data = manifest(risk_class=risk, autonomy="low")
    if risk == "high":  # the manifest itself already refuses a high-risk model without any assessment
        with pytest.raises(ValueError, match="needs risk_assessment"):
            Manifest.model_validate(data)
        data["risk_assessment_date"] = "2026-11-01"  # the older bare date is not enough to register
    found = refusals(data)
    assert set(found) == {"ai_law_art_17_risk_assessment"}
    assert "document_sha256" in found["ai_law_art_17_risk_assessment"]["message"]


def test_a_stale_risk_assessment_is_not_served() -> None:
    m = Manifest.model_validate(manifest(risk_class="medium", risk_assessment=ASSESSMENT))
    registry.check_risk_assessment(m, 365, dt.date(2027, 10, 31))
    with pytest.raises(ModelUnavailable, match="older than 365 days") as info:
        registry.check_risk_assessment(m, 365, dt.date(2027, 11, 2))
    assert info.value.code == "risk_assessment_expired"


def test_high_risk_needs_low_autonomy_or_adverse_outcomes_reviewed_first() -> None:
    found = refusals(manifest(risk_class="high", risk_assessment=ASSESSMENT))
    assert set(found) == {"ai_law_art_17_high_risk_oversight"}
    assert "adverse_review_first" in found["ai_law_art_17_high_risk_oversight"]["message"]


def test_a_sensitive_input_needs_a_legal_basis() -> None:
    data = manifest()
    data["features"][0]["sensitive"] = "health"
    found = refusals(data)
    assert set(found) == {"sensitive_input_legal_basis"}
    assert found["sensitive_input_legal_basis"]["field"] == "features.age.legal_basis"
    data["features"][0]["legal_basis"] = "consent under the Law on Personal Data"
    assert refusals(data) == {}


def test_a_protected_attribute_is_never_an_input_of_a_high_risk_model() -> None:
    data = manifest(risk_class="high", autonomy="low", risk_assessment=ASSESSMENT)
    data["features"].append({"name": "sex", "type": "category", "labels": LABELS, "categories": ["f", "m"],
                             "sensitive": "protected_attribute", "legal_basis": "consent"})
    found = refusals(data)
    assert set(found) == {"protected_attribute_high_risk"}
    assert "Art. 17(3)" in found["protected_attribute_high_risk"]["message"]
    assert "monitor_only" in found["protected_attribute_high_risk"]["message"]
    data["features"][-1]["monitor_only"] = True  # collected for fairness monitoring instead: accepted
    m = Manifest.model_validate(data)
    assert [f.name for f in m.features] == ["age"] and [f.name for f in m.monitored] == ["sex"]
    assert classification_problems(m) == []


def test_registration_refuses_over_http_naming_every_rule(gateway: Gateway, german_manifest: Path) -> None:
    m, folder = load_manifest(german_manifest)
    body = m.model_dump(mode="json") | {"version": "7.0.0", "autonomy": "high"}
    body["prohibited_practices"] = {**body["prohibited_practices"], "social_scoring": True}
    resp = gateway.client.post("/v1/models", json=body, headers=gateway.auth("admin"))
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "classification_refused"
    assert {d["rule"] for d in error["details"]} == {"ai_law_art_17_autonomy_high", "ai_law_art_17_3_prohibited"}
    assert "Art. 5(1)(c) of the EU AI Act" in error["message"]
    with gateway.app.app_context(), pytest.raises(ValidationFailed):
        registry.refuse_unclassified(Manifest.model_validate(body))


def test_the_example_model_has_no_sensitive_input(german_manifest: Path) -> None:
    m, folder = load_manifest(german_manifest)
    assert m.risk_class == "high" and m.autonomy == "medium" and m.adverse_review_first
    assert classification_problems(m) == []
    assert [f.name for f in m.features if f.sensitive is not None] == []
    assert not {f.name for f in m.features} & {"personal_status_sex", "foreign_worker", "sex"}
    assert [(f.name, f.sensitive, f.monitor_only) for f in m.monitored] == [("sex", "protected_attribute", True)]
    # The risk assessment names the document it was written in, and the hash is that document's.
    document = Path(__file__).resolve().parents[2] / "examples" / "german_credit" / "risk_assessment.md"
    assert m.risk_assessment is not None
    assert hashlib.sha256(document.read_bytes()).hexdigest() == m.risk_assessment.document_sha256
    # The trained model takes exactly the declared inputs: no protected column reached it.
    header = (folder / str(m.explanation.background)).read_text().splitlines()[0].split(",")
    assert header == [f.name for f in m.features]
