"""The verified fast scoring path gives exactly the pipeline's probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from explainers import AdditivityError
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
        # The example (binary boosting, prior init) takes the margin straight from its trees, and that margin is
        # decision_function's, bit for bit, on rows it was not verified on.
        assert model.fast.stages
        _, margins = model.fast.score_margins(records)
        native = model.adapter.native()
        assert native is not None
        expected = native.estimator.decision_function(native.preprocessor.transform(to_frame(manifest, records)))
        np.testing.assert_array_equal(margins, expected)


def test_the_explainer_takes_the_scorers_margins_and_still_checks_its_own_trees(gateway: Gateway) -> None:
    """Binary boosting scores by its margin (the logistic link, verified bit for bit): the exact explainer
    takes that margin instead of predicting again, gives the same values, and refuses a margin that is not
    its trees' (the additivity check is against the scorer's output, not against itself)."""
    with gateway.app.app_context():
        row = db.session.query(ScoringModel).filter_by(name="german-credit").one()
        model = runtime.cache().get(row.id)
        assert model.fast is not None and model.fast.link
        assert model.explanation is not None
        explainer = model.explanation.explainer
        records = to_frame(model.manifest, [gateway.sample["features"]]).to_dict("records")
        records += model.background.iloc[:5].to_dict("records") if model.background is not None else []
        scores, margins = model.score_margins(records)
        assert margins is not None
        np.testing.assert_array_equal(scores, model.adapter.score(to_frame(model.manifest, records)))
        given = explainer.explain(records, outputs=scores, margins=margins)
        own = explainer.explain(records, outputs=scores)
        for a, b in zip(given, own, strict=True):
            assert a.attributions == pytest.approx(b.attributions, abs=1e-12)
            assert a.additivity_error <= 1e-9
        with pytest.raises(AdditivityError):
            explainer.explain(records, outputs=scores, margins=margins + 0.05)


@pytest.mark.parametrize(("init", "stages"), [("zero", True), (None, True), ("logistic", False)])
def test_margins_come_from_the_trees_only_when_the_init_is_a_constant(init: str | None, stages: bool) -> None:
    """An init estimator whose raw prediction depends on the row (here a logistic regression) cannot be taken
    once for all rows: that model keeps decision_function; a zero or prior init takes the trees' own loop."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from gateway.adapters.base import NativeModel
    from gateway.adapters.fast import verified_fast_scorer

    X, y = adult()
    X, y = X.iloc[:2000], y[:2000]
    numeric, categorical = ["age", "hours_per_week"], ["workclass", "sex"]
    X = X[numeric + categorical]
    pre = ColumnTransformer([("num", StandardScaler(), numeric),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)])
    estimator = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0,
                                           init={"zero": "zero", None: None, "logistic": LogisticRegression()}[init])
    pipeline = Pipeline([("pre", pre), ("model", estimator)]).fit(X, y)
    native = NativeModel(pipeline, pipeline[:-1], pipeline[-1], ">50K")
    check = X.iloc[:200]
    positive = list(estimator.classes_).index(">50K")
    scorer = verified_fast_scorer(native, list(X.columns), set(numeric), check, pipeline.predict_proba(check)[:, positive])
    assert scorer is not None and scorer.link and scorer.stages is stages
    rows = X.iloc[500:800]
    scores, margins = scorer.score_margins(rows.to_dict("records"))
    np.testing.assert_array_equal(scores, pipeline.predict_proba(rows)[:, positive])
    np.testing.assert_array_equal(margins, pipeline.decision_function(rows))


def test_adult_data_is_available_for_model_independent_tests() -> None:
    X, y = adult()
    assert len(X) == 16281 and set(y) == {">50K", "<=50K"}


def test_recourse_scores_its_candidates_as_the_rows_themselves(gateway: Gateway) -> None:
    """The recourse search scores its candidates as variants of the person's row (the fast scorer transforms each
    changed value once, not every row): for every adverse row of the example's background, the options are those of
    the search over whole rows scored one dict each, each option's score is its whole row's, and no single change
    cheaper than the options offered flips the outcome."""
    from explainers import RecourseSearch
    from gateway import recourse

    with gateway.app.app_context():
        row = db.session.query(ScoringModel).filter_by(name="german-credit").one()
        model = runtime.cache().get(row.id)
        assert model.fast is not None and model.background is not None
        policy = recourse.binary_policy(model.manifest)
        assert policy is not None
        specs = [recourse._spec(f) for f in recourse.offered(model.manifest)]

        def search(scorer: object, **kind: bool) -> RecourseSearch:
            return RecourseSearch(scorer, specs, threshold=policy.threshold, favourable=recourse._favourable(policy),
                                  max_options=recourse.MAX_OPTIONS, max_steps=recourse.MAX_STEPS,
                                  pair_steps=recourse.PAIR_STEPS, **kind).fit()

        by_rows, by_variants = search(model.score, records=True), search(model.score_variants, variants=True)
        adverse = with_pairs = 0
        for person in model.background.to_dict("records"):
            score = float(model.score([person])[0])
            if not policy.decide(score)[1]:
                continue
            adverse += 1
            options = by_variants.explain(person, score)
            assert options == by_rows.explain(person, score)
            stored = recourse.compute(model, person, score)["options"]
            assert [(sorted(o["changes"]), o["cost"], o["score"]) for o in stored] == [
                (sorted(o.changes), round(o.cost, 9), o.score) for o in options]
            with_pairs += any(len(o.changes) == 2 for o in options)
            for option in options:
                assert model.score([person | option.changes])[0] == option.score and not policy.decide(option.score)[1]
            offered = {tuple(o.changes): o.cost for o in options}
            bound = options[-1].cost if len(options) == recourse.MAX_OPTIONS else float("inf")
            for spec in specs:
                candidates = by_rows._candidates(spec, person[spec.name], recourse.MAX_STEPS)
                scores = model.score([person | {spec.name: value} for value, _ in candidates]) if candidates else []
                for (value, cost), s in zip(candidates, scores, strict=True):
                    if not policy.decide(float(s))[1]:  # this single change flips the outcome
                        assert cost >= offered.get((spec.name,), bound), (spec.name, value, cost, options)
        assert adverse >= 15 and with_pairs >= 1, (adverse, with_pairs)
