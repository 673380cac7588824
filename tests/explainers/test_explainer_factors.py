"""Main factors: ranking, bands, and the confidentiality property, checked by trying to solve for secrets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest
from explainer_helpers import ADULT_COLUMNS, POSITIVE, Adult
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.pipeline import Pipeline

from explainers import (
    DISCLOSURES,
    ConfidentialBucket,
    Factor,
    FactorSelection,
    FactorSelector,
    NotFittedError,
    RawExplanation,
    TreeExplainer,
    band_edges,
    band_of,
    rank_features,
    select_factors,
)


def explanation(
    attributions: Mapping[str, float], base: float = 0.25, null_features: Sequence[str] = ()
) -> RawExplanation:
    """An explanation value object with exact additivity (for selection rules, not for models)."""
    return RawExplanation(
        null_features=tuple(null_features),
        base_value=base,
        attributions=dict(attributions),
        output=base + math.fsum(attributions.values()),
        output_space="log_odds",
        additivity_error=0.0,
        method="tree_shap_interventional",
        explainer_version="1.0.0",
        shap_version="0.51.0",
        background_size=100,
        random_state=0,
    )


# -- ranking, top-k, bands ---------------------------------------------------------------------------


def test_rank_by_magnitude_ties_broken_by_name() -> None:
    assert rank_features({"b": 0.5, "a": -0.5, "d": 0.0, "c": 0.7}) == ["c", "a", "b", "d"]


def test_top_k_among_nameable_features() -> None:
    attrs = {"a": 0.9, "b": -0.8, "secret": 5.0, "c": 0.1, "zero": 0.0, "d": -0.1}
    policy = {"a": "show", "b": "show", "secret": "withhold", "c": "show", "zero": "show", "d": "show"}
    values = {"a": 1, "b": "x", "secret": 3, "c": np.int64(2), "zero": 0, "d": 7}
    selection = select_factors(explanation(attrs), policy, values=values, max_factors=3)
    assert [f.feature for f in selection.factors] == ["a", "b", "c"]  # c and d tie at 0.1: by name
    assert selection.factors[0] == Factor("a", 0.9, "raised", "show", 1, None, rank=1)
    assert selection.factors[1].direction == "lowered"
    assert selection.confidential == ConfidentialBucket(count=3, contribution=5.0 + 0.0 - 0.1, direction="raised")
    assert selection.base_value_disclosed and selection.base_value == 0.25
    everything = select_factors(explanation(attrs), policy, values=values, max_factors=10)
    assert "zero" not in [f.feature for f in everything.factors]  # a zero did not influence the result
    # {secret, zero} would publish the secret (zero gives no cover): d, the smallest shown, joins them
    assert [f.feature for f in everything.factors] == ["a", "b", "c"]
    assert isinstance(everything.factors[-1].value, int)  # numpy scalars become plain values


def test_band_edges_are_quantiles_and_lookup_is_half_open() -> None:
    assert band_edges([1, 2, 3, 4, 5, 6, 7, 8]) == (2.0, 4.0, 6.0)
    assert band_edges([0, 0, 0, 0, 0, 10, 20, 30]) == (10.0,)  # repeated quartiles collapse, none at the minimum
    assert band_edges([np.nan, 5.0]) == ()  # one value: no inner edge (the band is everything)
    assert band_edges([], 4) == ()
    edges = (2.0, 4.0, 6.0)
    assert band_of(1, edges) == (None, 2.0)
    assert band_of(2, edges) == (2.0, 4.0)  # an edge belongs to the band it opens
    assert band_of(5.5, edges) == (4.0, 6.0)
    assert band_of(6, edges) == (6.0, None)
    assert band_of(float("nan"), edges) == (None, None)
    assert band_of(None, edges) == (None, None)
    assert band_of(3, ()) == (None, None)
    with pytest.raises(ValueError, match="strictly increasing"):
        band_of(1, (3.0, 2.0))


def test_selector_bands_from_background_or_manifest(adult: Adult) -> None:
    policy = {name: "show" for name in ADULT_COLUMNS}
    policy.update({"age": "band", "hours-per-week": "band", "sex": "withhold", "race": "withhold"})
    selector = FactorSelector(policy, max_factors=14, bands={"hours-per-week": [20, 40, 60]})
    with pytest.raises(NotFittedError):
        selector.select(explanation(dict.fromkeys(ADULT_COLUMNS, 0.1)), {})
    selector.fit(adult.background)
    quartiles = np.quantile(adult.background["age"], [0.25, 0.5, 0.75], method="inverted_cdf")
    assert selector.band_edges_ == {"age": tuple(np.unique(quartiles)), "hours-per-week": (20.0, 40.0, 60.0)}
    row = adult.rows.iloc[0]
    attrs = {name: 0.01 * (i + 1) for i, name in enumerate(ADULT_COLUMNS)}
    selection = selector.select(explanation(attrs), row)
    shown = {f.feature: f for f in selection.factors}
    assert shown["age"].value is None and shown["age"].band == band_of(row["age"], selector.band_edges_["age"])
    assert shown["hours-per-week"].band == band_of(row["hours-per-week"], (20, 40, 60))
    assert shown["workclass"].value == row["workclass"] and shown["workclass"].band is None
    assert "sex" not in shown and "race" not in shown
    with pytest.raises(ValueError, match="no disclosure policy"):
        select_factors(explanation({"unlisted": 1.0}), policy)
    with pytest.raises(ValueError, match="unknown disclosure policies"):
        select_factors(explanation({"a": 1.0}), {"a": "publish"})


def test_no_withheld_features_no_bucket() -> None:
    selection = select_factors(
        explanation({"a": 1.0, "b": -2.0, "c": 0.5}), dict.fromkeys("abc", "show"), max_factors=1
    )
    assert [f.feature for f in selection.factors] == ["b"]
    assert selection.confidential is None and selection.base_value_disclosed


def test_a_lone_withheld_feature_takes_the_smallest_shown_factor_along() -> None:
    attrs = {"a": 1.0, "b": -0.5, "secret": 0.3}
    policy = {"a": "show", "b": "show", "secret": "withhold"}
    selection = select_factors(explanation(attrs), policy, max_factors=4)
    assert [f.feature for f in selection.factors] == ["a"]  # b moved into the bucket
    assert selection.confidential == ConfidentialBucket(count=2, contribution=-0.2, direction="lowered")


def test_a_model_with_one_withheld_feature_hides_size_and_base() -> None:
    selection = select_factors(explanation({"secret": -0.7}), {"secret": "withhold"})
    assert selection.factors == ()
    assert selection.confidential == ConfidentialBucket(count=1, contribution=None, direction="lowered")
    assert not selection.base_value_disclosed and selection.base_value is None


def test_a_feature_known_to_be_zero_gives_no_cover() -> None:
    """s1 contributes 0: a bucket {s1, s2} would publish s2's own contribution, so `a` joins it."""
    selection = select_factors(
        explanation({"a": 1.0, "s1": 0.0, "s2": 0.4}), {"a": "show", "s1": "withhold", "s2": "withhold"}
    )
    assert selection.factors == ()
    assert selection.confidential == ConfidentialBucket(count=3, contribution=1.4, direction="raised")


