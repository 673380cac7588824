"""scikit-learn pipelines converted to ONNX with skl2onnx (one graph input per raw feature)."""

from __future__ import annotations

from typing import Any

from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType

from tests.support.adult import FEATURES, NUMERIC


def to_onnx_bytes(pipe: Any, features: list[str], numeric: list[str], *, zipmap: bool = False) -> bytes:
    """Convert a fitted pipeline whose inputs are named raw features: numbers as float, the rest as strings."""
    types: list[tuple[str, Any]] = [(n, FloatTensorType([None, 1]) if n in numeric else StringTensorType([None, 1]))
                                    for n in features]
    options = {id(pipe[-1]): {"zipmap": zipmap}} if hasattr(pipe[-1], "predict_proba") else None  # a regressor has no map
    return bytes(to_onnx(pipe, initial_types=types, target_opset=17, options=options).SerializeToString())


def adult_onnx(pipe: Any, *, zipmap: bool = False) -> bytes:
    return to_onnx_bytes(pipe, FEATURES, NUMERIC, zipmap=zipmap)
