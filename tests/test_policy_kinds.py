"""More than yes/no: the multi-class and regression examples end to end (decision, notice, explanation in
kk/ru/en), and the policy kinds as one closed, validated set."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest
import skops.io as sio
import sqlalchemy as sa

from gateway.extensions import db
from gateway.jobs.explain import ExplainKind
from gateway.manifest import Manifest, load_manifest
from gateway.notifications.render import Job, message_for
from tests.conftest import Gateway
from tests.support.citizens import notice_token
from tests.support.registration import SERVED_AS, register
from tests.web.support import text

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("kk", "ru", "en")


def _kinds_module() -> Any:
    spec = importlib.util.spec_from_file_location("more_kinds_train", ROOT / "examples" / "more_kinds" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both examples trained once per session; their manifest paths by name."""
    trained: dict[str, Path] = _kinds_module().train(tmp_path_factory.mktemp("kinds"))
    return trained


def _register(gw: Gateway, path: Path) -> tuple[Manifest, Any, pd.DataFrame]:
    # The examples inherit the German example's classification (high risk, adverse outcomes confirmed by an
    # officer first); served like the shared fixture's model, every outcome is notified at once.
    manifest, folder = load_manifest(path)
    manifest = manifest.model_copy(update=SERVED_AS)
    assert manifest.artifact and manifest.explanation.background
    artifact = (folder / manifest.artifact).read_bytes()
    background = (folder / manifest.explanation.background).read_bytes()
    resp = register(gw.client, gw.auth("admin"), manifest.model_dump(mode="json"), artifact, background)
    assert resp.status_code == 201, resp.get_json()
    pipe = sio.loads(artifact, trusted=["sklearn.tree._tree.Tree"])
    return manifest, pipe, pd.read_csv(folder / manifest.explanation.background)


def _notice_texts(gw: Gateway, decision_id: str) -> dict[str, str]:
    """The decision notice rendered in each language, as the dispatcher renders it."""
    with gw.app.app_context():
        row = db.session.execute(sa.text("SELECT id, kind, channel, attempts, created_at FROM notifications "
                                         "WHERE decision_id = :d AND kind = 'decision_notice' ORDER BY channel"),
                                 {"d": decision_id}).first()
        assert row is not None
        created = row.created_at if isinstance(row.created_at, dt.datetime) else dt.datetime.fromisoformat(row.created_at)
        return {lang: message_for(Job(row.id, decision_id, row.kind, row.channel, lang, 0, created)).text
                for lang in LANGS}


def _pages(gw: Gateway, did: str) -> dict[str, tuple[str, str]]:
    """The person's decision and explanation pages in each language, opened from the notice's link."""
    browser = gw.app.test_client()
    assert browser.get(f"/d/{did}?token={notice_token(gw, did)}").status_code == 303
    found = {}
    for lang in LANGS:
        decision, explanation = (browser.get(f"/d/{did}{page}?lang={lang}") for page in ("", "/explanation"))
        assert decision.status_code == 200 and explanation.status_code == 200, lang
        found[lang] = (text(decision), text(explanation))
    return found


def _plain(value: str) -> str:
    return value.replace("\xa0", " ").replace("\u202f", " ")


