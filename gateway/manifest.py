"""The model manifest: one pydantic model validates TOML files and the body of POST /v1/models."""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from babel.numbers import format_decimal
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from gateway.text import check_text

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ModelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")]
RETENTION_FLOOR_DAYS = 180  # the legal floor of every retention period (DESIGN §5)
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _text(value: str) -> str:
    return check_text(value, multiline=True)


def _line(value: str) -> str:
    return check_text(value, multiline=False)


# Text shown to people: never a control character (a CR/LF in a label ends an email header; a NUL cannot be
# stored in PostgreSQL). Notice texts may span lines; labels (features, categories, units, outcomes,
# owners) are one line.
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(_text)]
NonEmptyLine = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(_line)]

LANGUAGES = ("kk", "ru", "en")


def _integral(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3 (JSON Schema agrees); 3.5 and true are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer in strict models that also takes JSON numbers with no fractional part (never booleans or strings).
# Give bounds with `= Field(ge=…)` on the field, or as Annotated[int, Field(ge=…), INTEGRAL]: a Field placed
# after the validator inside Annotated would be published as "ge" instead of "minimum".
INTEGRAL = BeforeValidator(_integral)
JsonInt = Annotated[int, INTEGRAL]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LocalizedText(_Strict):
    """Text in Kazakh and Russian (mandatory) and English (optional)."""

    kk: NonEmpty
    ru: NonEmpty
    en: NonEmpty | None = None

    def get(self, lang: str) -> str:
        """Return the text in `lang`, falling back to Russian, then Kazakh."""
        value = getattr(self, lang, None) if lang in LANGUAGES else None
        return value or self.ru or self.kk


class LocalizedLabel(LocalizedText):
    """A one-line text in Kazakh and Russian (mandatory) and English (optional): labels, units, names."""

    kk: NonEmptyLine
    ru: NonEmptyLine
    en: NonEmptyLine | None = None


class Feature(_Strict):
    """One raw input feature as the caller sends it and the person reads it."""

    name: Identifier
    type: Literal["number", "category", "boolean"]
    labels: LocalizedLabel
    min: float | None = None
    max: float | None = None
    integer: bool = False
    categories: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = None
    category_labels: dict[str, LocalizedLabel] | None = None
    unit: LocalizedLabel | None = None
    disclosure: Literal["show", "band", "withhold"] = "show"
    bands: list[float] | None = None
    mutable: bool = True
    sensitive: Literal["protected_attribute", "biometric", "health", "other"] | None = None
    # Recourse (numbers only): the smallest change worth proposing, in the feature's unit (default: the
    # declared range in 20 steps, a whole number for integer features, else 1); what one unit of cost is
    # (default: the step); which way the person can move it (age only increases).
    step: float | None = None
    scale: float | None = None
    direction: Literal["any", "increase", "decrease"] = "any"

    @model_validator(mode="after")
    def _check_kind(self) -> Feature:
        if self.type == "number":
            if self.categories is not None or self.category_labels is not None:
                raise ValueError(f"feature {self.name!r}: a number has no categories")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"feature {self.name!r}: min {self.min} is greater than max {self.max}")
        elif self.type == "category":
            if not self.categories:
                raise ValueError(f"feature {self.name!r}: a category feature needs a non-empty 'categories' list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: categories are not unique")
            if self.min is not None or self.max is not None or self.integer:
                raise ValueError(f"feature {self.name!r}: a category has no min/max/integer")
            if self.category_labels is not None:
                unknown = sorted(set(self.category_labels) - set(self.categories))
                if unknown:
                    raise ValueError(f"feature {self.name!r}: labels for unknown categories {unknown}")
                unlabelled = [c for c in self.categories if c not in self.category_labels]
                if unlabelled:
                    raise ValueError(f"feature {self.name!r}: category_labels lacks {unlabelled}")
        else:
            if self.categories is not None or self.min is not None or self.max is not None:
                raise ValueError(f"feature {self.name!r}: a boolean has no categories or range")
        self._check_recourse()
        if self.bands is not None:
            if self.type != "number":
                raise ValueError(f"feature {self.name!r}: bands apply to number features only")
            if sorted(self.bands) != self.bands or len(set(self.bands)) != len(self.bands):
                raise ValueError(f"feature {self.name!r}: bands must be strictly increasing")
            outside = [b for b in self.bands if (self.min is not None and b <= self.min) or (self.max is not None and b >= self.max)]
            if outside:
                raise ValueError(f"feature {self.name!r}: band edges {outside} are not inside (min, max)")
        return self

    def _check_recourse(self) -> None:
        declared = [k for k in ("step", "scale") if getattr(self, k) is not None]
        if self.direction != "any":
            declared.append("direction")
        if self.type != "number":
            if declared:
                raise ValueError(f"feature {self.name!r}: recourse settings ({', '.join(declared)}) apply to number "
                                 "features only (a category or boolean changes to another value at a cost of 1)")
            return
        for key in ("step", "scale"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"feature {self.name!r}: {key} must be a positive number, got {value}")
        if self.step is not None:
            if self.integer and not float(self.step).is_integer():
                raise ValueError(f"feature {self.name!r}: step must be a whole number for an integer feature, "
                                 f"got {self.step}")
            if self.min is not None and self.max is not None and self.step > self.max - self.min:
                raise ValueError(f"feature {self.name!r}: step {self.step:g} is larger than the range "
                                 f"[{self.min:g}, {self.max:g}]")

    def recourse_step(self) -> float:
        """The step recourse changes this number feature by (declared, or the range in 20 steps, or 1)."""
        if self.step is not None:
            return float(self.step)
        if self.min is not None and self.max is not None and self.max > self.min:
            step = (self.max - self.min) / 20
            return float(max(1, round(step))) if self.integer else step
        return 1.0

    def offered_for_recourse(self) -> bool:
        """Whether recourse may propose changing this feature: mutable, and not sensitive, withheld or
        collected for monitoring only (the last are never model inputs)."""
        monitor_only = bool(getattr(self, "monitor_only", False))  # declared by the governance rules when present
        return self.mutable and self.sensitive is None and self.disclosure != "withhold" and not monitor_only

    def category_label(self, value: str, lang: str) -> str:
        """Return the readable label of a category value, or the value itself."""
        if self.category_labels and value in self.category_labels:
            return self.category_labels[value].get(lang)
        return value


