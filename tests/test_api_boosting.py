"""LightGBM and XGBoost registered through the API: decisions explained exactly in their transaction."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from explainers import make_explainer
from gateway.adapters import load_adapter
from gateway.config import SKOPS_TRUSTED_TYPES
from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.adult import FEATURES, NUMERIC, POSITIVE
from tests.support.boosting import adult_booster_pipeline
from tests.support.registration import background_csv, manifest_for, register


def adult_features(X: pd.DataFrame) -> list[dict[str, Any]]:
    """The manifest's features for Adult: numbers with their range, categories as seen in the data."""
    label = {"kk": "Белгі", "ru": "Признак"}
    features: list[dict[str, Any]] = []
    for name in FEATURES:
        if name in NUMERIC:
            features.append({"name": name, "type": "number", "labels": label | {"en": name}, "min": 0, "max": 1_000_000})
        else:
            features.append({"name": name, "type": "category", "labels": label | {"en": name},
                             "categories": sorted(X[name].unique())})
    return features


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_booster_decides_and_is_explained_exactly(gateway: Gateway, library: str) -> None:
    artifact, model, prep, X = adult_booster_pipeline(library)
    background = background_csv(X.iloc[:60])
    manifest = manifest_for(f"adult-{library}", artifact, adult_features(X), positive_class=POSITIVE,
                            background=background, adapter=library)
    manifest["policy"] |= {"outcome_above": "high", "outcome_below": "low", "adverse_outcome": "low"}
    resp = register(gateway.client, gateway.auth("admin"), manifest, artifact, background)
    assert resp.status_code == 201, resp.get_json()
    row = X.iloc[1234]
    features = {n: (float(row[n]) if n in NUMERIC else str(row[n])) for n in FEATURES}
    decided = gateway.decide({"subject": gateway.sample["subject"], "features": features}, model=f"adult-{library}")
    assert decided.status_code == 201, decided.get_json()
    body = decided.get_json()
    expected = float(model.predict_proba(prep.transform(X.iloc[[1234]]))[0, 1])
    assert body["score"] == pytest.approx(expected, abs=1e-12)
    assert body["outcome"] == ("high" if expected >= 0.5 else "low")
    explanation = gateway.client.get(f"/v1/decisions/{body['decision_id']}/explanation?lang=en",
                                     headers=gateway.auth("agency_a"))
    assert explanation.status_code == 200  # exact: computed in the decision's transaction, no job
    shown = explanation.get_json()
    assert shown["method"].startswith("tree_shap_interventional")
    assert shown["output"] == pytest.approx(expected, abs=1e-7 if library == "xgboost" else 1e-12)
    with gateway.app.app_context():
        stored, error = db.session.execute(
            sa.text("SELECT attributions, additivity_error FROM explanations WHERE decision_id = :d"),
            {"d": body["decision_id"]}).one()
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    assert sorted(stored) == sorted(FEATURES)
    assert abs(shown["base_value"] + sum(stored.values()) - shown["output"]) <= 1e-6 and error <= 1e-6
    # The gateway's stored attributions are the library's TreeExplainer on the same bytes and background.
    direct = make_explainer(load_adapter(library, artifact, positive_class=POSITIVE, feature_names=FEATURES,
                                         config={"SKOPS_TRUSTED_TYPES": SKOPS_TRUSTED_TYPES}).native().pipeline,
                            output_space="probability", positive_class=POSITIVE).fit(X.iloc[:60])
    [again] = direct.explain(X.iloc[[1234]])
    np.testing.assert_allclose([stored[n] for n in FEATURES], [again.attributions[n] for n in FEATURES], rtol=0, atol=1e-9)
