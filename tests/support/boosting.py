"""LightGBM and XGBoost models trained on UCI Adult and saved in their own formats (never pickle)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import skops.io as sio
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from tests.support.adult import CATEGORICAL, NUMERIC, POSITIVE, adult

CLASSES = ["<=50K", POSITIVE]


def preprocessing(encoding: str) -> ColumnTransformer:
    """One-hot (k columns per category feature) or ordinal (one column per raw feature) encoding."""
    encoder: Any = (OneHotEncoder(handle_unknown="ignore", sparse_output=False) if encoding == "onehot"
                    else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))
    return ColumnTransformer([("categorical", encoder, CATEGORICAL), ("numeric", "passthrough", NUMERIC)])


def train_booster(library: str, X: np.ndarray | pd.DataFrame, y: np.ndarray, seed: int = 0) -> Any:
    """A small binary booster (30 trees, depth 3)."""
    if library == "lightgbm":
        return lgb.LGBMClassifier(n_estimators=30, max_depth=3, num_leaves=8, random_state=seed, verbose=-1).fit(X, y)
    return xgb.XGBClassifier(n_estimators=30, max_depth=3, random_state=seed, n_jobs=1).fit(X, y)


def booster_bytes(library: str, model: Any, fmt: str = "json") -> tuple[str, bytes]:
    """The booster in its library's own format: (file name in a bundle, bytes)."""
    if library == "lightgbm":
        return "model.txt", model.booster_.model_to_string().encode()
    return f"model.{fmt}", bytes(model.get_booster().save_raw(fmt))


def bundle(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def adult_booster_pipeline(library: str, encoding: str = "onehot", n_rows: int = 2000,
                           fmt: str = "json") -> tuple[bytes, Any, ColumnTransformer, pd.DataFrame]:
    """Train preprocessing + booster on Adult; return (bundle, booster, preprocessing, raw rows seen)."""
    X, y = adult()
    X, target = X.iloc[:n_rows], (y.iloc[:n_rows] == POSITIVE).to_numpy().astype(int)
    prep = preprocessing(encoding).fit(X)
    model = train_booster(library, prep.transform(X), target)
    name, data = booster_bytes(library, model, fmt)
    artifact = bundle({name: data, "preprocessing.skops": sio.dumps(prep), "classes.json": json.dumps(CLASSES).encode()})
    return artifact, model, prep, X


def adult_booster_alone(library: str, n_rows: int = 2000, fmt: str = "json") -> tuple[bytes, Any, pd.DataFrame]:
    """Train a booster on Adult's numeric features alone (named columns); return (its file, model, rows)."""
    X, y = adult()
    X, target = X.iloc[:n_rows][NUMERIC], (y.iloc[:n_rows] == POSITIVE).to_numpy().astype(int)
    model = train_booster(library, X, target)
    return booster_bytes(library, model, fmt)[1], model, X
