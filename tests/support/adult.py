"""The UCI Adult data (tests/data/adult) and small real models trained on it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

DATA = Path(__file__).resolve().parents[1] / "data" / "adult" / "adult-test.csv"
COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income",
]
NUMERIC = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship", "sex"]
FEATURES = NUMERIC + CATEGORICAL
POSITIVE = ">50K"


@lru_cache(maxsize=1)
def adult() -> tuple[pd.DataFrame, pd.Series]:
    """Return (features, target) of the Adult test split with '?' as its own category."""
    frame = pd.read_csv(DATA, header=None, names=COLUMNS, skipinitialspace=True, dtype=str)
    frame = frame.dropna(subset=["income"])
    target = frame["income"].str.rstrip(".")
    X = frame[FEATURES].copy()
    for col in NUMERIC:
        X[col] = X[col].astype(float)
    return X, target


def adult_pipeline(n_rows: int = 3000, seed: int = 0) -> tuple[Pipeline, pd.DataFrame]:
    """Train a small GradientBoosting pipeline on the first n_rows; return it and the rows it saw."""
    X, y = adult()
    X, y = X.iloc[:n_rows], y.iloc[:n_rows]
    pipe = Pipeline([
        ("preprocess", ColumnTransformer([
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numeric", "passthrough", NUMERIC),
        ])),
        ("model", GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=seed)),
    ])
    pipe.fit(X, y)
    return pipe, X
