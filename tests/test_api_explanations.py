"""Explanations: frozen at decision time, exact, rendered in kk/ru/en, within confidentiality limits."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shap
import skops.io as sio
import sqlalchemy as sa
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from explainers import TreeExplainer
from gateway import create_app, keystore
from gateway.contacts import unwrap_data_key
from gateway.extensions import db
from gateway.jobs.explain import ExplainKind
from gateway.manifest import load_manifest
from tests.conftest import Gateway
from tests.support.registration import background_csv, manifest_for, pickled, register

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
WITHHELD = {"other_installment_plans", "existing_credits"}  # credit-bureau data, withheld by the example
KAZAKH = set("әғқңөұүһі")


def explain(gw: Gateway, did: str, lang: str | None = None, who: str = "agency_a") -> Any:
    query = f"?lang={lang}" if lang else ""
    return gw.client.get(f"/v1/decisions/{did}/explanation{query}", headers=gw.auth(who))


def background_rows(manifest_path: Path) -> list[dict[str, Any]]:
    manifest, folder = load_manifest(manifest_path)
    frame = pd.read_csv(folder / manifest.explanation.background)  # type: ignore[operator]
    return frame.to_dict("records")


def test_the_explanation_is_stored_with_the_decision(gateway: Gateway, german_manifest: Path) -> None:
    resp = gateway.decide()
    did, score = resp.get_json()["decision_id"], resp.get_json()["score"]
    with gateway.app.app_context():
        row = db.session.execute(sa.text("SELECT * FROM explanations WHERE decision_id = :d"), {"d": did}).mappings().one()
        leaf = json.loads(db.session.execute(sa.text("SELECT record FROM log_leaves WHERE kind = 'decision:recorded'")).scalar_one())
    manifest, _ = load_manifest(german_manifest)
    attributions = row["attributions"] if isinstance(row["attributions"], dict) else json.loads(row["attributions"])
    assert row["status"] == "ready" and row["method"].startswith("tree_shap_interventional")
    assert row["output_space"] == "probability" and row["random_state"] == 0
    assert row["background_sha256"] == manifest.explanation.background_sha256
    assert row["shap_version"] == shap.__version__ and row["explainer_version"]
    assert set(attributions) == {f.name for f in manifest.features}
    assert row["output"] == pytest.approx(score, abs=1e-9)
    assert abs(row["base_value"] + sum(attributions.values()) - row["output"]) <= 1e-6
    assert row["additivity_error"] <= 1e-6
    # The audit record pins the attributions by a commitment keyed by the decision's data key, never in clear.
    with gateway.app.app_context():
        wrapped = keystore.wrapped(did)  # in the key store, a database of its own
        data_key = unwrap_data_key(gateway.app.config["CONTACT_KEY_BYTES"], did, bytes(wrapped))
    assert data_key is not None and "attributions" not in leaf["explanation"]
    assert leaf["explanation"]["attributions_commitment"] == data_key.commitment(attributions)


def test_attributions_are_the_raw_features_shapley_values(gateway: Gateway, german_manifest: Path) -> None:
    """Stored = grouped TreeSHAP computed directly on the artifact; same total as shap's per-column values
    (each raw feature is one player, so the split between features differs from the column sums)."""
    manifest, folder = load_manifest(german_manifest)
    pipe = sio.load(folder / manifest.artifact, trusted=["sklearn.tree._tree.Tree"])  # type: ignore[operator]
    names = [f.name for f in manifest.features]
    background = pd.read_csv(folder / manifest.explanation.background)[names]  # type: ignore[operator]
    row = pd.DataFrame([gateway.sample["features"]])[names]
    preprocess, model = pipe[:-1], pipe[-1]
    explainer = shap.TreeExplainer(model, data=preprocess.transform(background), feature_perturbation="interventional",
                                   model_output="probability")
    values = explainer.shap_values(preprocess.transform(row))[0]
    # Sum the one-hot columns back into their feature, by the encoder's own categories.
    encoder = preprocess.named_steps["preprocess"].named_transformers_["categorical"]
    column_feature = [f for f, cats in zip(encoder.feature_names_in_, encoder.categories_, strict=False) for _ in cats]
    column_feature += [n for n in names if n not in encoder.feature_names_in_]
    expected = {n: 0.0 for n in names}
    for feature, value in zip(column_feature, values, strict=False):
        expected[feature] += float(value)

    did = gateway.decide().get_json()["decision_id"]
    with gateway.app.app_context():
        stored = db.session.execute(sa.text("SELECT attributions FROM explanations WHERE decision_id = :d"),
                                    {"d": did}).scalar_one()
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    direct = TreeExplainer(pipe, output_space="probability", positive_class=manifest.policy.positive_class)
    [grouped] = direct.fit(background).explain(row)
    np.testing.assert_allclose([stored[n] for n in names], [grouped.attributions[n] for n in names],
                               rtol=1e-9, atol=1e-12)
    # shap works in float32: its totals agree to ~1e-7
    assert sum(stored.values()) == pytest.approx(sum(expected.values()), abs=1e-6)


def test_the_person_reads_the_main_factors_in_their_language(gateway: Gateway) -> None:
    did = gateway.decide().get_json()["decision_id"]  # the sample's language is kk
    default, kk = explain(gateway, did), explain(gateway, did, "kk")
    assert default.status_code == kk.status_code == 200 and default.data == kk.data
    body = kk.get_json()
    assert body["language"] == "kk"
    assert 1 <= len(body["factors"]) <= 4
    assert not WITHHELD & {f["feature"] for f in body["factors"]}
    assert body["confidential"]["count"] >= 2 and body["confidential"]["legal_ground"]
    contributions = [abs(f["contribution"]) for f in body["factors"]]
    assert contributions == sorted(contributions, reverse=True)
    text = " ".join([body["text"]["summary"], body["text"]["role"], *body["text"]["factors"]])
    assert KAZAKH & set(text), text
    assert {"ә", "ұ", "қ"} <= set(text)
    for factor, sentence in zip(body["factors"], body["text"]["factors"], strict=False):
        assert sentence.startswith(f"{factor['label']} — {factor['value']}:")
        assert ("арттырды" if factor["direction"] == "raised" else "төмендетті") in sentence
    ru = explain(gateway, did, "ru").get_json()
    assert ru["factors"][0]["feature"] == body["factors"][0]["feature"]
    assert re.search("[а-яё]", ru["text"]["summary"]) and not KAZAKH & set(ru["text"]["summary"])
    en = explain(gateway, did, "en").get_json()
    assert en["text"]["summary"].startswith("An automated system (german-credit 1.0.0")


def test_banded_values_are_shown_as_their_range(gateway: Gateway) -> None:
    body = copy.deepcopy(gateway.sample)
    body["features"]["age"] = 22  # young age lowers this model's score a lot: a main factor
    did = gateway.decide(body).get_json()["decision_id"]
    factors = {f["feature"]: f for f in explain(gateway, did, "en").get_json()["factors"]}
    assert "age" in factors, factors
    assert factors["age"]["band"] == [None, 25.0] and factors["age"]["value"] == "under 25 years"
    assert "22" not in factors["age"]["value"]


def test_asking_twice_and_after_a_restart_gives_the_same_bytes(gateway: Gateway) -> None:
    did = gateway.decide().get_json()["decision_id"]
    first, again = explain(gateway, did, "ru"), explain(gateway, did, "ru")
    svg = gateway.client.get(f"/v1/decisions/{did}/explanation.svg?lang=ru", headers=gateway.auth("agency_a"))
    assert first.data == again.data
    # A new app on the same database: nothing cached in the first one can make the answer the same.
    restarted = create_app({k: gateway.app.config[k] for k in
                            ("TESTING", "DATABASE_URL", "KEYSTORE_URL", "PUBLIC_BASE_URL", "SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")})
    client = restarted.test_client()
    after = client.get(f"/v1/decisions/{did}/explanation?lang=ru", headers=gateway.auth("agency_a"))
    svg_after = client.get(f"/v1/decisions/{did}/explanation.svg?lang=ru", headers=gateway.auth("agency_a"))
    assert after.data == first.data
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert svg_after.data == svg.data
    with restarted.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


def test_svg_chart_is_self_contained(gateway: Gateway) -> None:
    did = gateway.decide().get_json()["decision_id"]
    svg = gateway.client.get(f"/v1/decisions/{did}/explanation.svg", headers=gateway.auth("agency_a")).get_data(as_text=True)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert len(re.findall(r"<g id=\"patch_\d+\">", svg)) >= 5  # background, axes and one bar per factor
    # Nothing that a browser would fetch (namespace URIs in the metadata are identifiers, not loads).
    assert re.findall(r"""href\s*=\s*["'](?!#)""", svg) == []
    assert "url(http" not in svg and "<image" not in svg and "@import" not in svg


