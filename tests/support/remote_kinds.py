"""Real models to serve remotely under multi-class and regression policies (German credit, five features).

- ``tiers``: a multinomial logistic regression of the risk tier (examples/more_kinds: low, medium, high) -
  its predict_proba is what MLServer's scikit-learn runtime and MLflow's pyfunc answer, one column per class
  in the model's class order (source.classes);
- ``amount``: a ridge regression of the credit amount (DM) from the other four features - its predict is
  the value per row.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.support.registration import CLASSIFIED
from tests.support.remote_models import BACKGROUND_ROWS, CATEGORICAL, FEATURES, NUMERIC, _train_module

ROOT = Path(__file__).resolve().parents[2]
TIERS, AMOUNT = "tiers-remote", "amount-remote"
AMOUNT_FEATURES = [f for f in FEATURES if f != "credit_amount"]


def _kinds_module() -> Any:
    spec = importlib.util.spec_from_file_location("more_kinds_train_remote", ROOT / "examples" / "more_kinds" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _preprocess(numeric: list[str]) -> ColumnTransformer:
    return ColumnTransformer([("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                              ("numeric", StandardScaler(), numeric)])


class KindModel:
    """One fitted pipeline with its features, background and policy."""

    def __init__(self, name: str, pipeline: Pipeline, features: list[str], background: pd.DataFrame,
                 policy: dict[str, Any], schema: dict[str, Any], method: str) -> None:
        self.name, self.pipeline, self.features, self.policy, self.schema = name, pipeline, features, policy, schema
        self.method = method  # what the server answers: predict_proba (multi-class) or predict (regression)
        self.background = background[features].reset_index(drop=True)
        self.background_csv = self.background.to_csv(index=False, lineterminator="\n").encode()
        self.classes = [str(c) for c in getattr(pipeline, "classes_", [])]

    def joblib_bytes(self) -> bytes:
        buf = io.BytesIO()
        joblib.dump(self.pipeline, buf)
        return buf.getvalue()

    def answer(self, frame: pd.DataFrame) -> np.ndarray:
        """What the server answers for these rows."""
        return np.asarray(getattr(self.pipeline, self.method)(frame[self.features]), dtype=float)

    def expected(self, features: dict[str, Any]) -> tuple[float, str]:
        """(score, outcome) the gateway must decide for one row."""
        answer = self.answer(pd.DataFrame([features]))[0]
        if self.method == "predict":
            value = float(answer)
            band = next(o for upper, o in self.policy["bands"] if upper is None or value < upper)
            return value, band
        k = int(np.argmax(answer))
        outcome = next(c["outcome"] for c in self.policy["classes"] if c["class"] == self.classes[k])
        return float(answer[k]), outcome

    def source(self, protocol: str, url: str, model: str | None = None, **extra: Any) -> dict[str, Any]:
        found: dict[str, Any] = {"protocol": protocol, "url": url}
        if model is not None:
            found["model"] = model
        if self.method == "predict_proba":
            found["classes"] = self.classes
        return found | extra

    def manifest(self, source: dict[str, Any], *, version: str = "1") -> dict[str, Any]:
        """The JSON body of POST /v1/models (without `activate`) for this model behind `source`."""
        features = [copy.deepcopy(f) for f in self.schema["features"] if f["name"] in self.features]
        for f in features:
            f["disclosure"] = "show"
        policy = copy.deepcopy(self.policy)
        if policy["kind"] == "regression":  # JSON has no infinity: the open band's upper is null
            policy["bands"] = [[None if u == float("inf") else u, o] for u, o in policy["bands"]]
        return {
            "name": self.name, "version": version, "adapter": source["protocol"], "source": source,
            "features": features, "policy": policy, "notice": self.schema["notice"], "risk_class": "minimal",
            **CLASSIFIED,
            "explanation": {"background_sha256": hashlib.sha256(self.background_csv).hexdigest(),
                            "max_evals_cap": 2000,
                            **({"target_error": 0.05} if policy["kind"] == "regression" else {})},
        }

    def request(self, n: int, **change: Any) -> dict[str, Any]:
        row = self.background.iloc[n % len(self.background)].to_dict() | change
        row = {k: (float(v) if k in NUMERIC else str(v)) for k, v in row.items()}
        return {"subject": {"iin": "921029350851", "language": "ru", "contact": {"email": "p@example.kz"}},
                "features": row}


def kind_models() -> dict[str, KindModel]:
    """The tiers (multi-class) and amount (regression) models, trained on the German data."""
    train, kinds = _train_module(), _kinds_module()
    schema = train.load_schema()
    X, y = train.load_data(schema=schema)
    background = train.background_rows(X, y, n=BACKGROUND_ROWS)
    tiers = Pipeline([("preprocess", _preprocess(NUMERIC)), ("model", LogisticRegression(max_iter=1000))])
    tiers.fit(X[FEATURES], kinds.tier_of(X, y))
    amount_numeric = [n for n in NUMERIC if n != "credit_amount"]
    amount = Pipeline([("preprocess", _preprocess(amount_numeric)), ("model", Ridge(alpha=1.0))])
    amount.fit(X[AMOUNT_FEATURES], X["credit_amount"].astype(float))
    return {TIERS: KindModel(TIERS, tiers, FEATURES, background, kinds.TIERS_POLICY, schema, "predict_proba"),
            AMOUNT: KindModel(AMOUNT, amount, AMOUNT_FEATURES, background, kinds.AMOUNT_POLICY, schema, "predict")}