class Policy(_Strict):
    """Binary: turn the score (probability of `positive_class`) into one of two outcomes by a threshold."""

    kind: Literal["binary"] = "binary"
    positive_class: str | JsonInt
    threshold: float = Field(gt=0.0, lt=1.0)
    outcome_above: Identifier
    outcome_below: Identifier
    adverse_outcome: Identifier | None = None
    outcome_labels: dict[str, LocalizedLabel] | None = None

    @model_validator(mode="after")
    def _check_outcomes(self) -> Policy:
        if self.outcome_above == self.outcome_below:
            raise ValueError("policy: outcome_above and outcome_below must differ")
        if self.adverse_outcome is not None and self.adverse_outcome not in (self.outcome_above, self.outcome_below):
            raise ValueError("policy: adverse_outcome must be outcome_above or outcome_below")
        _check_labels(self.outcome_labels, self.outcomes)
        return self

    @property
    def outcomes(self) -> list[str]:
        """Every outcome this policy can give."""
        return [self.outcome_above, self.outcome_below]

    @property
    def adapter_class(self) -> str | int | None:
        """The class whose probability the adapter scores (None: the model's own value, for regression)."""
        return self.positive_class

    def decide(self, score: float) -> tuple[str, bool]:
        """Return (outcome, adverse) for a score; a score equal to the threshold is 'above'."""
        outcome = self.outcome_above if score >= self.threshold else self.outcome_below
        return outcome, outcome == self.adverse_outcome

    def public(self) -> dict[str, Any]:
        """What the register shows of the policy."""
        return {"kind": self.kind, "outcome_above": self.outcome_above, "outcome_below": self.outcome_below,
                "adverse_outcome": self.adverse_outcome, "outcome_labels": _labels_json(self.outcome_labels)}