def _published_constraints(body: dict[str, Any], names: list[str]) -> np.ndarray:
    """Rows of the linear system a reader can write from the response (unknowns: every feature's contribution)."""
    index = {n: i for i, n in enumerate(names)}
    rows = []
    for f in body["factors"]:
        row = np.zeros(len(names))
        row[index[f["feature"]]] = 1
        rows.append(row)
    shown = {f["feature"] for f in body["factors"]}
    if body["confidential"] and body["confidential"]["contribution_or_null"] is not None:
        rows.append(np.array([0.0 if n in shown else 1.0 for n in names]))  # the bucket holds everything not shown
    if body["base_value"] is not None:
        rows.append(np.ones(len(names)))  # base + sum = output, both published
    return np.array(rows)


def test_no_withheld_contribution_can_be_solved_for(gateway: Gateway, german_manifest: Path) -> None:
    names = [f.name for f in load_manifest(german_manifest)[0].features]
    for i, row in enumerate(background_rows(german_manifest)[:15]):
        body = copy.deepcopy(gateway.sample)
        body["features"] = {n: (int(v) if isinstance(v, (int, np.integer)) else v) for n, v in row.items()}
        did = gateway.decide(body).get_json()["decision_id"]
        published = explain(gateway, did, "en").get_json()
        system = _published_constraints(published, names)
        rank = np.linalg.matrix_rank(system)
        for withheld in WITHHELD:
            unit = np.zeros(len(names))
            unit[names.index(withheld)] = 1
            # The unit vector of a withheld feature is in the row space iff adding it keeps the rank.
            assert np.linalg.matrix_rank(np.vstack([system, unit])) == rank + 1, (i, withheld)