def _explanation(gw: Gateway, did: str, lang: str) -> Any:
    return gw.client.get(f"/v1/decisions/{did}/explanation?lang={lang}", headers=gw.auth("agency_a"))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_multiclass_decides_the_most_probable_tier_and_explains_its_probability(gateway: Gateway,
                                                                              kinds: dict[str, Path]) -> None:
    manifest, pipe, _ = _register(gateway, kinds["german-credit-tiers"])
    names = [f.name for f in manifest.features]
    seen: set[str] = set()
    for change in ({}, {"duration_months": 6, "checking_status": "no_account"}, {"duration_months": 48}):
        body = {**gateway.sample, "features": {**gateway.sample["features"], **change}}
        resp = gateway.decide(body, model="german-credit-tiers")
        assert resp.status_code == 201, resp.get_json()
        decided = resp.get_json()
        proba = pipe.predict_proba(pd.DataFrame([body["features"]])[names])[0]
        k = int(np.argmax(proba))
        outcome = {"low": "approved", "medium": "conditional", "high": "declined"}[pipe.classes_[k]]
        assert decided["outcome"] == outcome and decided["score"] == pytest.approx(proba[k], abs=1e-12)
        assert decided["adverse"] is (outcome != "approved")
        seen.add(outcome)
        # exact, in the transaction: ready at once, explaining the decided tier's probability
        texts = {lang: _explanation(gateway, decided["decision_id"], lang).get_json() for lang in LANGS}
        en = texts["en"]
        assert en["method"] == "tree_shap_interventional_grouped" and en["output_space"] == "probability"
        assert en["output"] == pytest.approx(decided["score"], abs=1e-12)
        with gateway.app.app_context():
            attributions = db.session.execute(sa.text("SELECT attributions FROM explanations WHERE decision_id = :d"),
                                              {"d": decided["decision_id"]}).scalar_one()
        attributions = attributions if isinstance(attributions, dict) else __import__("json").loads(attributions)
        assert abs(en["base_value"] + sum(attributions.values()) - decided["score"]) <= 1e-6
        if decided["adverse"]:  # recourse searches across one threshold: this kind's row says it has no options
            for lang in LANGS:
                found = gateway.client.get(f"/v1/decisions/{decided['decision_id']}/recourse?lang={lang}",
                                           headers=gateway.auth("agency_a"))
                assert found.status_code == 200, found.get_json()
                rec = found.get_json()
                assert (rec["status"], rec["reason"], rec["options"]) == ("ready", "policy_kind_unsupported", []), rec
                assert rec["text"]["none"] and rec["text"]["none"] != rec["text"]["scope"], rec["text"]
        label = manifest.policy.outcome_labels[outcome]  # type: ignore[index]
        assert f"the probability of this outcome «{label.en}»" in en["text"]["summary"]
        assert f"вероятность этого исхода «{label.ru}»" in texts["ru"]["text"]["summary"]
        assert f"осы «{label.kk}» нәтижесінің ықтималдығын" in texts["kk"]["text"]["summary"]
        notices = _notice_texts(gateway, decided["decision_id"])
        pages = _pages(gateway, decided["decision_id"])
        for lang in LANGS:
            assert getattr(label, lang) in notices[lang], lang
            assert getattr(label, lang) in pages[lang][0], lang
            assert texts[lang]["text"]["summary"].replace("\xa0", " ").replace("\u202f", " ") in pages[lang][1], lang
    assert len(seen) >= 2  # the examples reach different tiers: each explained by its own class's explainer
    # the register's "main factors in general": each background row explained for its own decided tier
    page = gateway.client.get("/register/german-credit-tiers/1.0.0?lang=en")
    assert page.status_code == 200
    factors = gateway.app.extensions["gateway.global_factors"]
    assert len(factors) == 1 and all(v >= 0 for v in next(iter(factors.values())).values())


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_regression_decides_by_band_and_explains_in_the_models_units(gateway: Gateway, kinds: dict[str, Path]) -> None:
    manifest, pipe, _ = _register(gateway, kinds["german-credit-amount"])
    names = [f.name for f in manifest.features]
    features = {k: v for k, v in gateway.sample["features"].items() if k != "credit_amount"}
    resp = gateway.decide({**gateway.sample, "features": features}, model="german-credit-amount")
    assert resp.status_code == 201, resp.get_json()
    decided = resp.get_json()
    amount = float(pipe.predict(pd.DataFrame([features])[names])[0])
    assert decided["score"] == pytest.approx(amount, rel=1e-12)
    band = "small" if amount < 1500 else "standard" if amount < 4000 else "large"
    assert decided["outcome"] == band and decided["adverse"] is (band == "small")
    did = decided["decision_id"]
    assert _explanation(gateway, did, "en").status_code == 202  # model-agnostic: the explain job computes it
    assert ExplainKind(gateway.app).run_once() == 1
    texts = {lang: _explanation(gateway, did, lang).get_json() for lang in LANGS}
    en = texts["en"]
    assert en["method"] == "permutation_shap_estimate" and en["output_space"] == "value"
    assert en["output"] == pytest.approx(amount, rel=1e-9)
    assert en["additivity_error"] <= 1e-6 * amount
    assert f"The system computed the amount {amount:,.0f} DM" in en["text"]["summary"]
    assert all(("raised the amount by about" in s or "lowered the amount by about" in s) and " DM, ± " in s
               for s in en["text"]["factors"]), en["text"]["factors"]
    assert all(("увеличило сумму на" in s or "уменьшило сумму на" in s) and "DM" in s for s in texts["ru"]["text"]["factors"])
    assert all(("соманы" in s) and "DM" in s for s in texts["kk"]["text"]["factors"])
    assert "DM" in texts["ru"]["text"]["baseline"]
    label = manifest.policy.outcome_labels[band]  # type: ignore[index]
    notices = _notice_texts(gateway, did)
    pages = _pages(gateway, did)
    said = {"kk": "Жүйе есептеген сома", "ru": "Сумма, рассчитанная системой", "en": "Amount computed by the system"}
    for lang in LANGS:
        assert getattr(label, lang) in notices[lang], lang
        assert getattr(label, lang) in pages[lang][0], lang
        shown = manifest.policy.amount(amount, lang)  # type: ignore[union-attr]
        assert f"{said[lang]}: {shown}" in notices[lang], lang
        assert f"{said[lang]} {_plain(shown)}" in pages[lang][0], lang
        assert texts[lang]["text"]["factors"][0].replace("\xa0", " ").replace("\u202f", " ") in pages[lang][1], lang


