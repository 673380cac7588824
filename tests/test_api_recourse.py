"""Recourse over the API: verified options for adverse decisions, within the manifest, frozen, audited, in kk/ru/en.

Every option is checked the hard way: the changed application is sent as a new decision to the same model
version, which must give the other outcome and the very score the option states.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
import sqlalchemy as sa

from gateway import keystore, recourse
from gateway.audit import canonical_json
from gateway.contacts import committer
from gateway.extensions import db
from gateway.jobs.purge import PurgeKind
from gateway.models import ScoringModel
from gateway.settings import current_settings
from tests.conftest import Gateway, load_train_module
from tests.support.citizens import notice_token

pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True),
    pytest.mark.gateway_config(RATELIMIT_PER_CALLER="100000/minute", RATELIMIT_EXPLANATIONS="100000/minute"),
]

NEVER = {"age", "credit_history", "num_dependents"}  # immutable
WITHHELD = {"other_installment_plans", "existing_credits"}  # the example withholds them


@pytest.fixture(scope="module")
def applications() -> list[dict[str, Any]]:
    """The first 60 applications of the German credit data, as JSON feature values."""
    X, _ = load_train_module().load_data()
    rows = []
    for record in X.head(60).to_dict("records"):
        rows.append({k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()})
    return rows


def decide(gw: Gateway, features: dict[str, Any], lang: str = "kk") -> dict[str, Any]:
    body = copy.deepcopy(gw.sample)
    body["features"] = features
    body["subject"]["language"] = lang
    resp = gw.decide(body)
    assert resp.status_code == 201, resp.get_json()
    found: dict[str, Any] = resp.get_json()
    return found


def options_of(gw: Gateway, did: str, lang: str | None = None, who: str = "agency_a") -> Any:
    query = f"?lang={lang}" if lang else ""
    return gw.client.get(f"/v1/decisions/{did}/recourse{query}", headers=gw.auth(who))


def register_variant(gw: Gateway, version: str, change: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Register (active) the example model's artifact under another version whose features differ by `change`."""
    with gw.app.app_context():
        manifest = copy.deepcopy(db.session.query(ScoringModel).filter_by(name="german-credit").first().manifest)
    manifest["version"] = version
    for feature in manifest["features"]:
        feature.update(change.get(feature["name"], {}))
    resp = gw.client.post("/v1/models", json=manifest | {"activate": True}, headers=gw.auth("admin"))
    assert resp.status_code == 201, resp.get_json()
    return manifest


def test_options_flip_the_outcome_and_keep_to_the_manifest(gateway: Gateway, applications: list[dict[str, Any]]) -> None:
    # Savings withheld, checking status immutable, housing sensitive (though mutable; a sensitive input needs its
    # legal basis under the AI Law's classification), the loan's duration only shorter, its amount only smaller.
    manifest = register_variant(gateway, "1.1.0", {
        "savings": {"disclosure": "withhold"}, "checking_status": {"mutable": False},
        "housing": {"sensitive": "other", "mutable": True,
                    "legal_basis": "Example: the applicant's consent (Law on Personal Data and Their Protection)"},
        "duration_months": {"direction": "decrease"}, "credit_amount": {"direction": "decrease"},
    })
    features = {f["name"]: f for f in manifest["features"]}
    offered = {name for name, f in features.items()
               if f.get("mutable", True) and not f.get("sensitive") and f.get("disclosure") != "withhold"}
    assert offered.isdisjoint(NEVER | WITHHELD | {"savings", "checking_status", "housing"}) and len(offered) == 10
    adverse = with_options = 0
    changed_features: set[str] = set()
    for application in applications:
        created = decide(gateway, application)
        if not created["adverse"]:
            assert options_of(gateway, created["decision_id"]).get_json()["status"] == "not_adverse"
            continue
        adverse += 1
        body = options_of(gateway, created["decision_id"], "en").get_json()
        assert body["status"] == "ready" and len(body["options"]) <= 3
        with_options += bool(body["options"])
        assert [o["cost"] for o in body["options"]] == sorted(o["cost"] for o in body["options"])
        sets = [frozenset(c["feature"] for c in o["changes"]) for o in body["options"]]
        assert len(set(sets)) == len(sets)  # diverse: each option changes another set of features
        for option in body["options"]:
            changes = {c["feature"]: c["to"] for c in option["changes"]}
            changed_features |= set(changes)
            assert set(changes) <= offered and 1 <= len(changes) <= 2
            for name, value in changes.items():
                spec, before = features[name], application[name]
                if spec["type"] == "number":
                    assert spec["min"] <= value <= spec["max"] and value != before
                    assert float(value).is_integer() if spec.get("integer") else True
                    if spec.get("direction") == "decrease":
                        assert value < before
                else:
                    assert value in spec["categories"] and value != before
            # Verified by the model that decided: the changed application gets the other outcome, same score.
            again = decide(gateway, application | changes)
            assert again["outcome"] == option["outcome"] == "approved" and not again["adverse"]
            assert again["score"] == pytest.approx(option["score"], abs=1e-12)
    assert adverse >= 12 and with_options >= adverse * 0.8, (adverse, with_options)
    assert "duration_months" in changed_features  # numbers are proposed too, not only categories


