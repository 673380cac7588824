"""The verified fast scoring path gives exactly the pipeline's probabilities."""

from __future__ import annotations

import numpy as np

from gateway import runtime
from gateway.extensions import db
from gateway.features import to_frame
from gateway.models import ScoringModel
from tests.conftest import Gateway
from tests.support.adult import adult


def test_the_example_model_scores_through_the_fast_path_exactly(gateway: Gateway) -> None:
    with gateway.app.app_context():
        row = db.session.query(ScoringModel).filter_by(name="german-credit").one()
        model = runtime.cache().get(row.id)
        assert model.fast is not None
        manifest = model.manifest
        rng = np.random.default_rng(7)
        records = []
        for _ in range(300):  # random valid applications, not the rows the path was verified on
            record = {}
            for f in manifest.features:
                if f.type == "number":
                    record[f.name] = int(rng.integers(f.min, f.max + 1)) if f.integer else float(rng.uniform(f.min, f.max))
                else:
                    record[f.name] = str(rng.choice(f.categories))
            records.append(record)
        fast = model.fast.score(records)
        assert fast is not None
        np.testing.assert_array_equal(fast, model.adapter.score(to_frame(manifest, records)))
        one = model.score(records[:1])
        np.testing.assert_array_equal(one, model.adapter.score(to_frame(manifest, records[:1])))


def test_adult_data_is_available_for_model_independent_tests() -> None:
    X, y = adult()
    assert len(X) == 16281 and set(y) == {">50K", "<=50K"}
