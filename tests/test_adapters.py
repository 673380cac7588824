"""Every model adapter passes one conformance test; loading refuses what it must."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio

from gateway.adapters import (
    ADAPTERS,
    REMOTE_ADAPTERS,
    AdapterError,
    UnknownAdapterError,
    UntrustedArtifactError,
    load_adapter,
)
from gateway.config import SKOPS_TRUSTED_TYPES
from tests.support.adult import FEATURES, POSITIVE, adult_pipeline


def _joblib_bytes(model: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


# How to make an artifact for each adapter kind. A new adapter must add itself here (checked below).
SERIALISERS: dict[str, Callable[[Any], bytes]] = {"skops": sio.dumps, "joblib": _joblib_bytes}
CONFIG = {"SKOPS_TRUSTED_TYPES": SKOPS_TRUSTED_TYPES, "ALLOW_PICKLE": True}


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any]:
    return adult_pipeline(n_rows=2000)


# Remote adapters (a model on a server) pass their conformance test in tests/remote/test_remote_conformance.py.
IN_PROCESS = sorted(set(ADAPTERS) - set(REMOTE_ADAPTERS))


def test_every_adapter_has_a_conformance_case() -> None:
    assert sorted(SERIALISERS) == IN_PROCESS


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_adapter_conformance(kind: str, trained: tuple[Any, Any]) -> None:
    pipe, X = trained
    adapter = load_adapter(kind, SERIALISERS[kind](pipe), positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG)
    rows = X.iloc[:50]
    scores = adapter.score(rows)
    assert scores.shape == (50,)
    assert np.all((scores >= 0) & (scores <= 1))
    positive = list(pipe.classes_).index(POSITIVE)
    np.testing.assert_allclose(scores, pipe.predict_proba(rows)[:, positive], rtol=0, atol=1e-12)
    # Column order of the input must not matter: the adapter selects the schema's columns.
    np.testing.assert_allclose(adapter.score(rows[FEATURES[::-1]]), scores, rtol=0, atol=1e-12)
    description = adapter.describe()
    assert description["kind"] == kind and description["positive_class"] == POSITIVE
    json.dumps(description)
    native = adapter.native()
    assert native is not None and native.positive_class == POSITIVE
    assert type(native.estimator).__name__ == "GradientBoostingClassifier"
    transformed = native.preprocessor.transform(rows)
    np.testing.assert_allclose(native.estimator.predict_proba(transformed)[:, positive], scores, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_adapter_refuses_an_unknown_positive_class(kind: str, trained: tuple[Any, Any]) -> None:
    with pytest.raises(AdapterError, match="positive_class 'rich' is not one of the model's classes"):
        load_adapter(kind, SERIALISERS[kind](trained[0]), positive_class="rich", feature_names=FEATURES, config=CONFIG)


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_adapter_refuses_a_schema_that_does_not_match_the_model(kind: str, trained: tuple[Any, Any]) -> None:
    names = [*FEATURES[:-1], "shoe_size"]
    with pytest.raises(AdapterError, match=r"missing \['sex'\], not used by the model \['shoe_size'\]"):
        load_adapter(kind, SERIALISERS[kind](trained[0]), positive_class=POSITIVE, feature_names=names, config=CONFIG)


def test_skops_refuses_types_the_deployment_does_not_trust(trained: tuple[Any, Any]) -> None:
    config = {**CONFIG, "SKOPS_TRUSTED_TYPES": [t for t in SKOPS_TRUSTED_TYPES if t != "sklearn.tree._tree.Tree"]}
    with pytest.raises(UntrustedArtifactError, match=r"sklearn\.tree\._tree\.Tree"):
        load_adapter("skops", sio.dumps(trained[0]), positive_class=POSITIVE, feature_names=FEATURES, config=config)


def test_skops_refuses_a_corrupt_artifact() -> None:
    with pytest.raises(AdapterError, match="not a readable skops artifact"):
        load_adapter("skops", b"not a zip file", positive_class=POSITIVE, feature_names=FEATURES, config=CONFIG)


def test_joblib_is_refused_unless_the_deployment_allows_pickle(trained: tuple[Any, Any]) -> None:
    with pytest.raises(UntrustedArtifactError, match="GATEWAY_ALLOW_PICKLE=1"):
        load_adapter("joblib", _joblib_bytes(trained[0]), positive_class=POSITIVE, feature_names=FEATURES,
                     config={**CONFIG, "ALLOW_PICKLE": False})


def test_unknown_adapter_names_the_known_ones() -> None:
    known = re.escape(str(sorted(ADAPTERS)))
    with pytest.raises(UnknownAdapterError, match=rf"unknown adapter 'tflite'; known adapters: {known}"):
        load_adapter("tflite", b"", positive_class=1, feature_names=[], config=CONFIG)
