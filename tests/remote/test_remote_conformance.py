"""Remote adapters pass the adapter conformance checks against a real pipeline served over real HTTP.

The server here is small (pytest-httpserver speaking each protocol, scoring with the fitted pipeline);
the real MLServer and MLflow servers are in test_remote_servers.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from werkzeug.wrappers import Request, Response

from gateway.adapters import REMOTE_ADAPTERS, load_adapter, pin_remote
from gateway.adapters.base import RecordScorer
from gateway.adapters.oip_v2 import pinned_bytes
from gateway.manifest import RemoteSource
from tests.support.adult import FEATURES, NUMERIC, POSITIVE, adult_pipeline
from tests.support.remote_models import oip_frame

CONFIG = {"MODEL_ALLOW_PRIVATE": True}


def _json(data: Any) -> Response:
    return Response(json.dumps(data), content_type="application/json")


def serve_oip(httpserver: Any, pipe: Any) -> dict[str, Any]:
    def infer(request: Request) -> Response:
        proba = pipe.predict_proba(oip_frame(json.loads(request.get_data())).astype({c: float for c in NUMERIC}))
        return _json({"model_name": "adult", "model_version": "3", "outputs": [
            {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape), "data": proba.ravel().tolist()}]})

    httpserver.expect_request("/v2/health/ready").respond_with_data("")
    httpserver.expect_request("/v2/models/adult", method="GET").respond_with_json(
        {"name": "adult", "versions": ["3"], "platform": "sklearn", "inputs": [
            {"name": n, "datatype": "FP64" if n in NUMERIC else "BYTES", "shape": [-1, 1]} for n in FEATURES]})
    httpserver.expect_request("/v2/models/adult/infer", method="POST").respond_with_handler(infer)
    return {"protocol": "oip_v2", "model": "adult"}


def serve_mlflow(httpserver: Any, pipe: Any) -> dict[str, Any]:
    def invocations(request: Request) -> Response:
        split = json.loads(request.get_data())["dataframe_split"]
        proba = pipe.predict_proba(pd.DataFrame(split["data"], columns=split["columns"]))
        return _json({"predictions": proba.tolist()})

    httpserver.expect_request("/ping").respond_with_data("\n")
    httpserver.expect_request("/version").respond_with_data("3.17.2")
    httpserver.expect_request("/invocations", method="POST").respond_with_handler(invocations)
    return {"protocol": "mlflow"}


SERVERS: dict[str, Callable[[Any, Any], dict[str, Any]]] = {"oip_v2": serve_oip, "mlflow": serve_mlflow}


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any]:
    return adult_pipeline(n_rows=2000)


def test_every_remote_adapter_has_a_conformance_case() -> None:
    assert sorted(SERVERS) == sorted(REMOTE_ADAPTERS)


@pytest.mark.parametrize("kind", sorted(REMOTE_ADAPTERS))
def test_remote_adapter_conformance(kind: str, trained: tuple[Any, Any], httpserver: Any) -> None:
    pipe, X = trained
    positive = list(pipe.classes_).index(POSITIVE)
    source = RemoteSource.model_validate({**SERVERS[kind](httpserver, pipe), "url": httpserver.url_for("/"),
                                          "positive_index": positive, "max_batch_rows": 17})
    pinned = pin_remote(source, X.iloc[:5], positive_class=POSITIVE, config=CONFIG)
    description = json.loads(pinned)
    assert description["protocol"] == kind
    adapter = load_adapter(kind, pinned, positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG,
                           source=source)
    rows = X.iloc[:50]
    scores = adapter.score(rows)
    assert scores.shape == (50,)
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, pipe.predict_proba(rows)[:, positive], rtol=0, atol=1e-12)
    np.testing.assert_allclose(adapter.score(rows[FEATURES[::-1]]), scores, rtol=0, atol=1e-12)
    assert adapter.describe()["kind"] == kind
    json.dumps(adapter.describe())
    assert adapter.native() is None  # opaque: explained model-agnostically by the explain job
    # A decision's rows are sent without a DataFrame: the same requests, the same scores (with the input types
    # the server declared at registration, and without: then inferred from the values as pandas does).
    records = [[float(v) if c in NUMERIC else v for c, v in zip(FEATURES, row, strict=True)]
               for row in rows[FEATURES].itertuples(index=False)]
    for pinned_as in (pinned, pinned_bytes(description | {"inputs": []})):
        loaded = load_adapter(kind, pinned_as, positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG,
                              source=source)
        assert isinstance(loaded, RecordScorer)
        httpserver.clear_log()
        from_frame = loaded.score(rows)
        sent_for_frame = [json.loads(request.get_data()) for request, _ in httpserver.log]
        httpserver.clear_log()
        np.testing.assert_array_equal(loaded.score_records(records), from_frame)
        assert [json.loads(request.get_data()) for request, _ in httpserver.log] == sent_for_frame
        assert len(sent_for_frame) == 3  # 50 rows in batches of at most 17
