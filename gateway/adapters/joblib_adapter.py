"""Pickled (joblib) models: arbitrary code runs on load, so only when the deployment opts in."""

from __future__ import annotations

import io
from typing import Any

import joblib

from gateway.adapters.base import AdapterError, UntrustedArtifactError
from gateway.adapters.sklearn_common import SklearnClassifierAdapter


class JoblibAdapter(SklearnClassifierAdapter):
    kind = "joblib"

    @classmethod
    def load(cls, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any]) -> JoblibAdapter:
        if not config.get("ALLOW_PICKLE"):
            raise UntrustedArtifactError(
                "joblib/pickle artifacts run arbitrary code when loaded; this deployment does not allow them "
                "(set GATEWAY_ALLOW_PICKLE=1 to accept them, or save the model with skops)"
            )
        try:
            model = joblib.load(io.BytesIO(data))
        except Exception as exc:
            raise AdapterError(f"joblib could not load the artifact: {exc}") from exc
        return cls(model, positive_class=positive_class, feature_names=feature_names)
