"""Counterfactual recourse: the smallest changes to mutable features that flip an adverse outcome, verified.

For a row whose score is on the adverse side of the decision threshold, search changes to the features a
manifest marks mutable - never the others (immutable, sensitive, withheld, monitored-only: the caller
passes only mutable ones) - within each feature's declared range or categories and allowed direction
(age only goes up), and keep the options that the model itself scores on the other side of the threshold.

Search (model-agnostic, deterministic, batched): every single-feature change on a grid of the feature's
own steps (``step``, in its units, up to ``max_steps`` steps each way the direction allows, clipped to
[min, max]) and every other category; then pairs of features on a coarser grid when fewer than
`max_options` single changes flip the outcome. Cost of an option: sum over changed features of
|change| / scale (numbers; ``scale`` defaults to ``step``) or 1 (a category). Options are ranked by cost
(ties by feature names), one per set of changed features (diverse), at most `max_options`, and each
carries the score the model gave it: an option that does not flip the outcome is never returned.

What an option reveals about withheld features: it states that the model, at the person's own values of
every feature (withheld ones included) with the listed changes, scores on the other side of the
threshold. That is a statement about the model's output at a point, like the decision itself; it names
no withheld feature and publishes no attribution, so it adds no equation in the contributions of
``explainers.factors`` (its proof is unaffected). It can narrow what the person infers about the model's
response to the changed features; withheld features are never changed, so no option tells what a
different value of a withheld feature would do.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from explainers.base import resolve_positive_class
from explainers.exceptions import NotFittedError

__all__ = ["MutableFeature", "RecourseOption", "RecourseSearch", "Variants"]


@dataclass(frozen=True)
class MutableFeature:
    """A feature the person can change: its range or categories, unit step, cost scale and direction."""

    name: str
    kind: Literal["number", "category", "boolean"] = "number"
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[Any, ...] = ()
    step: float = 1.0
    scale: float | None = None
    direction: Literal["any", "increase", "decrease"] = "any"


@dataclass(frozen=True)
class RecourseOption:
    """One verified way to the other outcome: the changes (feature -> new value), their cost, the new score."""

    changes: dict[str, Any]
    cost: float
    score: float


@dataclass(frozen=True)
class Variants:
    """`size` rows equal to `base` but in the features of `changes`: feature -> (values, rows, codes), where row
    ``rows[i]`` takes ``values[codes[i]]``. The search's candidates, held by column: a scorer can transform the
    base row once and each value once instead of every row."""

    base: dict[str, Any]
    size: int
    changes: dict[str, tuple[list[Any], np.ndarray, np.ndarray]]

    def rows(self) -> list[dict[str, Any]]:
        """The variants as rows of their own (``base | {feature: value ...}``)."""
        rows = [dict(self.base) for _ in range(self.size)]
        for name, (values, changed, codes) in self.changes.items():
            for i, k in zip(changed.tolist(), codes.tolist(), strict=True):
                rows[i][name] = values[k]
        return rows


Candidates = list[tuple[Any, float]]  # (new value, cost) of one feature's changes, cheapest first


class RecourseSearch:
    """Find verified counterfactual options on mutable features for a probability model.

    `model` is a fitted classifier with ``predict_proba`` (scored on a DataFrame of the rows), or a
    function returning the score of the favourable side's class: of a DataFrame, with ``records=True``
    of the rows as a list of dicts, or with ``variants=True`` of the candidates as `Variants` of the
    person's row (the gateway passes the loaded model version that made the decision).
    """

    def __init__(
        self,
        model: Any,
        features: Sequence[MutableFeature],
        *,
        threshold: float = 0.5,
        favourable: Literal["above", "below"] = "above",
        positive_class: Any = None,
        max_options: int = 3,
        max_steps: int = 20,
        pair_steps: int = 6,
        records: bool = False,
        variants: bool = False,
        random_state: int = 0,  # the search is a deterministic grid; kept for the explainer contract
    ) -> None:
        self.model = model
        self.features = features
        self.threshold = threshold
        self.favourable = favourable
        self.positive_class = positive_class
        self.max_options = max_options
        self.max_steps = max_steps
        self.pair_steps = pair_steps
        self.records = records
        self.variants = variants
        self.random_state = random_state

    def fit(self, background_raw: Any = None) -> RecourseSearch:
        """Resolve the model's positive class and check the feature specifications."""
        self.class_index_: int | None = None
        if hasattr(self.model, "predict_proba"):
            _, self.class_index_ = resolve_positive_class(self.model, self.positive_class)
        for spec in self.features:
            if spec.kind == "number" and not spec.step > 0:
                raise ValueError(f"feature {spec.name!r}: step must be positive")
            if spec.kind == "category" and not spec.categories:
                raise ValueError(f"feature {spec.name!r}: a category feature needs its categories")
        self.features_ = tuple(self.features)
        return self

    def _score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        if self.records and self.class_index_ is None:  # a scoring function of raw records (the gateway's model)
            return np.asarray(self.model(rows), dtype=np.float64)
        import pandas as pd  # imported when a search runs: `import explainers` stays cheap (explainers/__init__.py)

        frame = pd.DataFrame.from_records(rows)
        if self.class_index_ is not None:
            return np.asarray(self.model.predict_proba(frame), dtype=np.float64)[:, self.class_index_]
        return np.asarray(self.model(frame), dtype=np.float64)

    def _score_variants(self, variants: Variants) -> np.ndarray:
        if self.variants:
            return np.asarray(self.model(variants), dtype=np.float64)
        return self._score(variants.rows())

    def _flips(self, scores: np.ndarray) -> np.ndarray:
        return scores >= self.threshold if self.favourable == "above" else scores < self.threshold

    def _candidates(self, spec: MutableFeature, value: Any, steps: int) -> list[tuple[Any, float]]:
        """Return (new value, cost) of the feature's allowed changes, cheapest first."""
        if spec.kind == "boolean":
            return [(not bool(value), 1.0)]
        if spec.kind == "category":
            return [(c, 1.0) for c in spec.categories if c != value]
        scale = spec.scale or spec.step
        out: list[tuple[Any, float]] = []
        signs = list({"any": (1, -1), "increase": (1,), "decrease": (-1,)}[spec.direction])
        for k in range(1, steps + 1):
            for sign in tuple(signs):
                # Rounded so that steps of 0.1 land on 0.3, not 0.30000000000000004 (what the person reads).
                new = round(float(value) + sign * k * spec.step, 9)
                low = spec.minimum is not None and new < spec.minimum
                high = spec.maximum is not None and new > spec.maximum
                if low or high:
                    if high if sign > 0 else low:
                        signs.remove(sign)  # past the bound it moves towards: every further step is too (monotone)
                    continue
                out.append((new, abs(new - float(value)) / scale))
        return out

    def explain(self, row: Mapping[str, Any], score: float | None = None) -> list[RecourseOption]:
        """Return up to `max_options` verified options for `row` (empty if it is not adverse or none is found).

        `score`: the row's own score when the caller has it (the model's output for `row`), not computed again."""
        if not hasattr(self, "features_"):
            raise NotFittedError(self)
        base = dict(row)
        own = self._score_variants(Variants(base, 1, {})) if score is None else np.asarray([score], dtype=np.float64)
        if self._flips(own)[0]:
            return []  # already favourable
        found: dict[tuple[str, ...], RecourseOption] = {}
        self._try(base, [((s.name,), (self._candidates(s, base[s.name], self.max_steps),)) for s in self.features_],
                  found)
        if len(found) < self.max_options and len(self.features_) >= 2:
            # A pair containing a sufficient single change is not a different option.
            coarse = [(s.name, self._candidates(s, base[s.name], self.pair_steps))
                      for s in self.features_ if (s.name,) not in found]
            self._try(base, [((a, b), (ca, cb)) for (a, ca), (b, cb) in itertools.combinations(coarse, 2)], found)
        ranked = sorted(found.values(), key=lambda o: (o.cost, sorted(o.changes)))
        return ranked[: self.max_options]

    def _try(self, base: dict[str, Any], groups: Sequence[tuple[tuple[str, ...], tuple[Candidates, ...]]],
             found: dict[tuple[str, ...], RecourseOption]) -> None:
        """Score every candidate of every feature set in one batch (a set's candidates: the product of its
        features' changes, in order); keep each set's cheapest flip (ties: by the values' repr, then the first)."""
        variants = self._variants(base, groups)
        if variants.size == 0:
            return
        scores = self._score_variants(variants)
        flipped = np.flatnonzero(self._flips(scores)).tolist()
        g, ends = 0, list(itertools.accumulate(math.prod(len(c) for c in cs) for _, cs in groups))
        for at in flipped:  # in order, group by group
            while at >= ends[g]:
                g += 1
            names, candidates = groups[g]
            picked, i = [], at - (ends[g - 1] if g else 0)
            for c in reversed(candidates):  # row-major: the last feature's changes vary fastest
                i, k = divmod(i, len(c))
                picked.append(c[k])
            picked.reverse()
            values = tuple(v for v, _ in picked)
            cost = sum(c for _, c in picked)  # x + y, as the pair's cost always was (0 + x is x)
            best = found.get(names)
            if best is None or (cost, repr(values)) < (best.cost, repr(tuple(best.changes.values()))):
                found[names] = RecourseOption(dict(zip(names, values, strict=True)), cost, float(scores[at]))

    @staticmethod
    def _variants(base: dict[str, Any], groups: Sequence[tuple[tuple[str, ...], tuple[Candidates, ...]]]) -> Variants:
        """The candidates of `groups` as variants of `base`: each feature's values once per candidate list."""
        parts: dict[str, tuple[list[Any], list[np.ndarray], list[np.ndarray]]] = {}
        offsets: dict[tuple[str, int], int] = {}  # (feature, id of a candidate list) -> its first value's code
        start = 0
        for names, candidates in groups:
            sizes = [len(c) for c in candidates]
            n = math.prod(sizes)
            if n == 0:
                continue
            index = np.arange(n)
            inner = n
            for name, cands, count in zip(names, candidates, sizes, strict=True):
                if name not in parts:
                    parts[name] = ([], [], [])
                values, rows, codes = parts[name]
                first = offsets.get((name, id(cands)))
                if first is None:
                    first = offsets[(name, id(cands))] = len(values)
                    values.extend(v for v, _ in cands)
                inner //= count  # row-major order of the product: the last feature's changes vary fastest
                rows.append(index + start)
                codes.append(index // inner % count + first if len(sizes) > 1 else index + first)
            start += n
        changes = {name: (values, np.concatenate(rows), np.concatenate(codes)) for name, (values, rows, codes) in parts.items()}
        return Variants(base, start, changes)
