"""Models on an Open Inference Protocol v2 server over REST (KServe, MLServer, Triton).

Each raw feature is one input tensor of the same name, shape [n, 1], with the datatype the server's
metadata declares for it (else FP64 for numbers, BOOL for booleans, BYTES for categories); the request
asks for the pandas content type so that MLServer's runtimes rebuild the caller's table. The answer's
`output` tensor holds what the policy reads: the positive class's probability ([n], or [n, k] with
`positive_index`) under a binary policy, every class's probability ([n, k], columns labelled by
`source.classes`) under a multi-class one, a value per row ([n] or [n, 1]) under a regression one.

Registration pins what the server reports: the model's name, version and platform (and its declared
inputs and outputs), stored content-addressed as the version's artifact. Every inference answer names
the model and version that computed it: another one than pinned is refused (503 `model_changed`) until
an admin registers the new version, because every explanation must describe the model that decided.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from gateway.adapters.base import AdapterError, NativeModel
from gateway.adapters.remote import (
    CHANGED,
    REQUEST_REJECTED,
    AnswerReader,
    BatchedRemote,
    RemoteCaller,
    RemoteModelError,
)
from gateway.manifest import RemoteSource

_NUMPY = {"FP64": np.float64, "FP32": np.float32, "FP16": np.float32, "INT64": np.int64, "INT32": np.int32,
          "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64}


def pinned_bytes(pinned: Mapping[str, Any]) -> bytes:
    return json.dumps(pinned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _tensor(name: str, rows: int, datatype: str, data: list[Any], parameters: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "shape": [rows, 1], "datatype": datatype, "data": data}
    if parameters:
        entry["parameters"] = parameters
    return entry


class OipV2Adapter(BatchedRemote):
    """Score with POST /v2/models/{m}[/versions/{v}]/infer; refuse answers from another model version."""

    kind: ClassVar[str] = "oip_v2"
    remote: ClassVar[bool] = True

    def __init__(self, source: RemoteSource, pinned: Mapping[str, Any], *, feature_names: list[str],
                 config: Mapping[str, Any], positive_class: Any) -> None:
        self.source = source
        self.reader = AnswerReader.of(source, positive_class)
        self.pinned = dict(pinned)
        self.feature_names = list(feature_names)
        self.caller = RemoteCaller(source, config)
        path = f"/v2/models/{source.model}"
        if source.version is not None:
            path += f"/versions/{source.version}"
        self.path = path
        self.datatypes = {i["name"]: i["datatype"] for i in self.pinned.get("inputs") or [] if "datatype" in i}

    # -- registration and loading ------------------------------------------------------------------

    @classmethod
    def pin(cls, source: RemoteSource, sample: pd.DataFrame, *, positive_class: Any, config: Mapping[str, Any]) -> bytes:
        """Ask the server what it serves, score `sample` once, and return the pinned description."""
        caller = RemoteCaller(source, config)
        caller.guarded(lambda: caller.request("GET", "/v2/health/ready", text=True))
        probe = cls(source, {}, feature_names=list(sample.columns), config=config, positive_class=positive_class)
        meta = caller.guarded(lambda: caller.request("GET", probe.path))
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise AdapterError("the server's model metadata has no name")
        declared = [i for i in meta.get("inputs") or [] if isinstance(i, dict) and "name" in i]
        if declared:
            names = {str(i["name"]) for i in declared}
            missing, extra = sorted(set(sample.columns) - names), sorted(names - set(sample.columns))
            if missing or extra:
                raise AdapterError(f"the server's model declares other inputs than the manifest's features: "
                                   f"not declared {missing}, not in the manifest {extra}")
        probe.datatypes = {str(i["name"]): str(i["datatype"]) for i in declared if "datatype" in i}
        answer = caller.guarded(lambda: probe._infer(sample))
        versions = [str(v) for v in meta.get("versions") or []]
        version = source.version or answer.get("model_version") or (versions[0] if len(versions) == 1 else None)
        if source.version is not None and answer.get("model_version") not in (None, source.version):
            raise AdapterError(f"the server answered with version {answer.get('model_version')!r}, "
                               f"not the manifest's {source.version!r}")
        pinned = {"protocol": cls.kind, "name": meta["name"], "version": version,
                  "platform": str(meta.get("platform") or ""), "versions": versions,
                  "inputs": declared, "outputs": [o for o in meta.get("outputs") or [] if isinstance(o, dict)]}
        return pinned_bytes(pinned)

    @classmethod
    def load(cls, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any],
             source: RemoteSource | None = None) -> OipV2Adapter:
        if source is None or source.protocol != cls.kind:
            raise AdapterError("an oip_v2 model needs the manifest's source")
        try:
            pinned = json.loads(data)
        except ValueError as exc:
            raise AdapterError(f"the pinned description of the remote model is not JSON: {exc}") from exc
        return cls(source, pinned, feature_names=feature_names, config=config, positive_class=positive_class)

    # -- scoring -----------------------------------------------------------------------------------

    def _inputs(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        inputs = []
        for name in self.feature_names:
            column = frame[name]
            datatype = self.datatypes.get(name)
            if datatype is None:
                if pd.api.types.is_bool_dtype(column.dtype):
                    datatype = "BOOL"
                elif pd.api.types.is_numeric_dtype(column.dtype):
                    datatype = "FP64"
                else:
                    datatype = "BYTES"
            if datatype == "BYTES":
                data: list[Any] = [str(v) for v in column.tolist()]
                parameters = {"content_type": "str"}
            elif datatype == "BOOL":
                data, parameters = [bool(v) for v in column.tolist()], {}
            else:
                data, parameters = column.to_numpy().astype(_NUMPY.get(datatype, np.float64)).tolist(), {}
            inputs.append(_tensor(name, len(frame), datatype, data, parameters))
        return inputs

    def _inputs_of_records(self, records: list[list[Any]]) -> list[dict[str, Any]]:
        """`_inputs` of plain rows (values in feature order, numbers as float): the same tensors, no DataFrame."""
        inputs = []
        columns = list(zip(*records, strict=True)) if records else [()] * len(self.feature_names)
        for name, column in zip(self.feature_names, columns, strict=True):
            datatype = self.datatypes.get(name)
            if datatype is None:  # as pandas infers the column's dtype from these values
                if column and all(isinstance(v, bool) for v in column):
                    datatype = "BOOL"
                elif column and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in column):
                    datatype = "FP64"
                else:
                    datatype = "BYTES"
            if datatype == "BYTES":
                data: list[Any] = [str(v) for v in column]
                parameters = {"content_type": "str"}
            elif datatype == "BOOL":
                data, parameters = [bool(v) for v in column], {}
            elif datatype == "FP64":
                data, parameters = [float(v) for v in column], {}
            else:
                data, parameters = np.asarray(column, dtype=np.float64).astype(_NUMPY.get(datatype, np.float64)).tolist(), {}
            inputs.append(_tensor(name, len(records), datatype, data, parameters))
        return inputs

    def _infer(self, frame: pd.DataFrame) -> dict[str, Any]:
        """One inference call; return the answer after checking which model and version computed it."""
        return self._infer_inputs(self._inputs(frame))

    def _infer_inputs(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": [{"name": self.source.output}]}
        try:
            answer = self.caller.request("POST", self.path + "/infer", body)
        except RemoteModelError as exc:
            if self.pinned and exc.code == REQUEST_REJECTED and (exc.details or {}).get("status") == 404:
                raise RemoteModelError(
                    f"the server no longer serves the registered {self.pinned.get('name')} "
                    f"{self.pinned.get('version')}; decisions are refused until an admin registers what it serves",
                    code=CHANGED, details={"registered": {"name": self.pinned.get("name"),
                                                          "version": self.pinned.get("version")},
                                           "serving": None}) from None
            raise
        if not isinstance(answer, dict):
            raise RemoteModelError("the model's answer is not an inference response", code="model_answer_shape")
        if self.pinned:
            self._check_same_model(answer)
        return answer

    def _check_same_model(self, answer: Mapping[str, Any]) -> None:
        name, version = answer.get("model_name"), answer.get("model_version")
        pinned_name, pinned_version = self.pinned.get("name"), self.pinned.get("version")
        if (name is not None and name != pinned_name) or (version is not None and version != pinned_version) \
                or (version is None and pinned_version is not None and self.source.version is None):
            raise RemoteModelError(
                f"the server now serves {name} {version}, not the registered {pinned_name} {pinned_version}; "
                "decisions are refused until an admin registers the new version",
                code=CHANGED, details={"registered": {"name": pinned_name, "version": pinned_version},
                                       "serving": {"name": name, "version": version}})

    def _answer(self, answer: Mapping[str, Any], rows: int) -> np.ndarray:
        outputs = answer.get("outputs")
        found = next((o for o in outputs if isinstance(o, dict) and o.get("name") == self.source.output), None) \
            if isinstance(outputs, list) else None
        if found is None:
            raise RemoteModelError(f"the answer has no output named {self.source.output!r}", code="model_answer_shape")
        try:
            data = np.asarray(found.get("data"), dtype=np.float64).reshape([int(s) for s in found.get("shape", [])])
        except (TypeError, ValueError):
            raise RemoteModelError("the answer's output does not match its declared shape",
                                   code="model_answer_shape") from None
        return self.reader.read(data, rows)

    def _call(self, chunk: pd.DataFrame) -> np.ndarray:
        return self._answer(self._infer(chunk), len(chunk))

    def _call_records(self, chunk: list[list[Any]]) -> np.ndarray:
        return self._answer(self._infer_inputs(self._inputs_of_records(chunk)), len(chunk))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.source.url, "model": self.pinned.get("name"),
                "version": self.pinned.get("version"), "platform": self.pinned.get("platform")}

    def native(self) -> NativeModel | None:
        return None

    def health(self) -> dict[str, Any]:
        """The breaker's state (no call is made: /readyz must not hammer a failing server)."""
        return {"circuit": self.caller.breaker.state()}
