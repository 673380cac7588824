"""Counterfactual recourse on the German credit example: every option flips the outcome when re-scored,
touches only mutable features, stays in range and in the allowed direction."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from explainers import RecourseOption, RecourseSearch
from explainers.recourse import MutableFeature

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def german() -> tuple[Any, Any, Any, dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("train", ROOT / "examples" / "german_credit" / "train.py")
    assert spec and spec.loader
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    X, y = train.load_data()
    pipeline = train.make_pipeline().fit(X, y)
    return X, y, pipeline, train.load_schema()


def _mutable(schema: dict[str, Any], withheld: set[str]) -> list[MutableFeature]:
    specs = []
    for f in schema["features"]:
        if not f.get("mutable") or f.get("disclosure") == "withhold" or f["name"] in withheld:
            continue
        if f["type"] == "number":
            step = {"duration_months": 6.0, "credit_amount": 500.0}.get(f["name"], 1.0)
            specs.append(MutableFeature(f["name"], "number", f.get("min"), f.get("max"), step=step))
        else:
            specs.append(MutableFeature(f["name"], "category", categories=tuple(f["categories"])))
    return specs


def test_options_flip_the_outcome_touch_only_mutable_features_and_stay_in_range(german: tuple) -> None:
    X, _, pipeline, schema = german
    mutable = _mutable(schema, withheld=set())
    allowed = {m.name: m for m in mutable}
    search = RecourseSearch(pipeline, mutable, threshold=0.5, positive_class="good").fit()
    scores = pipeline.predict_proba(X)[:, list(pipeline.classes_).index("good")]
    adverse = X[scores < 0.5].head(8)
    assert len(adverse) == 8
    with_options = 0
    for _, row in adverse.iterrows():
        record = row.to_dict()
        options = search.explain(record)
        with_options += bool(options)
        assert len(options) <= 3
        assert len({tuple(sorted(o.changes)) for o in options}) == len(options)  # diverse: other feature sets
        assert [o.cost for o in options] == sorted(o.cost for o in options)
        for option in options:
            assert isinstance(option, RecourseOption)
            assert set(option.changes) <= set(allowed)  # never immutable (age, sex ...) features
            changed = record | option.changes
            frame = pd.DataFrame([changed])[list(X.columns)].astype(X.dtypes.to_dict())
            rescored = float(pipeline.predict_proba(frame)[0, 1])
            assert rescored >= 0.5 and rescored == pytest.approx(option.score, abs=1e-12)  # verified flip
            for name, value in option.changes.items():
                spec = allowed[name]
                if spec.kind == "number":
                    assert spec.minimum <= value <= spec.maximum
                else:
                    assert value in spec.categories and value != record[name]
    assert with_options >= 6


def test_direction_is_respected_and_favourable_rows_need_nothing(german: tuple) -> None:
    X, _, pipeline, _ = german
    only_up = [MutableFeature("duration_months", "number", 1, 120, step=6.0, direction="increase")]
    only_down = [MutableFeature("duration_months", "number", 1, 120, step=6.0, direction="decrease")]
    scores = pipeline.predict_proba(X)[:, 1]
    row = X[scores < 0.5].iloc[0].to_dict()
    for spec, sign in ((only_up, 1), (only_down, -1)):
        for option in RecourseSearch(pipeline, spec, positive_class="good").fit().explain(row):
            assert np.sign(option.changes["duration_months"] - row["duration_months"]) == sign
    good = X[scores > 0.8].iloc[0].to_dict()
    assert RecourseSearch(pipeline, only_down, positive_class="good").fit().explain(good) == []


def test_a_scoring_function_of_records_is_searched_as_the_model(german: tuple) -> None:
    """The gateway passes its loaded model's scoring function (raw records in, scores out): same options."""
    X, _, pipeline, schema = german
    mutable = _mutable(schema, withheld=set())
    seen: list[int] = []

    def score(rows: list[dict[str, Any]]) -> np.ndarray:
        assert isinstance(rows, list) and isinstance(rows[0], dict)
        seen.append(len(rows))
        frame = pd.DataFrame(rows)[list(X.columns)].astype(X.dtypes.to_dict())
        return pipeline.predict_proba(frame)[:, 1]

    row = X[pipeline.predict_proba(X)[:, 1] < 0.5].iloc[0].to_dict()
    by_records = RecourseSearch(score, mutable, records=True).fit().explain(row)
    by_model = RecourseSearch(pipeline, mutable, positive_class="good").fit().explain(row)
    assert seen and by_records == by_model and by_records


def test_fractional_steps_land_on_round_values() -> None:
    spec = [MutableFeature("x", "number", 0.0, 1.0, step=0.1, direction="increase")]
    search = RecourseSearch(lambda rows: np.array([1.0 if r["x"] >= 0.3 else 0.0 for r in rows]), spec,
                            records=True).fit()
    (option,) = search.explain({"x": 0.0})
    assert option.changes == {"x": 0.3} and option.cost == pytest.approx(3.0)


@pytest.mark.parametrize(("spec", "value"), [
    (MutableFeature("n", "number", 1.0, 4.0, step=1.0), 2),  # both bounds reached within the steps
    (MutableFeature("n", "number", 1.0, 120.0, step=6.0, direction="increase"), 100),
    (MutableFeature("n", "number", 0.0, 1.0, step=0.1, scale=0.5, direction="decrease"), 0.7),
    (MutableFeature("n", "number", 10.0, 20.0, step=3.0), 5),  # below its minimum: steps up enter the range
    (MutableFeature("n", "number", None, 3.0, step=0.25), -40.0),
])
def test_number_changes_are_every_step_in_range_in_order(spec: MutableFeature, value: float) -> None:
    """Stepping stops on the side a bound was passed (every further step passes it too): the same changes as
    trying all steps each way the direction allows."""
    search = RecourseSearch(lambda rows: np.zeros(len(rows)), [spec], records=True).fit()
    signs = {"any": (1, -1), "increase": (1,), "decrease": (-1,)}[spec.direction]
    every = [round(float(value) + sign * k * spec.step, 9) for k in range(1, 21) for sign in signs]
    inside = [v for v in every if (spec.minimum is None or v >= spec.minimum) and (spec.maximum is None or v <= spec.maximum)]
    assert search._candidates(spec, value, 20) == [(v, abs(v - value) / (spec.scale or spec.step)) for v in inside]
    assert inside
