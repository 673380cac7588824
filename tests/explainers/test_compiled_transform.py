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
