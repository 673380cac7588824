"""The compiled preprocessing reproduces scikit-learn's encoders exactly, column by column, fallbacks too."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from explainers import GiveUp, compile_transform

TRAIN = pd.DataFrame({"colour": ["red", "green", "blue", np.nan, "red"], "size": ["s", "m", "l", "m", "s"]})


def _objects(frame: pd.DataFrame) -> np.ndarray:
    return frame.to_numpy(dtype=object)


@pytest.mark.parametrize(("encoder", "unseen"), [
    (OneHotEncoder(handle_unknown="ignore", sparse_output=False), True),
    (OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=2, sparse_output=False), True),
    # scikit-learn warns about unseen values when a column is dropped: those rows are left to it (GiveUp)
    (OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False), False),
    (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), True),
])
def test_known_missing_and_unseen_values_are_encoded_as_scikit_learn_does(encoder: object, unseen: bool) -> None:
    ct = ColumnTransformer([("enc", encoder, ["colour", "size"])]).fit(TRAIN)
    rows = pd.DataFrame({"colour": ["blue", np.nan, "purple", "red", "green", "purple"],
                         "size": ["l", "s", "xl", "m", "xl", "s"]})
    fast = compile_transform(ct)
    if not unseen:
        with pytest.raises(GiveUp):
            fast(_objects(rows))
        rows = rows[~rows["colour"].eq("purple") & ~rows["size"].eq("xl")]
    np.testing.assert_array_equal(fast(_objects(rows)), np.asarray(ct.transform(rows), dtype=np.float64))
    np.testing.assert_array_equal(fast(_objects(rows.iloc[:0])).shape, (0, ct.transform(rows).shape[1]))


def test_an_unseen_value_the_encoder_would_refuse_is_left_to_scikit_learn() -> None:
    ct = ColumnTransformer([("enc", OneHotEncoder(handle_unknown="error", sparse_output=False),
                             ["colour", "size"])]).fit(TRAIN)
    fast = compile_transform(ct)
    known = pd.DataFrame({"colour": ["red"], "size": ["m"]})
    np.testing.assert_array_equal(fast(_objects(known)), ct.transform(known))
    with pytest.raises(GiveUp):
        fast(_objects(pd.DataFrame({"colour": ["red", "purple"], "size": ["m", "m"]})))


def _mixed_preprocessing() -> tuple[ColumnTransformer, pd.DataFrame]:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    rng = np.random.default_rng(3)
    n = 60
    data = pd.DataFrame({
        "colour": rng.choice(["red", "green", "blue"], n), "size": rng.choice(["s", "m", "l"], n),
        "amount": rng.normal(1000, 300, n), "rate": rng.integers(1, 5, n).astype(float),
        "age": rng.uniform(18, 80, n), "ignored": rng.normal(0, 1, n)})
    data.loc[::7, "amount"] = np.nan
    ct = ColumnTransformer([
        ("hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["colour"]),
        ("ord", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["size"]),
        ("amount", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), ["amount"]),
        ("rate", MinMaxScaler(clip=True), ["rate"]),
        ("drop", "drop", ["ignored"]),
    ], remainder="passthrough").fit(data)
    return ct, data


def test_variants_of_a_row_are_transformed_exactly_as_the_rows_themselves() -> None:
    """Each variant's transformed row, bit for bit, for every compiled step kind; values shared by variants
    and values only one variant takes; a dropped column changed too."""
    from explainers import compile_variants

    ct, data = _mixed_preprocessing()
    variants, transform = compile_variants(ct), compile_transform(ct)
    assert variants is not None
    rng = np.random.default_rng(5)
    raw = _objects(data)
    compared = 0
    for base in raw[:10]:
        size = 40
        changes = []
        for j in rng.choice(raw.shape[1], 4, replace=False).tolist():
            unseen = ["purple", "xl"] if j < 2 else [-0.0, 1e9, np.nan]  # unseen categories, odd numbers
            values = list(dict.fromkeys(raw[rng.choice(len(raw), 6), j].tolist() + unseen))
            changed = np.flatnonzero(rng.random(size) < 0.5)
            changes.append((j, values, changed, rng.integers(0, len(values), len(changed))))
        rows = np.repeat(base[None, :], size, axis=0)
        for j, values, changed, codes in changes:
            for i, k in zip(changed, codes, strict=True):
                rows[i, j] = values[k]
        np.testing.assert_array_equal(variants(base, size, changes), transform(rows))
        compared += 1
    assert compared == 10


def test_variants_give_up_where_the_rows_would_and_a_function_of_several_columns_is_not_split() -> None:
    from sklearn.preprocessing import FunctionTransformer

    from explainers import compile_variants

    ct = ColumnTransformer([("enc", OneHotEncoder(handle_unknown="error", sparse_output=False),
                             ["colour", "size"])]).fit(TRAIN)
    variants = compile_variants(ct)
    assert variants is not None
    base = np.array(["red", "m"], dtype=object)
    with pytest.raises(GiveUp):
        variants(base, 2, [(0, ["purple"], np.array([1]), np.array([0]))])
    np.testing.assert_array_equal(variants(base, 2, [(0, ["blue"], np.array([1]), np.array([0]))]),
                                  compile_transform(ct)(np.array([["red", "m"], ["blue", "m"]], dtype=object)))
    numbers = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    mixing = FunctionTransformer(lambda x: np.asarray(x) / np.asarray(x).sum(axis=1, keepdims=True),
                                 feature_names_out="one-to-one")
    assert compile_variants(ColumnTransformer([("f", mixing, ["a", "b"])]).fit(numbers)) is None
    assert compile_variants(ColumnTransformer([("f", FunctionTransformer(), ["a", "b"])]).fit(numbers)) is not None
