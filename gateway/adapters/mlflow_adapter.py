"""Models on an MLflow scoring server (`mlflow models serve`): POST /invocations with `dataframe_split`.

The model answers what the policy reads: under a binary policy probabilities (log it with
`pyfunc_predict_fn="predict_proba"`: an [n, k] answer whose column `positive_index` names, or as a pyfunc
that returns the positive-class probability, [n]); under a multi-class one every class's probability
(`predict_proba`, [n, k], columns labelled by `source.classes`); under a regression one a value per row
(a regressor's `predict`, [n]).

What the server can say about itself is little: /ping (health), /version (MLflow's version: the
platform) and, on /invocations, its signature's verdict (a request that does not fit the signature is
refused with 400, which refuses the registration with the server's message; MLflow's scoring server
publishes no endpoint for the signature itself). So the model is pinned by its behaviour: at registration
the answers to a few probe rows (the manifest's example row and the first background rows) are stored,
every /invocations call carries those rows too, and answers that differ by more than 1e-9 mean another
model is being served (503 `model_changed`) until an admin registers it. A changed model that answers
the probe rows exactly as before is not detected; OIP v2 servers, which name their version, are pinned
by name instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from gateway.adapters.base import AdapterError, NativeModel
from gateway.adapters.oip_v2 import pinned_bytes
from gateway.adapters.remote import CHANGED, AnswerReader, BatchedRemote, RemoteCaller, RemoteModelError
from gateway.manifest import RemoteSource

PROBE_ROWS = 3
PROBE_TOLERANCE = 1e-9


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


class MlflowAdapter(BatchedRemote):
    """Score with POST /invocations (dataframe_split); refuse answers that show another model."""

    kind: ClassVar[str] = "mlflow"
    remote: ClassVar[bool] = True

    def __init__(self, source: RemoteSource, pinned: Mapping[str, Any], *, feature_names: list[str],
                 config: Mapping[str, Any], positive_class: Any) -> None:
        self.source = source
        self.reader = AnswerReader.of(source, positive_class)
        self.pinned = dict(pinned)
        self.feature_names = list(feature_names)
        self.caller = RemoteCaller(source, config)
        probe = self.pinned.get("probe") or []
        self.probe_records: list[list[Any]] = [list(row) for row in probe]  # sent after every call's rows
        self.fingerprint = np.asarray(self.pinned.get("fingerprint") or [], dtype=np.float64)

    @classmethod
    def pin(cls, source: RemoteSource, sample: pd.DataFrame, *, positive_class: Any, config: Mapping[str, Any]) -> bytes:
        """Check the server, score the probe rows and return the pinned description."""
        caller = RemoteCaller(source, config)
        caller.guarded(lambda: caller.request("GET", "/ping", text=True))
        version = str(caller.guarded(lambda: caller.request("GET", "/version", text=True))).strip()
        adapter = cls(source, {}, feature_names=list(sample.columns), config=config, positive_class=positive_class)
        probe = sample.iloc[:PROBE_ROWS]
        answers = adapter.answers(probe)
        pinned = {"protocol": cls.kind, "name": source.model or "", "version": source.version,
                  "platform": f"mlflow {version}"[:200],
                  "probe": [[_json_value(v) for v in row] for row in probe.itertuples(index=False)],
                  "fingerprint": answers.tolist()}
        return pinned_bytes(pinned)

    @classmethod
    def load(cls, data: bytes, *, positive_class: Any, feature_names: list[str], config: dict[str, Any],
             source: RemoteSource | None = None) -> MlflowAdapter:
        if source is None or source.protocol != cls.kind:
            raise AdapterError("an mlflow model needs the manifest's source")
        try:
            pinned = json.loads(data)
        except ValueError as exc:
            raise AdapterError(f"the pinned description of the remote model is not JSON: {exc}") from exc
        if not pinned.get("fingerprint"):
            raise AdapterError("the pinned description of the remote model has no probe answers")
        return cls(source, pinned, feature_names=feature_names, config=config, positive_class=positive_class)

    def _call(self, frame: pd.DataFrame) -> np.ndarray:
        rows = frame[self.feature_names]
        return self._invoke([[_json_value(v) for v in row] for row in rows.itertuples(index=False)])

    def _call_records(self, chunk: list[list[Any]]) -> np.ndarray:
        return self._invoke([[_json_value(v) for v in row] for row in chunk])

    def _invoke(self, data: list[list[Any]]) -> np.ndarray:
        """One /invocations call for these rows (JSON values, feature order) with the probe rows after them."""
        body = {"dataframe_split": {"columns": self.feature_names, "data": data + self.probe_records}}
        answer = self.caller.request("POST", "/invocations", body)
        if not isinstance(answer, dict) or "predictions" not in answer:
            raise RemoteModelError("the model's answer has no 'predictions'", code="model_answer_shape")
        scores = self.reader.read(answer["predictions"], len(data) + len(self.probe_records))
        if not self.probe_records:
            return scores
        seen = scores[len(data):]
        if seen.shape != self.fingerprint.shape or not np.allclose(seen, self.fingerprint, rtol=0.0,
                                                                   atol=PROBE_TOLERANCE):
            raise RemoteModelError(
                "the server's answers to the probe rows differ from those pinned at registration: it serves "
                "another model; decisions are refused until an admin registers the new version",
                code=CHANGED, details={"registered": self.fingerprint.tolist(), "serving": seen.tolist()})
        return scores[:len(data)]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.source.url, "model": self.pinned.get("name"),
                "version": self.pinned.get("version"), "platform": self.pinned.get("platform")}

    def native(self) -> NativeModel | None:
        return None

    def health(self) -> dict[str, Any]:
        return {"circuit": self.caller.breaker.state()}