def test_frozen_audited_and_written_in_kk_ru_en(gateway: Gateway, applications: list[dict[str, Any]]) -> None:
    # The data's 60th application (a 36-month loan) is declined; one of its options is a shorter loan alone.
    created = decide(gateway, applications[59])
    did = created["decision_id"]
    assert created["adverse"]
    views = {lang: options_of(gateway, did, lang) for lang in ("kk", "ru", "en")}
    assert all(v.status_code == 200 for v in views.values())
    assert options_of(gateway, did, "ru").data == views["ru"].data  # stored, rendered the same every time
    bodies = {lang: v.get_json() for lang, v in views.items()}
    en = bodies["en"]
    assert en["options"], en
    duration = [o for o in en["options"] if [c["feature"] for c in o["changes"]] == ["duration_months"]]
    assert duration and duration[0]["text"] == ("If “Loan duration” were 12 months instead of 36 months, the outcome "
                                                 "would have been: Approved.")
    words = {"kk": ("Егер", "шешім мынадай болар еді", "Мақұлданды"), "ru": ("Если бы", "решение было бы таким",
                                                                            "Одобрено")}
    for lang, (opening, middle, outcome) in words.items():
        body = bodies[lang]
        assert [o["changes"] for o in body["options"]] != [] and body["digest"] == en["digest"]
        for option, sentence in zip(body["options"], body["text"]["options"], strict=True):
            assert option["text"] == sentence and sentence.startswith(opening) and middle in sentence
            assert outcome in sentence and "instead of" not in sentence and "If " not in sentence
            for change in option["changes"]:
                assert change["label"] in sentence and change["proposed"] in sentence and change["current"] in sentence
        assert all(body["text"][k] for k in ("heading", "intro", "scope"))
        assert body["text"]["heading"] != en["text"]["heading"] and body["text"]["intro"] != en["text"]["intro"]
    # The stored row: its digest is the record's, and the decision's audit leaf pins it.
    with gateway.app.app_context():
        row = db.session.execute(sa.text("SELECT * FROM recourse WHERE decision_id = :d"), {"d": did}).mappings().one()
        leaf = json.loads(db.session.execute(sa.text("SELECT record FROM log_leaves WHERE kind = 'decision:recorded' "
                                                     "AND object_id = :d"), {"d": did}).scalar_one())
        settings = current_settings()
        wrapped = keystore.wrapped(did)  # in the key store, a database of its own
        commit = committer(settings.contact_key, settings.subject_key, did, wrapped)
    values = {k: (json.loads(row[k]) if isinstance(row[k], str) and k in ("options", "parameters") else row[k])
              for k in ("method", "options", "reason", "parameters")}
    # A commitment keyed by the decision's data key (the options hold the person's values), never a plain hash.
    assert row["status"] == "ready" and row["attempts"] == 0 and row["digest"] == recourse.digest(did, values, commit)
    plain = recourse.digest(did, values, lambda v: hashlib.sha256(canonical_json(v).encode()).hexdigest())
    assert len(row["digest"]) == 64 and row["digest"] != plain
    assert leaf["recourse"] == {"method": "verified_grid_search", "digest": row["digest"],
                                "options": len(en["options"])}
    assert en["digest"] == row["digest"]
    # Reads are access events; the person reads their own; another agency gets the 404 of a missing decision.
    citizen = gateway.client.get(f"/v1/decisions/{did}/recourse",
                                 headers={"Authorization": f"Bearer {notice_token(gateway, did)}"})
    assert citizen.status_code == 200 and citizen.get_json()["language"] == "kk"
    assert options_of(gateway, did, who="agency_b").status_code == 404
    with gateway.app.app_context():
        reads = db.session.execute(sa.text("SELECT count(*) FROM access_events WHERE decision_id = :d AND "
                                           "what = 'recourse'"), {"d": did}).scalar_one()
    assert reads == 5  # kk, ru, en, ru again, the person: the 404 is no read


