"""Calling models served elsewhere: one pooled HTTP client per process, timeouts, checks and a circuit breaker.

Every remote failure is a `RemoteModelError` (a 503 `ModelUnavailable`) whose code says what went wrong,
so the decision is refused and nothing is recorded: `model_timeout`, `model_unreachable`,
`model_server_error` (5xx), `model_request_rejected` (4xx), `model_answer_shape` (not the shape asked
for, or not JSON), `model_answer_nan`, `model_answer_out_of_range` (a probability outside [0, 1]), `model_answer_sum` (a
row of class probabilities that does not sum to 1 within `SUM_TOLERANCE`), `model_answer_infinite` (a
regression model's value that is not a finite number),
`model_changed` (the server now reports another model or version than the one registered),
`model_address_refused` (the URL or what its host resolves to is not public) and `model_circuit_open`.

The circuit breaker is per remote model (protocol, URL, model, version) and per process: after
`breaker_failures` consecutive failures it answers `model_circuit_open` at once for `breaker_cooldown_s`,
then lets one call through (half-open): its success closes the breaker, its failure opens it again. A
changed model is not a failure of the server and does not count.

Credentials never come from the manifest: a bearer token per URL origin (GATEWAY_MODEL_BEARER_TOKENS),
one client certificate for mutual TLS (GATEWAY_MODEL_CLIENT_CERT / _KEY) and an extra CA bundle
(GATEWAY_MODEL_CA_FILE) are settings. TLS is always verified.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx
import numpy as np
import pandas as pd

from gateway.adapters.base import AdapterError
from gateway.addresses import is_public, refusal
from gateway.errors import ModelUnavailable
from gateway.manifest import RemoteSource

T = TypeVar("T")

TIMEOUT = "model_timeout"
UNREACHABLE = "model_unreachable"
SERVER_ERROR = "model_server_error"
REQUEST_REJECTED = "model_request_rejected"
ANSWER_SHAPE = "model_answer_shape"
ANSWER_NAN = "model_answer_nan"
ANSWER_RANGE = "model_answer_out_of_range"
ANSWER_SUM = "model_answer_sum"
ANSWER_INFINITE = "model_answer_infinite"
CHANGED = "model_changed"
#: How far a row of class probabilities may sum from 1: float32 servers (ONNX, Triton) round each of k
#: probabilities by up to 6e-8, so 1e-5 admits them for any k the manifest allows (50) and refuses an answer
#: that is not a distribution over the classes (a missing class, scores instead of probabilities).
SUM_TOLERANCE = 1e-5
ADDRESS_REFUSED = "model_address_refused"
CIRCUIT_OPEN = "model_circuit_open"
ALLOW_SETTING = "GATEWAY_MODEL_ALLOW_PRIVATE"


class RemoteModelError(ModelUnavailable):
    """The remote model could not score the request; nothing was recorded."""

    code = "model_unavailable"


class _Refused(httpcore.ConnectError):
    """The host resolves to an address the gateway does not call."""


@dataclass(frozen=True)
class RemoteSettings:
    """The deployment's settings for remote models (never from a manifest)."""

    allow_private: bool = False
    bearer_tokens: tuple[tuple[str, str], ...] = ()
    client_cert: str | None = None
    client_key: str | None = None
    ca_file: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RemoteSettings:
        tokens = config.get("MODEL_BEARER_TOKENS") or {}
        return cls(
            allow_private=bool(config.get("MODEL_ALLOW_PRIVATE")),
            bearer_tokens=tuple(sorted((_origin(str(k)), str(v)) for k, v in dict(tokens).items())),
            client_cert=config.get("MODEL_CLIENT_CERT") or None,
            client_key=config.get("MODEL_CLIENT_KEY") or None,
            ca_file=config.get("MODEL_CA_FILE") or None,
        )

    def token_for(self, url: str) -> str | None:
        origin = _origin(url)
        return next((token for o, token in self.bearer_tokens if o == origin), None)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class _GuardedBackend(httpcore.SyncBackend):
    """Resolve the host and check every address at connect time (no gap for DNS to answer differently)."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve the model host: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.allow_private and any(not is_public(a) for a in addresses):
            raise _Refused("the model host resolves to a loopback, private, link-local or reserved address")
        error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError("the model host has no address")


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, *, allow_private: bool, verify: ssl.SSLContext | bool, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        ssl_context = self._pool._ssl_context
        self._pool.close()
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=_GuardedBackend(allow_private),
                                             max_connections=limits.max_connections,
                                             max_keepalive_connections=limits.max_keepalive_connections,
                                             keepalive_expiry=limits.keepalive_expiry)


_transports: dict[RemoteSettings, _GuardedTransport] = {}
_transports_pid: int | None = None
_transports_lock = threading.Lock()


def transport(settings: RemoteSettings) -> _GuardedTransport:
    """The process's pooled HTTP transport for these settings (one per worker process, shared by its threads).

    httpx's transport (its connection pool, TLS and timeouts), called without httpx.Client's layers: the
    gateway follows no redirect, sends no cookie and no default header, so those layers only cost CPU on
    every decision (about 0.2 ms; bench/remote_models.py).
    """
    global _transports_pid
    with _transports_lock:
        if _transports_pid != os.getpid():  # a pool inherited through fork() shares sockets with the parent
            _transports.clear()
            _transports_pid = os.getpid()
        found = _transports.get(settings)
        if found is None:
            context = ssl.create_default_context(cafile=settings.ca_file)
            if settings.client_cert:
                context.load_cert_chain(settings.client_cert, settings.client_key)
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30.0)
            found = _transports[settings] = _GuardedTransport(allow_private=settings.allow_private, verify=context,
                                                              limits=limits)
        return found


class CircuitBreaker:
    """Consecutive failures open it for a cool-down; then one trial call decides."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.trial = False
        self._lock = threading.Lock()

    def before(self) -> None:
        """Refuse at once while open; let one call through once the cool-down has passed."""
        with self._lock:
            if self.opened_at is None:
                return
            left = self.opened_at + self.cooldown_s - self.clock()
            if left > 0 or self.trial:
                retry = max(1, int(left + 0.999)) if left > 0 else 1
                error = RemoteModelError(
                    f"the model server failed {self.consecutive} times in a row; calls are refused for "
                    f"{self.cooldown_s:g} s after the last failure (retry in {retry} s)",
                    code=CIRCUIT_OPEN, details={"consecutive_failures": self.consecutive, "retry_in_s": retry})
                error.headers = {"Retry-After": str(retry)}
                raise error
            self.trial = True

    def success(self) -> None:
        with self._lock:
            self.consecutive, self.opened_at, self.trial = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            self.trial = False
            if self.opened_at is not None or self.consecutive >= self.failures:
                self.opened_at = self.clock()

    def state(self) -> dict[str, Any]:
        with self._lock:
            if self.opened_at is None:
                return {"state": "closed", "consecutive_failures": self.consecutive}
            left = self.opened_at + self.cooldown_s - self.clock()
            return {"state": "open" if left > 0 else "half_open", "consecutive_failures": self.consecutive,
                    "retry_in_s": max(0.0, round(left, 3))}