class ClassOutcome(_Strict):
    """One class of a multi-class model and the outcome it gives."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    class_: Annotated[str | JsonInt, Field(alias="class")]
    outcome: Identifier


class MultiClassPolicy(_Strict):
    """Multi-class (e.g. risk tiers): the most probable class decides; each class has its own outcome.

    The score is the probability of the decided class, and its explanation explains that probability.
    """

    kind: Literal["multiclass"]
    classes: list[ClassOutcome] = Field(min_length=3, max_length=50)
    adverse_outcomes: list[Identifier] = Field(default_factory=list)
    outcome_labels: dict[str, LocalizedLabel] | None = None

    @model_validator(mode="after")
    def _check_classes(self) -> MultiClassPolicy:
        labels = [str(c.class_) for c in self.classes]
        if len(set(labels)) != len(labels):
            raise ValueError("policy.classes: a class is listed twice")
        if len(set(self.outcomes)) != len(self.outcomes):
            raise ValueError("policy.classes: each class needs its own outcome (the outcome names the decided class)")
        unknown = sorted(set(self.adverse_outcomes) - set(self.outcomes))
        if unknown:
            raise ValueError(f"policy.adverse_outcomes {unknown} are not outcomes of any class")
        _check_labels(self.outcome_labels, self.outcomes)
        return self

    @property
    def outcomes(self) -> list[str]:
        return [c.outcome for c in self.classes]

    @property
    def adapter_class(self) -> str | int | None:
        return self.classes[0].class_

    def class_of(self, outcome: str) -> str | int:
        """The class an outcome stands for."""
        for c in self.classes:
            if c.outcome == outcome:
                return c.class_
        raise KeyError(outcome)

    def decide_class(self, label: Any) -> tuple[str, bool]:
        """Return (outcome, adverse) for the decided class."""
        for c in self.classes:
            if c.class_ == label or str(c.class_) == str(label):
                return c.outcome, c.outcome in self.adverse_outcomes
        raise KeyError(label)

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "outcomes": self.outcomes, "adverse_outcomes": list(self.adverse_outcomes),
                "outcome_labels": _labels_json(self.outcome_labels)}


def _pairs(value: Any) -> Any:
    """TOML and JSON have arrays, not tuples: [upper, outcome] pairs are read as tuples; an upper of +inf (TOML's
    way to say "open") is read as None (JSON's), so both spell the same manifest."""
    if isinstance(value, list):
        return [tuple(None if i == 0 and x == float("inf") else x for i, x in enumerate(v)) if isinstance(v, list)
                else v for v in value]
    return value


class RegressionPolicy(_Strict):
    """Regression (e.g. a benefit amount): the model's value, in `unit`, falls in a band that gives the outcome.

    `bands` is `[[upper, outcome], ...]` with strictly increasing uppers: a value below a band's upper (and not
    below the band before it) gets its outcome. The last band takes every value above the one before it, so its
    upper is open: write `inf` in TOML or null in JSON.
    """

    kind: Literal["regression"]
    unit: LocalizedLabel
    bands: Annotated[list[tuple[float | None, Identifier]], BeforeValidator(_pairs)] = Field(min_length=1, max_length=50)
    adverse_outcomes: list[Identifier] = Field(default_factory=list)
    outcome_labels: dict[str, LocalizedLabel] | None = None
    decimals: JsonInt = Field(default=0, ge=0, le=6)

    @model_validator(mode="after")
    def _check_bands(self) -> RegressionPolicy:
        uppers = [upper for upper, _ in self.bands]
        if uppers[-1] is not None:
            raise ValueError("policy.bands: the last band is open above (upper inf in TOML, null in JSON)")
        finite = uppers[:-1]
        if any(u is None or not math.isfinite(u) for u in finite):
            raise ValueError("policy.bands: every band but the last needs a finite upper")
        if any(b <= a for a, b in zip(finite, finite[1:], strict=False)):  # type: ignore[operator]
            raise ValueError("policy.bands: uppers must be strictly increasing")
        unknown = sorted(set(self.adverse_outcomes) - set(self.outcomes))
        if unknown:
            raise ValueError(f"policy.adverse_outcomes {unknown} are not outcomes of any band")
        _check_labels(self.outcome_labels, self.outcomes)
        return self

    @property
    def outcomes(self) -> list[str]:
        seen: list[str] = []
        for _, outcome in self.bands:
            if outcome not in seen:
                seen.append(outcome)
        return seen

    @property
    def adapter_class(self) -> str | int | None:
        return None

    def decide(self, score: float) -> tuple[str, bool]:
        """Return (outcome, adverse) of the band the value falls in."""
        if not math.isfinite(score):
            raise ValueError(f"the model's value {score!r} is not a finite number")
        for upper, outcome in self.bands:
            if upper is None or score < upper:
                return outcome, outcome in self.adverse_outcomes
        outcome = self.bands[-1][1]
        return outcome, outcome in self.adverse_outcomes

    def amount(self, value: float, lang: str) -> str:
        """The model's value as the person reads it, in its units, e.g. "12,400 ₸" (en) or "12 400 ₸" (ru)."""
        pattern = "#,##0" + ("." + "0" * self.decimals if self.decimals else "")
        return f"{format_decimal(value, format=pattern, locale=lang)} {self.unit.get(lang)}"

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "unit": self.unit.model_dump(mode="json"),
                "bands": [[u if u is not None and math.isfinite(u) else None, o] for u, o in self.bands],
                "adverse_outcomes": list(self.adverse_outcomes), "outcome_labels": _labels_json(self.outcome_labels)}


