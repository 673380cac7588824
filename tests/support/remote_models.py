"""A real model to serve remotely: a scikit-learn pipeline on five German-credit features, and its manifest.

Five raw features (two categorical) keep a model-agnostic explanation small enough to send over HTTP in
a test (64 antithetic pairs x 4 interior coalitions x 20 background rows = 10,240 rows per round).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import json
import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.support.registration import CLASSIFIED

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "german_credit" / "train.py"
CATEGORICAL = ["checking_status", "savings"]
NUMERIC = ["duration_months", "credit_amount", "age"]
FEATURES = CATEGORICAL + NUMERIC
BACKGROUND_ROWS = 20
NAME = "credit-remote"


def _train_module() -> Any:
    spec = importlib.util.spec_from_file_location("german_credit_train_remote", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SmallModel:
    """The fitted pipeline, its background rows and the German example's schema."""

    def __init__(self) -> None:
        train = _train_module()
        self.schema = train.load_schema()
        X, y = train.load_data(schema=self.schema)
        X = X[FEATURES]
        preprocess = ColumnTransformer([("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                                        ("numeric", StandardScaler(), NUMERIC)])
        self.pipeline = Pipeline([("preprocess", preprocess), ("model", LogisticRegression(max_iter=500))]).fit(X, y)
        self.classes = [str(c) for c in self.pipeline.classes_]
        self.background = train.background_rows(X, y, n=BACKGROUND_ROWS)[FEATURES].reset_index(drop=True)
        self.background_csv = self.background.to_csv(index=False, lineterminator="\n").encode()
        self.positive_class = self.schema["policy"]["positive_class"]
        self.positive_index = self.classes.index(str(self.positive_class))

    def joblib_bytes(self) -> bytes:
        buf = io.BytesIO()
        joblib.dump(self.pipeline, buf)
        return buf.getvalue()

    def proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(frame[FEATURES]), dtype=float)

    def manifest(self, source: dict[str, Any], *, version: str = "1", **explanation: Any) -> dict[str, Any]:
        """The JSON body of POST /v1/models (without `activate`) for this model behind `source`."""
        schema = copy.deepcopy(self.schema)
        features = [f for f in schema["features"] if f["name"] in FEATURES]
        for f in features:  # the example bands some features by background data; this one shows them
            f["disclosure"] = "show"
        return {
            "name": NAME, "version": version, "adapter": source["protocol"], "source": source,
            "features": features, "policy": schema["policy"], "notice": schema["notice"],
            "risk_class": "minimal", **CLASSIFIED,
            "explanation": {"background_sha256": hashlib.sha256(self.background_csv).hexdigest(),
                            "max_evals_cap": 2000, **explanation},
        }

    def request(self, n: int = 0) -> dict[str, Any]:
        row = self.background.iloc[n % len(self.background)].to_dict()
        row = {k: (float(v) if k in NUMERIC else str(v)) for k, v in row.items()}
        return {"subject": {"iin": "921029350851", "language": "ru", "contact": {"email": "p@example.kz"}},
                "features": row}


def oip_frame(body: dict[str, Any]) -> pd.DataFrame:
    """The table an OIP v2 inference request carries (one [n, 1] tensor per column)."""
    return pd.DataFrame({i["name"]: list(i["data"]) for i in body["inputs"]})


class MisbehavingOip:
    """An OIP v2 server (pytest-httpserver) that answers with the real model, or fails the way it is told."""

    def __init__(self, httpserver: Any, model: SmallModel, *, name: str = "credit", version: str = "v1") -> None:
        self.server, self.model, self.name, self.version = httpserver, model, name, version
        self.mode = "ok"
        self.release = threading.Event()  # mode "timeout": the answer waits for this (or 10 s)
        self.infer_calls = 0
        self.rows_scored = 0
        from werkzeug.wrappers import Response

        self._response = Response
        httpserver.expect_request("/v2/health/ready").respond_with_handler(self._ready)
        httpserver.expect_request(f"/v2/models/{name}", method="GET").respond_with_handler(self._metadata)
        httpserver.expect_request(f"/v2/models/{name}/infer", method="POST").respond_with_handler(self._infer)

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def source(self, **extra: Any) -> dict[str, Any]:
        return {"protocol": "oip_v2", "url": self.url, "model": self.name,
                "positive_index": self.model.positive_index, **extra}

    def _json(self, data: Any, status: int = 200) -> Any:
        return self._response(json.dumps(data), status=status, content_type="application/json")

    def _ready(self, request: Any) -> Any:
        return self._response("", status=200 if self.mode != "down" else 503)

    def _metadata(self, request: Any) -> Any:
        return self._json({"name": self.name, "versions": [self.version], "platform": "sklearn",
                           "inputs": [], "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}]})

    def _infer(self, request: Any) -> Any:
        self.infer_calls += 1
        body = json.loads(request.get_data())
        frame = oip_frame(body)
        self.rows_scored += len(frame)
        proba = self.model.proba(frame)
        mode = self.mode
        if mode == "timeout":  # slower than any read timeout, until the test has seen the 503 and releases it
            self.release.wait(10.0)
        elif mode == "5xx":
            return self._response("model crashed", status=500)
        elif mode == "nan":
            proba[0, :] = np.nan
        elif mode == "out_of_range":
            proba[0, :] = [-0.25, 1.25]
        elif mode == "redirect":  # never followed: a redirect could point anywhere, a metadata service included
            return self._response("", status=307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif mode == "gone":
            return self._response("model not found", status=404)
        elif mode == "not_json":
            return self._response("<html>gateway timeout</html>", status=200, content_type="text/html")
        version = "v2" if mode == "changed" else self.version
        shape = list(proba.shape)
        data = proba.ravel().tolist()
        if mode == "wrong_shape":
            shape, data = [len(frame) - 1, 2] if len(frame) > 1 else [2, 2], (proba.ravel().tolist() * 2)[:(
                (len(frame) - 1) * 2 if len(frame) > 1 else 4)]
        return self._json({"model_name": self.name, "model_version": version, "outputs": [
            {"name": "predict_proba", "datatype": "FP64", "shape": shape,
             "data": data}]})  # json.dumps writes NaN as the literal numpy servers send