def test_a_null_player_gives_no_cover_and_without_cover_size_and_base_are_hidden() -> None:
    attrs = {"ignored": 0.0, "secret": -0.3}
    selection = select_factors(explanation(attrs, null_features=["ignored"]), {"ignored": "show", "secret": "withhold"})
    assert selection.confidential == ConfidentialBucket(count=2, contribution=None, direction="lowered")
    assert not selection.base_value_disclosed and selection.base_value is None


def test_a_withheld_null_player_needs_no_protection() -> None:
    """A withheld feature that is 0 by the model's structure reveals nothing: the bucket may be published."""
    attrs = {"a": 1.0, "b": 0.5, "secret": 0.0}
    selection = select_factors(explanation(attrs, null_features=["secret"]), {"a": "show", "b": "show",
                                                                              "secret": "withhold"})
    assert [f.feature for f in selection.factors] == ["a", "b"]
    assert selection.confidential == ConfidentialBucket(count=1, contribution=0.0, direction=None)


# -- the confidentiality property -------------------------------------------------------------------


def published_equations(
    selection: FactorSelection, features: Sequence[str], bucket_members: Sequence[str], known: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Return (A, b) with A @ contributions = b: every linear fact the published fields state.

    Uses ONLY published fields; `bucket_members` is what the adversary infers from the public rule, and
    `known` the features the adversary knows contribute 0 without being told (structural zeros).
    """
    index = {name: i for i, name in enumerate(features)}
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    for name in known:
        row = np.zeros(len(features))
        row[index[name]] = 1.0
        rows.append(row)
        rhs.append(0.0)
    for factor in selection.factors:
        row = np.zeros(len(features))
        row[index[factor.feature]] = 1.0
        rows.append(row)
        rhs.append(factor.contribution)
    bucket = selection.confidential
    if bucket is not None and bucket.contribution is not None:
        row = np.zeros(len(features))
        row[[index[name] for name in bucket_members]] = 1.0
        rows.append(row)
        rhs.append(bucket.contribution)
    if selection.base_value_disclosed:
        assert selection.base_value is not None
        rows.append(np.ones(len(features)))  # additivity: base + sum(all) = output
        rhs.append(selection.output - selection.base_value)
    return np.array(rows).reshape(-1, len(features)), np.array(rhs)


def derivable(a: np.ndarray, feature: int) -> bool:
    """Return whether the unit vector of `feature` lies in the row space of `a`."""
    if a.shape[0] == 0:
        return False
    unit = np.zeros(a.shape[1])
    unit[feature] = 1.0
    return bool(np.linalg.matrix_rank(np.vstack([a, unit])) == np.linalg.matrix_rank(a))


def leaks(
    selection: FactorSelection,
    truth: RawExplanation,
    policy: Mapping[str, str],
    bucket_members: Callable[[FactorSelection, Sequence[str]], Sequence[str]],
) -> dict[str, float]:
    """Return {withheld feature: solved contribution} for every withheld contribution an adversary can solve.

    The adversary knows which features are structurally zero - every null player and, stronger, every
    feature whose contribution is exactly 0 - and gains nothing by "solving" for one of those.
    """
    features = sorted(truth.attributions)
    known = sorted(set(truth.null_features) | {f for f in features if truth.attributions[f] == 0.0})
    a, b = published_equations(selection, features, bucket_members(selection, features), known)
    c = np.array([truth.attributions[f] for f in features])
    np.testing.assert_allclose(a @ c, b, atol=1e-6)  # true up to the additivity error: we model what is published
    solved = {}
    for i, name in enumerate(features):
        if policy[name] == "withhold" and name not in known and derivable(a, i):
            solution = np.linalg.lstsq(a, b, rcond=None)[0]  # minimum-norm solution pins derivable entries
            solved[name] = float(solution[i])
    for name, value in solved.items():
        assert value == pytest.approx(truth.attributions[name], abs=1e-6)  # a real leak, not an artefact
    return solved


def ours(selection: FactorSelection, features: Sequence[str]) -> list[str]:
    """The public rule: when there is a bucket, every feature not shown is in it."""
    shown = {f.feature for f in selection.factors}
    return [f for f in features if f not in shown]


def naive_select(
    truth: RawExplanation, policy: Mapping[str, str], max_factors: int, hide_lone_bucket: bool = False
) -> FactorSelection:
    """A plausible but wrong selection: bucket = withheld features only, base always disclosed."""
    ranked = rank_features(truth.attributions)
    shown = [f for f in ranked if policy[f] != "withhold" and truth.attributions[f] != 0][:max_factors]
    withheld = [f for f in ranked if policy[f] == "withhold"]
    total = math.fsum(truth.attributions[f] for f in withheld)
    size: float | None = None if (hide_lone_bucket and len(withheld) == 1) else total
    return FactorSelection(
        output=truth.output,
        output_space=truth.output_space,
        base_value=truth.base_value,
        base_value_disclosed=True,
        factors=tuple(Factor(f, truth.attributions[f], "raised", "show") for f in shown),
        confidential=ConfidentialBucket(len(withheld), size, None) if withheld else None,
    )


def naive_members(policy: Mapping[str, str]) -> Callable[[FactorSelection, Sequence[str]], list[str]]:
    return lambda selection, features: [f for f in features if policy[f] == "withhold"]


WITHHELD_SETS = [["sex"], ["sex", "race"], ["sex", "race", "native-country"]]


@pytest.fixture(scope="module")
def real_explanations(adult: Adult, gb_pipeline: Pipeline) -> list[RawExplanation]:
    explainer = TreeExplainer(gb_pipeline, output_space="log_odds", positive_class=POSITIVE).fit(adult.background)
    return explainer.explain(adult.rows)


@pytest.mark.parametrize("withheld", WITHHELD_SETS, ids=lambda w: f"{len(w)}-withheld")
def test_no_withheld_contribution_can_be_solved_for_on_a_real_model(
    real_explanations: list[RawExplanation], withheld: list[str]
) -> None:
    policy = {name: ("withhold" if name in withheld else "show") for name in ADULT_COLUMNS}
    policy["age"] = "band"
    edges = {"age": (30.0, 45.0)}
    checked = 0
    for max_factors in (0, 1, 4, len(ADULT_COLUMNS) - len(withheld) - 1, len(ADULT_COLUMNS)):
        for truth in real_explanations:
            values = dict.fromkeys(ADULT_COLUMNS, 40)
            selection = select_factors(truth, policy, values=values, max_factors=max_factors, band_edges=edges)
            assert leaks(selection, truth, policy, ours) == {}
            assert selection.confidential is not None and selection.confidential.count >= 2
            checked += 1
    assert checked == 5 * len(real_explanations)


@pytest.mark.parametrize("withheld", WITHHELD_SETS[:1], ids=["1-withheld"])
def test_the_solver_catches_naive_selections(real_explanations: list[RawExplanation], withheld: list[str]) -> None:
    """The check above can fail: the same solver finds the secret when the selection is naive."""
    policy = {name: ("withhold" if name in withheld else "show") for name in ADULT_COLUMNS}
    members = naive_members(policy)
    for truth in real_explanations[:50]:
        if truth.attributions["sex"] == 0.0:
            continue  # known to be 0 before anything is published: no secret to leak
        # publishing the lone withheld feature's bucket: its contribution is the bucket
        leaked = leaks(naive_select(truth, policy, max_factors=4), truth, policy, members)
        assert leaked == {"sex": pytest.approx(truth.attributions["sex"], abs=1e-6)}
        # hiding the bucket but showing every other feature: output - base - sum(shown) reveals it
        hidden = naive_select(truth, policy, max_factors=len(ADULT_COLUMNS), hide_lone_bucket=True)
        if all(truth.attributions[f] != 0 for f in ADULT_COLUMNS if f not in withheld):  # nothing known to be 0
            assert set(leaks(hidden, truth, policy, members)) == {"sex"}
        # and ours, on the same rows, leaks nothing
        assert leaks(select_factors(truth, policy, max_factors=len(ADULT_COLUMNS)), truth, policy, ours) == {}


@st.composite
def selection_cases(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, str], int, float, list[str]]:
    n = draw(st.integers(min_value=1, max_value=7))
    names = [f"f{i}" for i in range(n)]
    value = st.one_of(
        st.sampled_from([0.0, 0.5, -0.5, 1.0, -1.0]),  # zeros and ties are the edge cases
        st.floats(min_value=-3, max_value=3, allow_nan=False, allow_infinity=False),
    )
    attrs = {name: draw(value) for name in names}
    policy = {name: draw(st.sampled_from(DISCLOSURES)) for name in names}
    if "withhold" not in policy.values():
        policy[draw(st.sampled_from(names))] = "withhold"
    zeros = [name for name in names if attrs[name] == 0.0]
    nulls = [name for name in zeros if draw(st.booleans())]  # structural zeros the reader knows of
    return (attrs, policy, draw(st.integers(min_value=0, max_value=8)), draw(st.floats(min_value=-2, max_value=2)),
            nulls)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(selection_cases())
def test_no_withheld_contribution_can_be_solved_for_in_any_shape(case: tuple) -> None:
    attrs, policy, max_factors, base, nulls = case
    truth = explanation(attrs, base, nulls)
    edges = {name: (0.0,) for name in attrs}
    selection = select_factors(
        truth, policy, values=dict.fromkeys(attrs, 1.0), max_factors=max_factors, band_edges=edges
    )
    assert leaks(selection, truth, policy, ours) == {}
    assert len(selection.factors) <= max_factors
    assert all(policy[f.feature] != "withhold" for f in selection.factors)
    assert [f.feature for f in selection.factors] == [
        f for f in rank_features(attrs) if f in {g.feature for g in selection.factors}
    ]
    bucket = selection.confidential
    assert bucket is not None
    if bucket.contribution is None:
        # only when no cover exists: fewer than two features with a non-zero contribution at all
        assert not selection.base_value_disclosed and selection.factors == ()
        assert sum(1 for v in attrs.values() if v != 0.0) < 2
    else:
        shown = math.fsum(f.contribution for f in selection.factors)
        assert shown + bucket.contribution == pytest.approx(truth.output - truth.base_value, abs=1e-9)


def test_published_fields_do_not_name_bucket_members() -> None:
    selection = select_factors(
        explanation({"a": 1.0, "secret_income": 0.3, "secret_sex": -0.2}),
        {"a": "show", "secret_income": "withhold", "secret_sex": "withhold"},
    )
    published = repr(dataclasses.asdict(selection))
    assert "secret" not in published


# -- cover: features a reader knows to be zero ---------------------------------------------------------

LR_FEATURES = ["age", "education-num", "hours-per-week", "capital-gain", "fnlwgt", "sex", "race"]


@pytest.fixture(scope="module")
def sparse_lr_explanations(adult: Adult) -> list[RawExplanation]:
    """An L1 logistic regression that ignores fnlwgt and race: 12 explanations of real rows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from explainers import LinearExplainer

    numbers = ["age", "education-num", "hours-per-week", "capital-gain", "fnlwgt"]
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["sex", "race"]),
         ("num", StandardScaler(), numbers)]
    )
    clf = LogisticRegression(l1_ratio=1.0, C=0.01, solver="liblinear")
    model = Pipeline([("pre", pre), ("clf", clf)]).fit(adult.train[LR_FEATURES], adult.y)
    names = [str(n) for n in pre.get_feature_names_out()]
    ignored = {n for n, w in zip(names, clf.coef_.ravel(), strict=True) if w == 0.0}
    assert {"num__fnlwgt", "cat__race_White", "cat__race_Black"} <= ignored  # the case this test is about
    explainer = LinearExplainer(model, positive_class=POSITIVE).fit(adult.background[LR_FEATURES])
    return explainer.explain(adult.rows[LR_FEATURES].iloc[:12])