def _check_labels(labels: dict[str, LocalizedLabel] | None, outcomes: list[str]) -> None:
    if labels is not None:
        unknown = sorted(set(labels) - set(outcomes))
        if unknown:
            raise ValueError(f"policy.outcome_labels names outcomes the policy never gives: {unknown}")


def _labels_json(labels: dict[str, LocalizedLabel] | None) -> dict[str, Any] | None:
    return {k: v.model_dump(mode="json") for k, v in labels.items()} if labels is not None else None


def _policy_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "binary"))
    return str(getattr(value, "kind", "binary"))


#: The closed set of policy kinds; a manifest without `kind` is binary (as before kinds existed).
POLICY_KINDS = ("binary", "multiclass", "regression")
AnyPolicy = Annotated[
    Annotated[Policy, Tag("binary")] | Annotated[MultiClassPolicy, Tag("multiclass")]
    | Annotated[RegressionPolicy, Tag("regression")],
    Discriminator(_policy_kind, custom_error_type="policy_kind",
                  custom_error_message=f"policy.kind must be one of {', '.join(POLICY_KINDS)}"),
]


class Notice(_Strict):
    """The pre-use transparency notice: what the system does, its limits, whose it is."""

    purpose: LocalizedText
    functions: LocalizedText
    limitations: LocalizedText
    owner: LocalizedLabel
    contact: NonEmpty
    legal_basis: LocalizedText


class ExplanationSettings(_Strict):
    max_factors: JsonInt = Field(default=4, ge=1, le=20)
    background: str | None = None
    background_sha256: Sha256 | None = None
    output_space: Literal["probability", "log_odds"] = "probability"
    random_state: JsonInt = Field(default=0, ge=0, le=2**32 - 1)
    confidential_ground: LocalizedText | None = None
    # Model-agnostic estimates: sample until every factor's error (95 % half-width, in the explained
    # space: 0.005 = half a percentage point) is at most target_error, or max_evals_cap evaluations.
    target_error: float = Field(default=0.005, gt=0.0, le=0.1)
    max_evals_cap: JsonInt = Field(default=8000, ge=100, le=200_000)


REMOTE_PROTOCOLS = ("oip_v2", "mlflow")


class RemoteSource(_Strict):
    """A model served elsewhere: where, which model, and how the gateway calls it.

    Credentials (bearer token, client certificate) never appear here: they come from the deployment's
    settings (GATEWAY_MODEL_BEARER_TOKENS, GATEWAY_MODEL_CLIENT_CERT), so a manifest can be published.
    """

    protocol: Literal["oip_v2", "mlflow"]
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^https?://")]
    # OIP v2: the model's name on the server (and its version, if the server has several).
    model: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")] | None = None
    version: Version | None = None
    # OIP v2: the output tensor that holds the probabilities (MLServer's scikit-learn runtime: predict_proba).
    output: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")] = "predict_proba"
    # Which column of a [n, k] probability answer is the positive class (None: a [n] or [n, 1] answer).
    positive_index: JsonInt | None = Field(default=None, ge=0, le=1000)
    connect_timeout_s: float = Field(default=2.0, gt=0.0, le=60.0)
    read_timeout_s: float = Field(default=2.0, gt=0.0, le=600.0)
    # Explanations evaluate the model on many rows: they go in batches of at most this many rows per call.
    max_batch_rows: JsonInt = Field(default=20_000, ge=1, le=1_000_000)
    # The circuit breaker: after this many consecutive failures, answer 503 at once for the cool-down.
    breaker_failures: JsonInt = Field(default=5, ge=1, le=1000)
    breaker_cooldown_s: float = Field(default=30.0, gt=0.0, le=3600.0)

    @model_validator(mode="after")
    def _check_protocol(self) -> RemoteSource:
        if self.protocol == "oip_v2" and self.model is None:
            raise ValueError("source: an oip_v2 source needs 'model' (the model's name on the server)")
        return self