def test_a_favourable_decision_has_no_options_and_says_why(gateway: Gateway) -> None:
    first = decide(gateway, gateway.sample["features"])
    option = options_of(gateway, first["decision_id"]).get_json()["options"][0]
    approved = decide(gateway, gateway.sample["features"] | {c["feature"]: c["to"] for c in option["changes"]}, "ru")
    assert not approved["adverse"]
    resp = options_of(gateway, approved["decision_id"])
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "not_adverse" and body["reason"] == "not_adverse" and body["options"] == []
    assert body["text"]["none"] == "Это решение не является для вас неблагоприятным, поэтому ничего менять не нужно."
    assert body["digest"] is None and gateway.count("recourse") == 1  # only the adverse decision has a row
    view = gateway.client.get(f"/v1/decisions/{approved['decision_id']}", headers=gateway.auth("agency_a")).get_json()
    assert view["recourse"] == {"status": "not_adverse", "options": 0, "reason": None, "attempts": 0}
    first_view = gateway.client.get(f"/v1/decisions/{first['decision_id']}", headers=gateway.auth("agency_a")).get_json()
    assert first_view["recourse"]["status"] == "ready" and first_view["recourse"]["options"] >= 1


def test_a_model_with_nothing_to_change_says_so(gateway: Gateway) -> None:
    register_variant(gateway, "1.2.0", {name: {"mutable": False} for name in load_train_module().COLUMNS})
    created = decide(gateway, gateway.sample["features"], "en")
    body = options_of(gateway, created["decision_id"]).get_json()
    assert body["status"] == "ready" and body["reason"] == "no_mutable_features" and body["options"] == []
    assert body["text"]["none"] == "The system uses no information about you that you could change."


def test_bad_recourse_metadata_is_refused_naming_the_feature(gateway: Gateway) -> None:
    with gateway.app.app_context():
        manifest = copy.deepcopy(db.session.query(ScoringModel).first().manifest)
    cases = {
        ("duration_months", "step", 0): "feature 'duration_months': step must be a positive number, got 0",
        ("duration_months", "step", 2.5): "feature 'duration_months': step must be a whole number for an integer "
                                          "feature, got 2.5",
        ("installment_rate", "step", 5): "feature 'installment_rate': step 5 is larger than the range [1, 4]",
        ("credit_amount", "scale", -1): "feature 'credit_amount': scale must be a positive number, got -1",
        ("purpose", "direction", "increase"): "feature 'purpose': recourse settings (direction) apply to number features only",
        ("age", "direction", "older"): "direction",
    }
    for (name, key, value), message in cases.items():
        body = copy.deepcopy(manifest) | {"version": "9.9.9"}
        next(f for f in body["features"] if f["name"] == name)[key] = value
        resp = gateway.client.post("/v1/models", json=body, headers=gateway.auth("admin"))
        assert resp.status_code == 422, (name, key, value)
        assert message in json.dumps(resp.get_json(), ensure_ascii=False), resp.get_json()


def test_a_decision_from_before_recourse_says_none_was_computed(gateway: Gateway) -> None:
    did = decide(gateway, gateway.sample["features"], "en")["decision_id"]
    with gateway.app.app_context():  # as a decision recorded before the recourse table existed
        db.session.execute(sa.text("DELETE FROM recourse WHERE decision_id = :d"), {"d": did})
        db.session.commit()
    body = options_of(gateway, did).get_json()
    assert body["status"] == "unavailable" and body["reason"] == "not_computed" and body["options"] == []
    assert body["text"]["none"].startswith("No options to change this decision were computed")


@pytest.mark.gateway_config(RATELIMIT_EXPLANATIONS="3/minute")
def test_recourse_counts_in_the_explanations_rate_limit(gateway: Gateway) -> None:
    did = decide(gateway, gateway.sample["features"])["decision_id"]
    headers = gateway.auth("agency_a")
    assert gateway.client.get(f"/v1/decisions/{did}/explanation", headers=headers).status_code == 200
    assert [options_of(gateway, did).status_code for _ in range(3)] == [200, 200, 429]


def test_the_retention_purge_deletes_the_options_and_keeps_the_proof(gateway: Gateway) -> None:
    did = decide(gateway, gateway.sample["features"])["decision_id"]
    assert options_of(gateway, did).get_json()["options"]
    with gateway.app.app_context():
        digest = db.session.execute(sa.text("SELECT digest FROM recourse WHERE decision_id = :d"), {"d": did}).scalar()
    kind = PurgeKind(gateway.app, settings=PurgeKind.read_settings(gateway.app.config))
    assert kind.run_once(dt.datetime.now(dt.UTC) + dt.timedelta(days=366)) == 1
    with gateway.app.app_context():
        row = db.session.execute(sa.text("SELECT options, digest FROM recourse WHERE decision_id = :d"),
                                 {"d": did}).one()
        purged = json.loads(db.session.execute(sa.text("SELECT record FROM log_leaves WHERE kind = 'decision:purged' "
                                                       "AND object_id = :d"), {"d": did}).scalar_one())
    assert row.options is None and row.digest == digest  # the keyed commitment stays, its key is destroyed
    assert "recourse.options" in purged["removed"]
    resp = options_of(gateway, did)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "data_purged"
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a"))
    assert view.status_code == 200 and view.get_json()["recourse"]["status"] == "purged"
