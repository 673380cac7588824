"""Model adapters and their registry."""

from __future__ import annotations

from typing import Any

import pandas as pd

from gateway.adapters.base import (
    AdapterError,
    ModelAdapter,
    NativeModel,
    UnknownAdapterError,
    UntrustedArtifactError,
)
from gateway.adapters.boosting import LightGBMAdapter, XGBoostAdapter
from gateway.adapters.joblib_adapter import JoblibAdapter
from gateway.adapters.mlflow_adapter import MlflowAdapter
from gateway.adapters.oip_v2 import OipV2Adapter
from gateway.adapters.onnx_adapter import OnnxAdapter
from gateway.adapters.remote import RemoteModelError
from gateway.adapters.skops_adapter import SkopsAdapter
from gateway.manifest import RemoteSource

ADAPTERS: dict[str, Any] = {
    SkopsAdapter.kind: SkopsAdapter,
    JoblibAdapter.kind: JoblibAdapter,
    LightGBMAdapter.kind: LightGBMAdapter,
    XGBoostAdapter.kind: XGBoostAdapter,
    OnnxAdapter.kind: OnnxAdapter,
    OipV2Adapter.kind: OipV2Adapter,
    MlflowAdapter.kind: MlflowAdapter,
}
#: Adapters of models served elsewhere: their "artifact" is what the server reported at registration.
REMOTE_ADAPTERS: dict[str, Any] = {OipV2Adapter.kind: OipV2Adapter, MlflowAdapter.kind: MlflowAdapter}


def _adapter_class(kind: str) -> Any:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise UnknownAdapterError(f"unknown adapter {kind!r}; known adapters: {sorted(ADAPTERS)}") from None


def load_adapter(kind: str, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any],
                 source: RemoteSource | None = None) -> ModelAdapter:
    """Load an artifact with the adapter registered under `kind` (a remote model: its pinned description)."""
    adapter_cls = _adapter_class(kind)
    extra = {"source": source} if source is not None else {}
    adapter: ModelAdapter = adapter_cls.load(data, positive_class=positive_class, feature_names=feature_names,
                                             config=config, **extra)
    return adapter


def pin_remote(source: RemoteSource, sample: pd.DataFrame, *, positive_class: Any, config: dict[str, Any]) -> bytes:
    """Ask a remote model's server what it serves (and score `sample`); return the description to pin.

    positive_class is the policy's (`Policy.adapter_class`; None for regression), as for `load_adapter`."""
    pinned: bytes = REMOTE_ADAPTERS[source.protocol].pin(source, sample, positive_class=positive_class, config=config)
    return pinned


def is_remote(adapter: ModelAdapter) -> bool:
    """True for a model served elsewhere (explained by the job, never warmed with a full explanation)."""
    return bool(getattr(adapter, "remote", False))


__all__ = [
    "ADAPTERS",
    "AdapterError",
    "ModelAdapter",
    "NativeModel",
    "REMOTE_ADAPTERS",
    "RemoteModelError",
    "is_remote",
    "pin_remote",
    "UnknownAdapterError",
    "UntrustedArtifactError",
    "load_adapter",
]
