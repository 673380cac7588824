"""Shared pieces of the explainers tests: the UCI Adult data and small reference computations."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parents[1]
ADULT_IN_REPO = TESTS / "data" / "adult" / "adult-test.csv"
ADULT_SHARED = TESTS.parents[1] / "shared" / "data" / "adult" / "adult-test.csv"

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
]
CATEGORICAL = [
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
]
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
POSITIVE = ">50K"


@dataclass(frozen=True)
class Adult:
    """Disjoint subsamples of the Adult test split: train, background and rows to explain."""

    train: pd.DataFrame
    y: pd.Series
    background: pd.DataFrame
    rows: pd.DataFrame


def adult_path() -> Path:
    """Return the Adult CSV: the copy inside the repository first, the shared folder otherwise."""
    for path in (ADULT_IN_REPO, ADULT_SHARED):
        if path.exists():
            return path
    pytest.skip(f"UCI Adult data not found at {ADULT_IN_REPO}")


def load_adult() -> Adult:
    """Load Adult (missing values `?` as NaN, spaces stripped) and split it with a fixed seed."""
    frame = pd.read_csv(
        adult_path(), header=None, names=[*ADULT_COLUMNS, "income"], skipinitialspace=True, na_values=["?"]
    )
    assert len(frame) == 16281
    y = frame.pop("income").str.rstrip(".")
    order = np.random.default_rng(0).permutation(len(frame))
    train, background, rows = order[:3000], order[3000:3100], order[3100:3300]
    return Adult(
        train=frame.iloc[train].reset_index(drop=True),
        y=y.iloc[train].reset_index(drop=True),
        background=frame.iloc[background].reset_index(drop=True),
        rows=frame.iloc[rows].reset_index(drop=True),
    )


def attributions(explanations: Sequence[Any], features: Sequence[str]) -> np.ndarray:
    """Return the (rows x features) matrix of attributions of RawExplanations."""
    return np.array([[e.attributions[f] for f in features] for e in explanations])


def enumerated_shapley(
    f: Callable[[pd.DataFrame], np.ndarray], x: pd.DataFrame, background: pd.DataFrame
) -> np.ndarray:
    """Exact interventional Shapley values by enumerating all coalitions (few features only)."""
    names = list(x.columns)
    m = len(names)
    value = {}
    for size in range(m + 1):
        for coalition in itertools.combinations(range(m), size):
            frame = background.copy()
            for j in coalition:
                frame[names[j]] = x[names[j]].iloc[0]
            value[coalition] = float(np.mean(f(frame)))
    phi = np.zeros(m)
    for j in range(m):
        for coalition, v in value.items():
            if j not in coalition:
                weight = math.factorial(len(coalition)) * math.factorial(m - len(coalition) - 1) / math.factorial(m)
                phi[j] += weight * (value[tuple(sorted((*coalition, j)))] - v)
    return phi