class Manifest(_Strict):
    """Everything the gateway must know about one model version."""

    name: ModelName
    version: Version
    adapter: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    artifact: str | None = None
    # The artifact's sha256; a remote model (`source`) has none: its pinned metadata is stored instead.
    sha256: Sha256 | None = None
    source: RemoteSource | None = None
    features: list[Feature] = Field(min_length=1, max_length=500)
    policy: AnyPolicy
    notice: Notice
    risk_class: Literal["minimal", "medium", "high"]
    role_of_ai: Literal["sole_basis", "supports_officer"] = "sole_basis"
    # A TOML date or an ISO string ("2026-11-01"); lax so that JSON bodies can carry it as a string.
    risk_assessment_date: Annotated[dt.date, Field(strict=False)] | None = None
    explanation: ExplanationSettings = ExplanationSettings()
    # Days the person's data of a decision is kept (inputs, contact, point of view, ...); then the purge
    # deletes it and keeps the decision's skeleton and hashes. None: the deployment's GATEWAY_RETENTION_DAYS.
    retention_days: int | None = None

    @field_validator("retention_days")
    @classmethod
    def _check_retention(cls, value: int | None) -> int | None:
        if value is not None and value < RETENTION_FLOOR_DAYS:
            raise ValueError(f"retention_days must be at least {RETENTION_FLOOR_DAYS} (decision records are kept at "
                             f"least 6 months), not {value}")
        return value

    @model_validator(mode="after")
    def _check_features(self) -> Manifest:
        if self.source is None and self.sha256 is None:
            raise ValueError("sha256 is required (the artifact's hash), unless the model is remote ('source')")
        if self.source is not None:
            if self.adapter != self.source.protocol:
                raise ValueError(f"a remote model's adapter must be its source's protocol {self.source.protocol!r}")
            if self.sha256 is not None or self.artifact is not None:
                raise ValueError("a remote model ('source') has no artifact or sha256: the gateway pins the "
                                 "server's reported model instead")
            if self.policy.kind != "binary":
                raise ValueError(f"a remote model takes a binary policy (the remote adapters score the positive "
                                 f"class's probability); this policy is {self.policy.kind!r}")
        elif self.adapter in REMOTE_PROTOCOLS:
            raise ValueError(f"adapter {self.adapter!r} is a remote protocol: give the model's 'source'")
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features: duplicate names {duplicates}")
        if any(f.disclosure == "withhold" for f in self.features) and self.explanation.confidential_ground is None:
            raise ValueError("explanation.confidential_ground is required when a feature is withheld")
        if self.explanation.background is not None and self.explanation.background_sha256 is None:
            raise ValueError("explanation: background needs background_sha256")
        banded = [f.name for f in self.features if f.disclosure == "band" and f.bands is None]
        if banded and self.explanation.background_sha256 is None:
            raise ValueError(f"features {banded} are banded without 'bands': give band edges or background data")
        if self.risk_class == "high" and self.risk_assessment_date is None:
            raise ValueError("a high-risk model needs risk_assessment_date (the date of its last risk assessment)")
        return self

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def load_manifest(path: str | Path) -> tuple[Manifest, Path]:
    """Read a manifest from a TOML or JSON file; return it and the folder its paths are relative to."""
    path = Path(path)
    text = path.read_bytes()
    if path.suffix == ".json":
        return Manifest.model_validate_json(text), path.parent
    data: dict[str, Any] = tomllib.loads(text.decode("utf-8"))
    return Manifest.model_validate(data), path.parent
