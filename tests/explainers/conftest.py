"""Real trained models for the explainers tests (UCI Adult, small subsamples, fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from explainer_helpers import CATEGORICAL, NUMERIC, Adult, load_adult
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)


@pytest.fixture(scope="session")
def adult() -> Adult:
    """Adult, split with a fixed seed into train (3,000), background (100) and rows to explain (200)."""
    return load_adult()


def _fit(pipeline: Pipeline, data: Adult) -> Pipeline:
    return pipeline.fit(data.train, data.y)


@pytest.fixture(scope="session")
def gb_pipeline(adult: Adult) -> Pipeline:
    """GradientBoosting behind one-hot (unknown categories ignored) and scaled numbers."""
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL), ("num", StandardScaler(), NUMERIC)]
    )
    return _fit(Pipeline([("pre", pre), ("clf", GradientBoostingClassifier(n_estimators=60, random_state=0))]), adult)


@pytest.fixture(scope="session")
def gb100_pipeline(adult: Adult) -> Pipeline:
    """The timing case: 100 trees of depth 3, one-hot plus passthrough numbers."""
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL), ("num", "passthrough", NUMERIC)]
    )
    clf = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    return _fit(Pipeline([("pre", pre), ("clf", clf)]), adult)


@pytest.fixture(scope="session")
def hgb_pipeline(adult: Adult) -> Pipeline:
    """HistGradientBoosting behind ordinal codes, numbers through remainder='passthrough'."""
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    pre = ColumnTransformer([("cat", ordinal, CATEGORICAL)], remainder="passthrough")
    return _fit(
        Pipeline(
            [("pre", pre), ("clf", HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=0))]
        ),
        adult,
    )


@pytest.fixture(scope="session")
def rf_pipeline(adult: Adult) -> Pipeline:
    """RandomForest behind imputed one-hot with infrequent categories; fnlwgt dropped by remainder='drop'."""
    cat = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(min_frequency=30, handle_unknown="infrequent_if_exist")),
        ]
    )
    used = [c for c in NUMERIC if c != "fnlwgt"]
    pre = ColumnTransformer([("cat", cat, CATEGORICAL), ("num", "passthrough", used)], remainder="drop")
    clf = RandomForestClassifier(n_estimators=40, max_depth=8, random_state=0)
    return _fit(Pipeline([("pre", pre), ("clf", clf)]), adult)


@pytest.fixture(scope="session")
def et_pipeline(adult: Adult) -> Pipeline:
    """ExtraTrees behind one-hot with drop='if_binary'."""
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(drop="if_binary", handle_unknown="ignore"), CATEGORICAL),
            ("num", "passthrough", NUMERIC),
        ]
    )
    clf = ExtraTreesClassifier(n_estimators=40, max_depth=8, random_state=0)
    return _fit(Pipeline([("pre", pre), ("clf", clf)]), adult)


@pytest.fixture(scope="session")
def lr_pipeline(adult: Adult) -> Pipeline:
    """LogisticRegression behind one-hot, a nested log1p + min-max pipeline and a scaled remainder."""
    money = Pipeline(
        [("log", FunctionTransformer(np.log1p, feature_names_out="one-to-one")), ("scale", MinMaxScaler())]
    )
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("money", money, ["capital-gain", "capital-loss"]),
        ],
        remainder=StandardScaler(),
    )
    return _fit(Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=2000))]), adult)


@pytest.fixture(scope="session")
def numeric_gb(adult: Adult) -> GradientBoostingClassifier:
    """A bare GradientBoosting on the numeric columns (no preprocessing), fitted on a DataFrame."""
    clf = GradientBoostingClassifier(n_estimators=30, max_depth=2, random_state=0)
    return clf.fit(adult.train[NUMERIC], adult.y)
