"""ONNX models run in process by onnxruntime: opaque to the gateway, so explained model-agnostically.

The graph's inputs are fed from the manifest's raw features, either one input per feature named as the
feature (what skl2onnx makes of a ColumnTransformer: strings for categories, numbers for numbers) or one
numeric matrix input whose columns are the manifest's features in the manifest's order. The class labels
come from the graph's classifier node (`classlabels_strings` / `classlabels_int64s`, as skl2onnx writes
them); the probability output is a tensor (n, classes) or a sequence of maps {label: probability}.

A regression model (a graph with no class labels, e.g. skl2onnx's conversion of a regressor) serves a
regression policy (loaded with positive_class None): its one numeric output, (n,) or (n, 1), is the model's
value in its units, explained model-agnostically like every ONNX model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from gateway.adapters.base import AdapterError, NativeModel

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _class_labels(model: onnx.ModelProto) -> list[Any] | None:
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and attr.strings:
                return [s.decode("utf-8") for s in attr.strings]
            if attr.name == "classlabels_int64s" and attr.ints:
                return [int(i) for i in attr.ints]
    return None


class OnnxAdapter:
    """Score with an onnxruntime session; report the probability of the manifest's positive class."""

    kind = "onnx"

    def __init__(self, session: ort.InferenceSession, classes: list[Any], *, positive_class: Any,
                 feature_names: list[str], producer: str) -> None:
        self.regression = positive_class is None
        matches = [i for i, c in enumerate(classes) if c == positive_class or str(c) == str(positive_class)]
        if not self.regression and len(matches) != 1:
            raise AdapterError(f"positive_class {positive_class!r} is not one of the model's classes {classes}")
        self._session = session
        self._classes = classes
        self._index = matches[0] if matches else 0
        self.positive_class = classes[self._index] if not self.regression else None
        self.feature_names = list(feature_names)
        self._producer = producer
        inputs = session.get_inputs()
        names = [i.name for i in inputs]
        if len(inputs) == 1 and inputs[0].name not in feature_names:
            shape = inputs[0].shape
            width = shape[1] if len(shape) == 2 else None
            if inputs[0].type not in _DTYPES or (isinstance(width, int) and width != len(feature_names)):
                raise AdapterError(f"the model's one input {inputs[0].name!r} ({inputs[0].type}, shape {shape}) is not "
                                   f"a numeric matrix of the manifest's {len(feature_names)} features")
            self._matrix: tuple[str, Any] | None = (inputs[0].name, _DTYPES[inputs[0].type])
            self._inputs: list[tuple[str, str]] = []
        else:
            missing = sorted(set(names) - set(feature_names))
            extra = sorted(set(feature_names) - set(names))
            if missing or extra:
                raise AdapterError(f"the manifest's features do not match the model's: missing {missing}, "
                                   f"not used by the model {extra}")
            unknown = [f"{i.name}: {i.type}" for i in inputs if i.type not in _DTYPES and i.type != "tensor(string)"]
            if unknown:
                raise AdapterError(f"the model has inputs of types the gateway cannot feed: {unknown}")
            self._matrix = None
            self._inputs = [(i.name, i.type) for i in inputs]
        outputs = session.get_outputs()
        if self.regression:
            numeric = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
            if len(numeric) != 1:
                raise AdapterError(f"a regression model needs one numeric output (its value); this one has "
                                   f"{[f'{o.name}: {o.type}' for o in outputs]}")
            self._output = numeric[0].name
            return
        probability = [o for o in outputs if "prob" in o.name.lower()] or outputs[-1:]
        self._output = probability[0].name

    @classmethod
    def load(cls, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any]) -> OnnxAdapter:
        try:
            model = onnx.load_model_from_string(data)
        except Exception as exc:  # protobuf raises DecodeError and others on a corrupt file
            raise AdapterError(f"not a readable ONNX model: {exc}") from exc
        classes = _class_labels(model)
        if classes is None and positive_class is not None:
            raise AdapterError("the ONNX graph names no class labels (no classifier node with classlabels_strings or "
                               "classlabels_int64s): a binary or multi-class policy needs a probabilistic classifier "
                               "(a regression model serves a regression policy)")
        if classes is not None and positive_class is None:
            raise AdapterError(f"the ONNX graph is a classifier (classes {classes}): a regression policy needs a "
                               "regression model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph kinds
            raise AdapterError(f"onnxruntime could not load the model: {exc}") from exc
        producer = f"{model.producer_name} {model.producer_version}".strip()
        return cls(session, classes or [], positive_class=positive_class, feature_names=feature_names,
                   producer=producer)

    def _feeds(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        if self._matrix is not None:
            name, dtype = self._matrix
            return {name: rows[self.feature_names].to_numpy(dtype=dtype)}
        feeds: dict[str, np.ndarray] = {}
        for name, kind in self._inputs:
            column = rows[name]
            if kind == "tensor(string)":
                feeds[name] = column.astype(str).to_numpy(dtype=object).reshape(-1, 1)
            else:
                feeds[name] = column.to_numpy(dtype=_DTYPES[kind]).reshape(-1, 1)
        return feeds

    @property
    def classes(self) -> list[Any]:
        return list(self._classes)

    def probabilities(self, rows: pd.DataFrame) -> np.ndarray:
        """Return the probability of every class, shape (n, classes), in the order of the graph's labels."""
        [out] = self._session.run([self._output], self._feeds(rows))
        if isinstance(out, list):  # ZipMap: one {label: probability} per row
            return np.array([[float(p[c]) for c in self._classes] for p in out], dtype=float)
        proba = np.asarray(out, dtype=float)
        if proba.ndim != 2 or proba.shape[1] != len(self._classes):
            raise AdapterError(f"the model's output {self._output!r} has shape {proba.shape}, not (n, {len(self._classes)})")
        return proba

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """The positive class's probability per row (regression: the model's value, in its units)."""
        if self.regression:
            [out] = self._session.run([self._output], self._feeds(rows))
            values = np.asarray(out, dtype=float)
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            if values.shape != (len(rows),):
                raise AdapterError(f"the model's output {self._output!r} has shape {values.shape}, not (n,) or (n, 1)")
            return values
        return self.probabilities(rows)[:, self._index]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "estimator": f"onnx ({self._producer})" if self._producer else "onnx",
            "pipeline": None,
            "classes": [str(c) for c in self._classes],
            "positive_class": str(self.positive_class) if self.positive_class is not None else None,
        }

    def native(self) -> NativeModel | None:
        return None