_breakers: dict[tuple[str, ...], CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(source: RemoteSource) -> CircuitBreaker:
    """The process's breaker of one remote model (shared by every load of it, so a failing load counts)."""
    key = (source.protocol, source.url, source.model or "", source.version or "")
    with _breakers_lock:
        found = _breakers.get(key)
        if found is None or (found.failures, found.cooldown_s) != (source.breaker_failures, source.breaker_cooldown_s):
            found = _breakers[key] = CircuitBreaker(source.breaker_failures, source.breaker_cooldown_s)
        return found


def check_url(url: str, settings: RemoteSettings) -> None:
    """Refuse a model URL that the webhook rules refuse (unless the deployment allows private addresses)."""
    reason = refusal(url, allow_private=settings.allow_private, what="model URL", allow_setting=ALLOW_SETTING)
    if reason is not None:
        raise RemoteModelError(reason, code=ADDRESS_REFUSED)


class RemoteCaller:
    """JSON over HTTP to one remote model, through the process's pooled client and the model's breaker."""

    def __init__(self, source: RemoteSource, config: Mapping[str, Any]) -> None:
        self.source = source
        self.settings = RemoteSettings.from_config(config)
        check_url(source.url, self.settings)
        self.base = source.url.rstrip("/")
        self.breaker = breaker_for(source)
        self.timeout = httpx.Timeout(connect=source.connect_timeout_s, read=source.read_timeout_s,
                                     write=source.read_timeout_s, pool=source.connect_timeout_s).as_dict()
        token = self.settings.token_for(source.url)
        self.headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        self.json_headers = self.headers | {"Content-Type": "application/json"}

    def guarded(self, call: Callable[[], T]) -> T:
        """Run `call` behind the breaker: its failures (not a changed model) count toward opening it."""
        self.breaker.before()
        try:
            result = call()
        except RemoteModelError as exc:
            if exc.code == CHANGED:
                self.breaker.success()  # the server answered; the model it serves is another matter
            else:
                self.breaker.failure()
            raise
        except Exception:
            self.breaker.failure()
            raise
        self.breaker.success()
        return result

    def request(self, method: str, path: str, body: Any = None, *, text: bool = False) -> Any:
        """Send one request; return the JSON answer (or its text), or raise RemoteModelError."""
        url = self.base + path
        # As httpx's `json=` encodes: compact, UTF-8, NaN refused (ValueError; validated values hold none).
        content = None if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                                                       allow_nan=False).encode()
        request = httpx.Request(method, url, content=content, headers=self.headers if content is None
                                else self.json_headers, extensions={"timeout": self.timeout})
        try:
            response = transport(self.settings).handle_request(request)
            try:
                response.read()
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise RemoteModelError(f"the model server did not answer in time ({type(exc).__name__})",
                                   code=TIMEOUT) from None
        except _Refused as exc:
            raise RemoteModelError(f"{exc}; refused ({ALLOW_SETTING}=1 allows it)", code=ADDRESS_REFUSED) from None
        except httpx.HTTPError as exc:
            if isinstance(exc.__cause__, _Refused) or isinstance(exc.__context__, _Refused):
                raise RemoteModelError(f"{exc}; refused ({ALLOW_SETTING}=1 allows it)", code=ADDRESS_REFUSED) from None
            raise RemoteModelError(f"the model server cannot be reached ({type(exc).__name__})",
                                   code=UNREACHABLE) from None
        if response.status_code >= 500:
            raise RemoteModelError(f"the model server answered {response.status_code}", code=SERVER_ERROR,
                                   details={"status": response.status_code, "body": response.text[:500]})
        if response.status_code >= 300:
            raise RemoteModelError(f"the model server refused the request ({response.status_code})",
                                   code=REQUEST_REJECTED,
                                   details={"status": response.status_code, "body": response.text[:500]})
        if text:
            return response.text
        try:
            return response.json()
        except ValueError:
            raise RemoteModelError("the model server's answer is not JSON", code=ANSWER_SHAPE) from None