def test_a_bucket_of_the_withheld_feature_and_ignored_features_would_publish_it(
    sparse_lr_explanations: list[RawExplanation],
) -> None:
    """The reported case: {withheld, ignored} as the bucket is the withheld contribution itself.

    The former rule (bucket = everything not shown, cover counted by members) leaked on every row where
    the four used numbers are shown; the new rule moves a shown factor in and leaks on none.
    """
    policy = dict.fromkeys(LR_FEATURES, "show") | {"sex": "withhold"}
    former, ours_leaks = 0, 0
    for truth in sparse_lr_explanations:
        assert {"fnlwgt", "race"} <= set(truth.null_features)
        assert truth.attributions["sex"] != 0.0
        shown = [f for f in rank_features(truth.attributions) if policy[f] != "withhold" and truth.attributions[f]][:4]
        hidden = [f for f in LR_FEATURES if f not in shown]
        bucket_total = math.fsum(truth.attributions[f] for f in hidden)
        if bucket_total == truth.attributions["sex"]:
            former += 1  # what the former selection published as the bucket
        selection = select_factors(truth, policy, max_factors=4)
        assert selection.confidential is not None and selection.confidential.contribution is not None
        assert len(selection.factors) == 3  # one shown factor gave its place to cover the withheld one
        assert selection.confidential.contribution != pytest.approx(truth.attributions["sex"], abs=1e-3)
        ours_leaks += len(leaks(selection, truth, policy, ours))
    assert former == 12 and ours_leaks == 0


def test_estimates_overlapping_within_their_errors_share_a_rank() -> None:
    truth = dataclasses.replace(
        explanation({"a": 0.050, "b": -0.047, "c": 0.030, "d": 0.001}),
        errors={"a": 0.002, "b": 0.002, "c": 0.002, "d": 0.0005},
    )
    selection = select_factors(truth, dict.fromkeys("abcd", "show"), max_factors=4)
    assert selection.estimate
    assert [(f.feature, f.rank, f.error) for f in selection.factors] == [
        ("a", 1, 0.002), ("b", 1, 0.002), ("c", 3, 0.002), ("d", 4, 0.0005)
    ]
    exact = select_factors(explanation({"a": 0.05, "b": -0.05, "c": 0.03}), dict.fromkeys("abc", "show"))
    assert not exact.estimate
    assert [(f.rank, f.error) for f in exact.factors] == [(1, None), (1, None), (3, None)]  # equal: a tie
