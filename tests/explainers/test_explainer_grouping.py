"""Transformed columns map back to the raw feature they came from, for every supported step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from explainer_helpers import ADULT_COLUMNS, CATEGORICAL, NUMERIC, Adult
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    StandardScaler,
)

from explainers import (
    UnsupportedTransformerError,
    column_groups,
    group_matrix,
    transformed_sources,
)


def _width(pre: object, frame: pd.DataFrame) -> int:
    return int(pre.transform(frame).shape[1])  # type: ignore[attr-defined]


def _check_partition(groups: dict[str, list[int]], width: int, raw: list[str]) -> None:
    assert list(groups) == raw  # every raw feature, in input order
    columns = sorted(c for cols in groups.values() for c in cols)
    assert columns == list(range(width))  # every transformed column belongs to exactly one feature


def test_one_hot_groups_have_one_column_per_category(adult: Adult, gb_pipeline: Pipeline) -> None:
    pre = gb_pipeline[:-1]
    groups = column_groups(pre, ADULT_COLUMNS)
    _check_partition(groups, _width(pre, adult.rows), ADULT_COLUMNS)
    encoder = pre[0].named_transformers_["cat"]
    for feature, categories in zip(CATEGORICAL, encoder.categories_, strict=False):
        assert len(groups[feature]) == len(categories)  # k categories (missing included) -> k columns
    for feature in NUMERIC:
        assert len(groups[feature]) == 1


def test_group_matrix_sums_columns_into_raw_features(adult: Adult, gb_pipeline: Pipeline) -> None:
    pre = gb_pipeline[:-1]
    matrix = group_matrix(pre, ADULT_COLUMNS)
    assert matrix.shape == (_width(pre, adult.rows), len(ADULT_COLUMNS))
    np.testing.assert_array_equal(matrix.sum(axis=1), 1.0)
    groups = column_groups(pre, ADULT_COLUMNS)
    for j, feature in enumerate(ADULT_COLUMNS):
        np.testing.assert_array_equal(np.flatnonzero(matrix[:, j]), groups[feature])


def test_drop_infrequent_and_remainder_drop(adult: Adult, rf_pipeline: Pipeline, et_pipeline: Pipeline) -> None:
    # rf: imputed one-hot with min_frequency=30 (infrequent categories share a column), fnlwgt dropped
    pre = rf_pipeline[:-1]
    groups = column_groups(pre, ADULT_COLUMNS)
    _check_partition(groups, _width(pre, adult.rows), ADULT_COLUMNS)
    assert groups["fnlwgt"] == []
    encoder = pre[0].named_transformers_["cat"].named_steps["onehot"]
    for feature, categories, rare in zip(CATEGORICAL, encoder.categories_, encoder.infrequent_categories_, strict=False):
        expected = len(categories) if rare is None else len(categories) - len(rare) + 1
        assert len(groups[feature]) == expected
    assert any(rare is not None for rare in encoder.infrequent_categories_)
    # et: drop="if_binary" leaves one column for sex
    groups = column_groups(et_pipeline[:-1], ADULT_COLUMNS)
    assert len(groups["sex"]) == 1


def test_remainder_passthrough_and_remainder_estimator(
    adult: Adult, hgb_pipeline: Pipeline, lr_pipeline: Pipeline
) -> None:
    for pipeline in (hgb_pipeline, lr_pipeline):
        pre = pipeline[:-1]
        groups = column_groups(pre, ADULT_COLUMNS)
        _check_partition(groups, _width(pre, adult.rows), ADULT_COLUMNS)
        assert all(len(groups[f]) == 1 for f in NUMERIC)  # ordinal codes, remainder, log1p+min-max nested


def test_imputer_indicator_selectors_bins_and_column_specs(adult: Adult) -> None:
    frame = adult.train.copy()
    frame["empty"] = np.nan  # SimpleImputer drops an all-missing column
    raw = list(frame.columns)
    occupation = Pipeline(
        [("impute", SimpleImputer(strategy="most_frequent", add_indicator=True)), ("onehot", OneHotEncoder())]
    )
    pre = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("imputed", SimpleImputer(), ["age", "empty"]),
                        ("occupation", occupation, [6]),
                        ("cats", OneHotEncoder(), make_column_selector(pattern="^(?:race|sex)$")),
                        ("bins", KBinsDiscretizer(n_bins=3, encode="onehot-dense", strategy="uniform"), slice(12, 13)),
                        ("flags", OrdinalEncoder(encoded_missing_value=-1), np.isin(np.asarray(raw), ["workclass"])),
                    ],
                    remainder="drop",
                ),
            ),
            ("select", SelectKBest(f_classif, k=8)),
        ]
    )
    with pytest.warns(UserWarning, match="Skipping features without any observed values"):
        pre.fit(frame, adult.y)
    groups = column_groups(pre, raw)
    width = int(pre.named_steps["select"].get_support().sum())
    _check_partition(groups, width, raw)
    full = transformed_sources(pre[:-1], raw)
    kept = pre.named_steps["select"].get_support(indices=True)
    np.testing.assert_array_equal(transformed_sources(pre, raw), full[kept])
    names = pre[:-1].get_feature_names_out()
    assert len(names) == len(full)
    for column, source in enumerate(full):  # spot-check against scikit-learn's own output names
        assert raw[source] in names[column]
    assert column_groups(pre[:-1], raw)["empty"] == []  # dropped by the imputer
    indicator = [n for n in names if "missingindicator_occupation" in n]
    assert indicator and all(raw[full[list(names).index(n)]] == "occupation" for n in indicator)


def test_unsupported_step_is_named(adult: Adult) -> None:
    poly = ColumnTransformer([("poly", PolynomialFeatures(degree=2), NUMERIC)])
    poly.fit(adult.train)
    with pytest.raises(UnsupportedTransformerError, match=r"'ColumnTransformer\.poly' \(PolynomialFeatures\)"):
        column_groups(poly, ADULT_COLUMNS)

    function = ColumnTransformer([("logs", FunctionTransformer(np.log1p), ["capital-gain"])])
    function.fit(adult.train)
    with pytest.raises(UnsupportedTransformerError, match="feature_names_out='one-to-one'"):
        column_groups(function, ADULT_COLUMNS)

    pca = Pipeline([("scale", ColumnTransformer([("n", StandardScaler(), NUMERIC)])), ("pca", PCA(n_components=2))])
    pca.fit(adult.train)
    with pytest.raises(UnsupportedTransformerError, match=r"'Pipeline\.pca' \(PCA\)"):
        column_groups(pca, ADULT_COLUMNS)


def test_raw_names_must_match_fitted_names(gb_pipeline: Pipeline) -> None:
    with pytest.raises(ValueError, match="differ from the names"):
        column_groups(gb_pipeline[:-1], list(reversed(ADULT_COLUMNS)))