def probabilities(values: Any, rows: int, positive_index: int | None) -> np.ndarray:
    """The positive-class probability per row from a model's answer; refuse anything else with its code."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RemoteModelError("the model's answer is not a table of numbers", code=ANSWER_SHAPE) from None
    if array.ndim == 2 and positive_index is not None and array.shape[0] == rows and positive_index < array.shape[1]:
        array = array[:, positive_index]
    elif array.ndim == 2 and positive_index is None and array.shape == (rows, 1):
        array = array[:, 0]
    if array.shape != (rows,):
        expected = f"({rows}, k) with column {positive_index}" if positive_index is not None else f"({rows},)"
        raise RemoteModelError(f"the model answered shape {tuple(np.shape(values))}, expected {expected}",
                               code=ANSWER_SHAPE)
    if np.isnan(array).any():
        raise RemoteModelError(f"the model answered NaN for {int(np.isnan(array).sum())} of {rows} rows",
                               code=ANSWER_NAN)
    outside = (array < 0.0) | (array > 1.0)
    if outside.any():
        raise RemoteModelError(f"the model answered probabilities outside [0, 1] for {int(outside.sum())} of "
                               f"{rows} rows (e.g. {float(array[outside][0])!r})", code=ANSWER_RANGE)
    return array


def _table(values: Any) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RemoteModelError("the model's answer is not a table of numbers", code=ANSWER_SHAPE) from None


def class_probabilities(values: Any, rows: int, classes: int) -> np.ndarray:
    """Every class's probability per row, shape (rows, classes), each in [0, 1] and each row summing to 1
    within SUM_TOLERANCE; refuse anything else with its code."""
    array = _table(values)
    if array.shape != (rows, classes):
        raise RemoteModelError(f"the model answered shape {tuple(np.shape(values))}, expected ({rows}, {classes}): "
                               "one probability per class (source.classes) per row", code=ANSWER_SHAPE)
    nan = np.isnan(array).any(axis=1)
    if nan.any():
        raise RemoteModelError(f"the model answered NaN for {int(nan.sum())} of {rows} rows", code=ANSWER_NAN)
    outside = ((array < 0.0) | (array > 1.0)).any(axis=1)
    if outside.any():
        raise RemoteModelError(f"the model answered probabilities outside [0, 1] for {int(outside.sum())} of {rows} "
                               f"rows (e.g. {array[outside][0].tolist()!r})", code=ANSWER_RANGE)
    off = np.abs(array.sum(axis=1) - 1.0)
    if (off > SUM_TOLERANCE).any():
        worst = int(off.argmax())
        raise RemoteModelError(f"the class probabilities of {int((off > SUM_TOLERANCE).sum())} of {rows} rows do not "
                               f"sum to 1 within {SUM_TOLERANCE:g} (e.g. {float(array[worst].sum())!r})",
                               code=ANSWER_SUM)
    return array


def model_values(values: Any, rows: int) -> np.ndarray:
    """A regression model's value per row ([n] or [n, 1]), each a finite number; refuse anything else."""
    array = _table(values)
    if array.ndim == 2 and array.shape == (rows, 1):
        array = array[:, 0]
    if array.shape != (rows,):
        raise RemoteModelError(f"the model answered shape {tuple(np.shape(values))}, expected ({rows},) or "
                               f"({rows}, 1): one value per row", code=ANSWER_SHAPE)
    if np.isnan(array).any():
        raise RemoteModelError(f"the model answered NaN for {int(np.isnan(array).sum())} of {rows} rows",
                               code=ANSWER_NAN)
    infinite = np.isinf(array)
    if infinite.any():
        raise RemoteModelError(f"the model answered an infinite value for {int(infinite.sum())} of {rows} rows",
                               code=ANSWER_INFINITE)
    return array