@pytest.mark.parametrize("who", ["agency_b", "admin", "reviewer"])  # auditors read all: tests/test_access_bola.py
def test_other_principals_get_404(gateway: Gateway, who: str) -> None:
    did = gateway.decide().get_json()["decision_id"]
    for suffix in ("explanation", "explanation.svg"):
        resp = gateway.client.get(f"/v1/decisions/{did}/{suffix}", headers=gateway.auth(who))
        missing = gateway.client.get(f"/v1/decisions/dec_nothing/{suffix}", headers=gateway.auth(who))
        assert resp.status_code == missing.status_code == 404 and resp.data == missing.data


def test_an_unknown_language_is_422(gateway: Gateway) -> None:
    did = gateway.decide().get_json()["decision_id"]
    resp = explain(gateway, did, "de")
    assert resp.status_code == 422 and resp.get_json()["error"]["details"][0]["field"] == "lang"


@pytest.mark.gateway_config(ALLOW_PICKLE=True)
def test_an_opaque_model_is_explained_by_a_job_after_commit(gateway: Gateway) -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"income": rng.uniform(0, 100, 400), "debt": rng.uniform(0, 50, 400)})
    y = np.where(X["income"] - X["debt"] * 1.5 + rng.normal(0, 10, 400) > 20, "yes", "no")
    pipe = Pipeline([("scale", StandardScaler()), ("knn", KNeighborsClassifier(n_neighbors=15))]).fit(X, y)
    background = background_csv(X.iloc[:40].round(3))
    features = [{"name": n, "type": "number", "labels": {"kk": "Табыс", "ru": "Доход", "en": n.title()},
                 "min": 0, "max": 200} for n in ("income", "debt")]
    artifact = pickled(pipe)
    manifest = manifest_for("knn-demo", artifact, features, positive_class="yes", background=background)
    assert register(gateway.client, gateway.auth("admin"), manifest, artifact, background).status_code == 201
    resp = gateway.decide({"subject": gateway.sample["subject"], "features": {"income": 80.0, "debt": 5.0}}, model="knn-demo")
    assert resp.status_code == 201
    did = resp.get_json()["decision_id"]
    pending = explain(gateway, did)
    assert pending.status_code == 202 and pending.headers["Retry-After"] == "2"
    assert pending.get_json() == {"decision_id": did, "status": "pending", "retry_after": 2}
    runner = ExplainKind(gateway.app)
    assert runner.run_once() == 1
    assert runner.run_once() == 0  # nothing left; a computed explanation is never recomputed
    ready = explain(gateway, did, "ru")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["method"] == "permutation_shap_estimate"
    # the person is told the figures are estimates, and how precise each one is
    assert "оценки" in body["text"]["precision"]
    assert all("примерно" in s and "±" in s for s in body["text"]["factors"])
    english = explain(gateway, did, "en").get_json()["text"]
    assert "estimates" in english["precision"] and all("±" in s for s in english["factors"])
    kazakh = explain(gateway, did, "kk").get_json()["text"]
    assert "бағалаулар" in kazakh["precision"] and all("шамамен" in s for s in kazakh["factors"])
    assert abs(body["base_value"] + sum(f["contribution"] for f in body["factors"]) - body["output"]) <= 1e-6
    assert body["output"] == pytest.approx(resp.get_json()["score"], abs=1e-9)
    assert explain(gateway, did, "ru").data == ready.data
