"""The model adapter interface: what the gateway needs from any scoring model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd


class AdapterError(Exception):
    """The model artifact cannot be used."""


class UnknownAdapterError(AdapterError):
    """No adapter of that kind is registered."""


class UntrustedArtifactError(AdapterError):
    """The artifact needs types the deployment does not trust."""


@dataclass(frozen=True)
class NativeModel:
    """A model's insides, for exact explainers: the fitted pipeline, its preprocessing and final estimator."""

    pipeline: Any
    preprocessor: Any | None
    estimator: Any
    positive_class: Any


@runtime_checkable
class ModelAdapter(Protocol):
    """Score raw rows; say what the model is; expose its insides when it has any."""

    kind: ClassVar[str]

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """Return the probability of the positive class for each row, shape (n,); for a regression model
        (loaded with positive_class None) its value in the model's units."""
        ...

    def describe(self) -> dict[str, Any]:
        """Return a JSON-able description (kind, estimator class, classes, ...)."""
        ...

    def native(self) -> NativeModel | None:
        """Return the fitted pipeline's parts, or None for an opaque model."""
        ...


@runtime_checkable
class ClassProbabilities(Protocol):
    """What a classifier adapter adds for multi-class policies: every class's probability."""

    @property
    def classes(self) -> list[Any]:
        """The model's class labels, in the column order of `probabilities`."""
        ...

    def probabilities(self, rows: pd.DataFrame) -> np.ndarray:
        """Return the probability of every class for each row, shape (n, classes)."""
        ...


@runtime_checkable
class RecordScorer(Protocol):
    """What an adapter adds when it scores plain rows without building a DataFrame (a remote model: its
    request is JSON made from the values). `records`: one list per row, values in `feature_names` order, numbers
    as float (`gateway.features.to_records`). Answers equal `score` / `probabilities` of the same rows as a frame."""

    def score_records(self, records: list[list[Any]]) -> np.ndarray:
        """`score` of these rows."""
        ...

    def probabilities_of_records(self, records: list[list[Any]]) -> np.ndarray:
        """`probabilities` of these rows (a multi-class model)."""
        ...