@dataclass(frozen=True)
class AnswerReader:
    """What the policy reads from a remote model's answer: the positive class's probability (binary), every
    class's probability (multi-class, columns labelled by source.classes) or a value (regression)."""

    positive_index: int | None
    classes: tuple[Any, ...] | None
    regression: bool
    class_index: int | None  # multi-class: the column `score` gives (the adapter's positive class)

    @classmethod
    def of(cls, source: RemoteSource, positive_class: Any) -> AnswerReader:
        """positive_class None: a regression model (as for the in-process adapters)."""
        if positive_class is None:
            return cls(None, None, True, None)
        if source.classes is None:
            return cls(source.positive_index, None, False, None)
        labels = [str(c) for c in source.classes]
        if str(positive_class) not in labels:
            raise AdapterError(f"class {positive_class!r} is not one of source.classes {source.classes}")
        return cls(None, tuple(source.classes), False, labels.index(str(positive_class)))

    def read(self, values: Any, rows: int) -> np.ndarray:
        """The checked answer: (rows,) for binary and regression, (rows, classes) for multi-class."""
        if self.regression:
            return model_values(values, rows)
        if self.classes is not None:
            return class_probabilities(values, rows, len(self.classes))
        return probabilities(values, rows, self.positive_index)

    def score(self, answer: np.ndarray) -> np.ndarray:
        """The score per row (the positive class's probability, or the value) from a checked answer."""
        return answer[:, self.class_index] if answer.ndim == 2 else answer


class BatchedRemote:
    """What every remote adapter shares: answers asked in batches of at most `max_batch_rows` rows per call,
    each call through the caller's guard (timeouts, breaker), read by the policy's `AnswerReader`.

    A subclass sets `source`, `reader` and `caller` and implements `_call(chunk)` and `_call_records(chunk)`: one
    remote call's checked answer for the rows of a frame, or for plain rows (`RecordScorer`: what a decision
    sends, without building a DataFrame), the same request for the same rows."""

    source: RemoteSource
    reader: AnswerReader
    caller: RemoteCaller

    def _call(self, chunk: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _call_records(self, chunk: list[list[Any]]) -> np.ndarray:
        raise NotImplementedError

    def _in_batches(self, n: int, call: Callable[[int, int], np.ndarray]) -> np.ndarray:
        size = self.source.max_batch_rows
        parts = [self.caller.guarded(partial(call, start, min(start + size, n))) for start in range(0, n, size)]
        if not parts:
            return np.empty((0, len(self.classes))) if self.reader.classes is not None else np.empty(0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def answers(self, rows: pd.DataFrame) -> np.ndarray:
        """The checked answer for every row, in batches of at most max_batch_rows rows per call."""
        return self._in_batches(len(rows), lambda start, stop: self._call(rows.iloc[start:stop]))

    def record_answers(self, records: list[list[Any]]) -> np.ndarray:
        """`answers` of plain rows (values in feature order, numbers as float)."""
        return self._in_batches(len(records), lambda start, stop: self._call_records(records[start:stop]))

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """The positive-class probability per row (regression: the model's value)."""
        return self.reader.score(self.answers(rows))

    def score_records(self, records: list[list[Any]]) -> np.ndarray:
        """`score` of plain rows."""
        return self.reader.score(self.record_answers(records))

    @property
    def classes(self) -> list[Any]:
        """Multi-class: the class labels of the answer's columns (source.classes); else none."""
        return list(self.reader.classes or ())

    def probabilities(self, rows: pd.DataFrame) -> np.ndarray:
        """Multi-class: every class's probability per row, shape (n, classes), checked."""
        self._check_classes()
        return self.answers(rows)

    def probabilities_of_records(self, records: list[list[Any]]) -> np.ndarray:
        """`probabilities` of plain rows."""
        self._check_classes()
        return self.record_answers(records)

    def _check_classes(self) -> None:
        if self.reader.classes is None:
            raise AdapterError("only a multi-class remote model (source.classes) gives every class's probability")