def test_policy_kinds_are_one_closed_validated_set(kinds: dict[str, Path]) -> None:
    manifest, _ = load_manifest(kinds["german-credit-amount"])
    data = manifest.model_dump(mode="json")
    assert data["policy"]["bands"][-1][0] is None  # the open band is stored as null (no infinity in JSON)
    assert Manifest.model_validate(data) == manifest
    for policy, message in [
        ({"kind": "tiers"}, "policy.kind must be one of binary, multiclass, regression"),
        (data["policy"] | {"bands": [[4000.0, "a"], [1500.0, "b"], [None, "c"]]}, "strictly increasing"),
        (data["policy"] | {"bands": [[1500.0, "a"], [4000.0, "b"]]}, "the last band is open above"),
        (data["policy"] | {"adverse_outcomes": ["tiny"]}, r"adverse_outcomes \['tiny'\] are not outcomes"),
        ({"kind": "multiclass", "classes": [{"class": "a", "outcome": "x"}, {"class": "b", "outcome": "x"},
                                            {"class": "c", "outcome": "z"}]}, "each class needs its own outcome"),
        ({"kind": "multiclass", "classes": [{"class": "a", "outcome": "x"}, {"class": "b", "outcome": "y"}]},
         "at least 3 items"),
    ]:
        with pytest.raises(pydantic.ValidationError, match=message):
            Manifest.model_validate(data | {"policy": policy})
    remote = {k: v for k, v in data.items() if k not in ("artifact", "sha256")} | {
        "adapter": "mlflow", "source": {"protocol": "mlflow", "url": "https://models.example.kz"}}
    # a remote regression model reads the server's values (tests/remote/test_remote_kinds.py has the rest)
    assert Manifest.model_validate(remote).source.output == "predict"  # type: ignore[union-attr]


def test_a_multiclass_policy_must_name_the_models_classes(gateway: Gateway, kinds: dict[str, Path]) -> None:
    manifest, folder = load_manifest(kinds["german-credit-tiers"])
    body = manifest.model_dump(mode="json")
    body["name"] = "tiers-wrong"
    body["policy"]["classes"][2]["class"] = "severe"
    artifact = (folder / manifest.artifact).read_bytes()  # type: ignore[operator]
    background = (folder / manifest.explanation.background).read_bytes()  # type: ignore[operator]
    resp = register(gateway.client, gateway.auth("admin"), body, artifact, background)
    assert resp.status_code == 422
    assert "are not the model's classes" in resp.get_json()["error"]["message"]


def test_the_readmes_policy_examples_are_valid() -> None:
    """Every manifest fragment with a [policy] in README.md is a valid policy of the kind it shows."""
    import re
    import tomllib

    from pydantic import TypeAdapter

    from gateway.manifest import AnyPolicy

    blocks = [b for b in re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if "[policy]" in b]
    kinds = [TypeAdapter(AnyPolicy).validate_python(tomllib.loads(block)["policy"]).kind for block in blocks]
    assert {"binary", "multiclass", "regression"} <= set(kinds), kinds


def test_a_version_stored_before_policy_kinds_registers_again_as_the_same(gateway: Gateway, german_manifest: Path) -> None:
    """A manifest stored without policy.kind (before kinds existed) is the same manifest as today's binary one."""
    import json

    with gateway.app.app_context():
        stored = db.session.execute(sa.text("SELECT id, manifest FROM scoring_models WHERE name = 'german-credit'")).one()
        old = stored.manifest if isinstance(stored.manifest, dict) else json.loads(stored.manifest)
        assert old["policy"].pop("kind") == "binary"
        db.session.execute(sa.text("UPDATE scoring_models SET manifest = :m WHERE id = :i"),
                           {"m": json.dumps(old), "i": stored.id})
        db.session.commit()
    manifest, folder = load_manifest(german_manifest)
    manifest = manifest.model_copy(update=SERVED_AS)  # as the shared fixture registered it
    assert manifest.artifact and manifest.explanation.background
    again = register(gateway.client, gateway.auth("admin"), manifest.model_dump(mode="json"),
                     (folder / manifest.artifact).read_bytes(), (folder / manifest.explanation.background).read_bytes())
    assert again.status_code == 200 and again.get_json()["created"] is False
