"""Turn a RawExplanation into the main factors that may be shown to the person, within confidentiality limits.

Each raw feature has a disclosure policy: ``"show"`` (named, with its value and contribution),
``"band"`` (named, with the range its value falls in instead of the value) or ``"withhold"``
(never named). The selection is deterministic:

1. rank features by |contribution| descending, ties broken by feature name (estimates whose
   intervals overlap share a rank number: ``Factor.rank``);
2. the *shown* factors S are the first `max_factors` features in that ranking whose policy allows
   naming them and whose contribution is not exactly zero (a zero did not influence the result);
3. if at least one feature is withheld, every feature not shown - withheld or not - goes into ONE
   bucket H, "other factors (confidential)", published as its feature count and the sum of its
   contributions (``ConfidentialBucket``); without withheld features there is no bucket and
   the non-shown features are simply not published;
4. only *cover* protects a withheld feature: a bucket member whose contribution a reader cannot know
   without being told. A member is *determined* (no cover) when its contribution is 0 - in
   particular when the explainer reports it as a null player for this row
   (``RawExplanation.null_features``: the model ignores it, or every background row shares the
   person's value, or no split of the model separates them), which anyone who knows the model's
   structure and the background can tell. If a withheld feature with an undetermined contribution
   is the only undetermined member of H, the smallest shown factors are moved into H until it has a
   second undetermined member (one move suffices: shown factors are never 0); if there is no shown
   factor to move, the bucket is published with its direction but without its size, and the base
   value is not disclosed.

Feature names in the bucket are not part of any published field, and are not kept.

The confidentiality property
----------------------------
What may be published is: the model output y (the score, in the explained space or as a monotone
function of it), the base value b when ``base_value_disclosed``, each shown factor's contribution
c_f (f in S), and the bucket's sum B when it is not None. Claim: **no withheld feature's own
contribution c_w is a function of that published information**, even for an adversary who knows every
feature name, every disclosure policy and this algorithm (hence who knows H = F \\ S).

Proof sketch. Treat the contributions c in R^F as unknowns; the attributions are exact (SHAP
additivity: b + sum(c) = y), so what is published is a set of linear equations in c whose coefficient
rows are: e_f for f in S; 1_H (the indicator of H) when B is published; 1_F when b is published (with
right-hand side y - b). The adversary also knows, without being told, the contributions of the
determined features D (rows e_d, d in D, right-hand side 0): the strongest version of "knows which
features are structurally zero" - every feature that is 0 counts as known, whether or not it is
structurally so. Shown features are never in D (a 0 is never shown), so the unknowns left are
U = H \\ D. Restricted to U, every row above is constant: e_f (f in S) and e_d (d in D) are 0 there,
1_H and 1_F are 1 there. So every vector in the row space is constant on U. A withheld feature w in
U has e_w constant on U only if U = {w}. Step 4 makes |U| >= 2 whenever some withheld feature is in
U, unless no shown factor is left to move, and in that case neither B nor b is published, so the rows
are only e_f (f in S) and e_d (d in D), which vanish on U = {w}. In every case e_w is not in the row
space, so c_w is not determined: the solution set contains c + t(e_w - e_u) (u the other member of
U) or c + t e_w, for every real t. A withheld feature in D is not a secret the publication could
reveal: its contribution is 0 and known before anything is published. The other published fields add
no equation: `count` is |F| - |S|, and the bucket's direction is the sign of B (in the no-cover case
it tells the sign, not the size, of c_w - deliberately).

Why everything non-shown goes into the bucket: when b and y are published, the residual
y - b - sum(shown) = sum over H is always derivable, so publishing B = sum over H adds nothing. Had the
bucket held only the withheld features with the other non-shown features unpublished, the residual
would in addition reveal the sum of those others - a strictly finer partition, never needed.
The tests (``tests/explainers/test_explainer_factors.py``) check this by rank computation on real and random
explanations with 1, 2 and 3 withheld features, and show the same check catching naive selections.

Limits of the property (it is about exact derivation from what is published):
- bounds leak: when `max_factors` features are shown, every unshown nameable feature has |c| at most
  the smallest shown |c|, so if U = {w, h} then c_w lies within that distance of B;
- a contribution an adversary could pin by other means than zero (e.g. knowing a linear model's
  coefficients and the background mean) is outside D; only structure the explainer can see (null
  players) and exact zeros are taken as known;
- across decisions of the same model the base value is a constant; this is why the single-feature
  case hides it for every decision of such a model (the case depends on the model, not on the row),
  and why the base value must not be published elsewhere for such a model;
- differences of outputs between people, and whatever is known about the model's form (e.g. a linear
  model's coefficients), are outside what this selection controls.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from explainers.base import RawExplanation
from explainers.exceptions import NotFittedError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DISCLOSURES",
    "ConfidentialBucket",
    "Factor",
    "FactorSelection",
    "FactorSelector",
    "band_edges",
    "band_of",
    "rank_features",
    "rank_numbers",
    "select_factors",
]

Disclosure = Literal["show", "band", "withhold"]
Direction = Literal["raised", "lowered"]
Band = tuple[float | None, float | None]

#: The disclosure policies a feature can have.
DISCLOSURES: tuple[str, ...] = ("show", "band", "withhold")


@dataclass(frozen=True)
class Factor:
    """One named main factor: its contribution, direction, and its value (show) or band (band)."""

    feature: str
    contribution: float
    direction: Direction
    disclosure: Disclosure
    value: Any = None
    band: Band | None = None
    #: Estimates only: the ± half-width of the ~95 % interval around `contribution`.
    error: float | None = None
    #: 1-based place among the shown factors by |contribution|; estimates that overlap within their
    #: errors share it.
    rank: int | None = None


@dataclass(frozen=True)
class ConfidentialBucket:
    """All features not shown as named factors, when some are withheld: how many, and their total."""

    count: int
    contribution: float | None
    direction: Direction | None


@dataclass(frozen=True)
class FactorSelection:
    """Everything about one explanation that may be published to the person."""

    output: float
    output_space: str
    base_value: float | None
    base_value_disclosed: bool
    factors: tuple[Factor, ...]
    confidential: ConfidentialBucket | None
    #: Whether the contributions are model-agnostic estimates (each factor then carries its error).
    estimate: bool = False


def band_edges(values: Sequence[float] | np.ndarray | pd.Series, n_bands: int = 4) -> tuple[float, ...]:
    """Return the interior edges that split background values into `n_bands` quantile bands.

    Edges are observed values (inverted-CDF quantiles), strictly increasing and above the minimum;
    fewer than ``n_bands - 1`` when values repeat (capital gains that are mostly zero give one edge).
    """
    if n_bands < 1:
        raise ValueError("n_bands must be at least 1")
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0 or n_bands == 1:
        return ()
    quantiles = np.quantile(x, np.arange(1, n_bands) / n_bands, method="inverted_cdf")
    # An edge at the minimum would open a band below every observed value: drop it.
    return tuple(float(e) for e in np.unique(quantiles) if e > x.min())


def band_of(value: Any, edges: Sequence[float]) -> Band:
    """Return the band [low, high) that `value` falls in; an open end is None, a missing value (None, None)."""
    if value is None:
        return (None, None)
    v = float(value)
    if math.isnan(v):
        return (None, None)
    edges = [float(e) for e in edges]
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"band edges must be strictly increasing, got {edges}")
    i = bisect.bisect_right(edges, v)
    return (edges[i - 1] if i > 0 else None, edges[i] if i < len(edges) else None)


def rank_features(attributions: Mapping[str, float]) -> list[str]:
    """Return feature names by |contribution| descending, ties broken by name."""
    return sorted(attributions, key=lambda name: (-abs(attributions[name]), name))


def rank_numbers(
    attributions: Mapping[str, float], errors: Mapping[str, float] | None = None
) -> dict[str, int]:
    """Return each feature's 1-based rank by |contribution|; ties share a rank.

    Exact values tie only when equal. Estimates tie when their magnitudes differ by no more than the
    sum of their errors (the intervals overlap); ties chain along the ranking, so a run of
    overlapping neighbours is one tie.
    """
    ranked = rank_features(attributions)
    ranks: dict[str, int] = {}
    for i, name in enumerate(ranked):
        if i > 0:
            before = ranked[i - 1]
            gap = abs(attributions[before]) - abs(attributions[name])
            slack = (errors or {}).get(before, 0.0) + (errors or {}).get(name, 0.0)
            if gap <= slack:
                ranks[name] = ranks[before]
                continue
        ranks[name] = i + 1
    return ranks


def _direction(value: float) -> Direction | None:
    if value > 0:
        return "raised"
    if value < 0:
        return "lowered"
    return None


def select_factors(
    explanation: RawExplanation,
    disclosure: Mapping[str, str],
    *,
    values: Mapping[str, Any] | None = None,
    max_factors: int = 4,
    band_edges: Mapping[str, Sequence[float]] | None = None,
) -> FactorSelection:
    """Return the publishable main factors of one explanation (see the module docstring for the rule)."""
    contributions = {name: float(c) for name, c in explanation.attributions.items()}
    features = sorted(contributions)
    missing = [f for f in features if f not in disclosure]
    if missing:
        raise ValueError(f"no disclosure policy for features {missing}")
    invalid = {f: disclosure[f] for f in features if disclosure[f] not in DISCLOSURES}
    if invalid:
        raise ValueError(f"unknown disclosure policies {invalid}; use one of {', '.join(DISCLOSURES)}")
    if max_factors < 0:
        raise ValueError("max_factors must be >= 0")

    ranked = rank_features(contributions)
    nameable = [f for f in ranked if disclosure[f] != "withhold" and contributions[f] != 0.0]
    shown = nameable[:max_factors]
    withheld = [f for f in features if disclosure[f] == "withhold"]
    # Contributions a reader can know without being told: null players of this row, and any exact 0.
    determined = set(explanation.null_features) | {f for f in features if contributions[f] == 0.0}

    bucket: ConfidentialBucket | None = None
    base_disclosed = True
    if withheld:
        hidden = [f for f in features if f not in shown]

        def cover() -> list[str]:
            return [f for f in hidden if f not in determined]

        secret = any(disclosure[f] == "withhold" for f in cover())
        while secret and len(cover()) < 2 and shown:
            hidden.append(shown.pop())  # the smallest shown factor keeps the withheld one company
        total = math.fsum(contributions[f] for f in sorted(hidden))
        if not secret or len(cover()) >= 2:
            bucket = ConfidentialBucket(count=len(hidden), contribution=total, direction=_direction(total))
        else:
            # No cover left (e.g. a single-feature model whose feature is withheld): y - b would be the
            # withheld contribution, so neither the bucket's size nor the base value is published.
            bucket = ConfidentialBucket(count=len(hidden), contribution=None, direction=_direction(total))
            base_disclosed = False

    errors = explanation.errors
    ranks = rank_numbers({f: contributions[f] for f in shown}, errors)  # among shown factors only: a rank
    factors = []  # counted over all features would tell that a withheld one is larger
    for name in shown:
        policy = disclosure[name]
        if values is not None and name not in values:
            raise ValueError(f"the row's values lack the shown feature {name!r}")
        value = None if values is None else values[name]
        if isinstance(value, np.generic):
            value = value.item()
        band: Band | None = None
        if policy == "band":
            if values is None:
                raise ValueError(f"the value of banded feature {name!r} is needed to find its band")
            if band_edges is None or name not in band_edges:
                raise ValueError(f"no band edges for banded feature {name!r}: fit a FactorSelector or pass them")
            band = band_of(value, band_edges[name])
            value = None  # a banded value is published only as its band
        direction = _direction(contributions[name])
        assert direction is not None  # zero contributions are never shown
        factors.append(
            Factor(
                feature=name,
                contribution=contributions[name],
                direction=direction,
                disclosure=policy,  # type: ignore[arg-type]
                value=value,
                band=band,
                error=None if errors is None else float(errors[name]),
                rank=ranks[name],
            )
        )
    return FactorSelection(
        output=float(explanation.output),
        output_space=explanation.output_space,
        base_value=float(explanation.base_value) if base_disclosed else None,
        base_value_disclosed=base_disclosed,
        factors=tuple(factors),
        confidential=bucket,
        estimate=errors is not None,
    )


class FactorSelector:
    """Hold a model's disclosure policies and band edges; select the factors of its explanations."""

    def __init__(
        self,
        disclosure: Mapping[str, str],
        *,
        max_factors: int = 4,
        bands: Mapping[str, Sequence[float]] | None = None,
        n_bands: int = 4,
    ) -> None:
        self.disclosure = disclosure
        self.max_factors = max_factors
        self.bands = bands
        self.n_bands = n_bands

    def fit(self, background_raw: pd.DataFrame) -> FactorSelector:
        """Set band_edges_: the manifest's explicit edges, else quantile bands of the background."""
        explicit = dict(self.bands or {})
        edges: dict[str, tuple[float, ...]] = {}
        for name, policy in self.disclosure.items():
            if policy != "band":
                continue
            if name in explicit:
                given = tuple(float(e) for e in explicit[name])
                if any(b <= a for a, b in itertools.pairwise(given)):
                    raise ValueError(f"band edges of {name!r} must be strictly increasing, got {list(given)}")
                edges[name] = given
            elif name in background_raw.columns:
                column = background_raw[name]
                if not np.issubdtype(np.asarray(column).dtype, np.number):
                    raise ValueError(f"banded feature {name!r} is not numeric; only numbers have bands")
                edges[name] = band_edges(column, self.n_bands)
            else:
                raise ValueError(f"banded feature {name!r} has no explicit bands and is not in the background")
        self.band_edges_ = edges
        return self

    def select(self, explanation: RawExplanation, values: Mapping[str, Any]) -> FactorSelection:
        """Return the publishable factors of `explanation` for a row with raw `values`."""
        if not hasattr(self, "band_edges_"):
            raise NotFittedError(self)
        return select_factors(
            explanation,
            self.disclosure,
            values=values,
            max_factors=self.max_factors,
            band_edges=self.band_edges_,
        )
