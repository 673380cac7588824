"""Model adapters and their registry."""

from __future__ import annotations

from typing import Any

from gateway.adapters.base import (
    AdapterError,
    ModelAdapter,
    NativeModel,
    UnknownAdapterError,
    UntrustedArtifactError,
)
from gateway.adapters.boosting import LightGBMAdapter, XGBoostAdapter
from gateway.adapters.joblib_adapter import JoblibAdapter
from gateway.adapters.onnx_adapter import OnnxAdapter
from gateway.adapters.skops_adapter import SkopsAdapter

ADAPTERS: dict[str, Any] = {
    SkopsAdapter.kind: SkopsAdapter,
    JoblibAdapter.kind: JoblibAdapter,
    LightGBMAdapter.kind: LightGBMAdapter,
    XGBoostAdapter.kind: XGBoostAdapter,
    OnnxAdapter.kind: OnnxAdapter,
}


def load_adapter(kind: str, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any]) -> ModelAdapter:
    """Load an artifact with the adapter registered under `kind`."""
    try:
        adapter_cls = ADAPTERS[kind]
    except KeyError:
        raise UnknownAdapterError(f"unknown adapter {kind!r}; known adapters: {sorted(ADAPTERS)}") from None
    adapter: ModelAdapter = adapter_cls.load(data, positive_class=positive_class, feature_names=feature_names, config=config)
    return adapter


__all__ = [
    "ADAPTERS",
    "AdapterError",
    "ModelAdapter",
    "NativeModel",
    "UnknownAdapterError",
    "UntrustedArtifactError",
    "load_adapter",
]
