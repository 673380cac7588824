"""The model manifest: one pydantic model validates TOML files and the body of POST /v1/models."""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

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
    # The law or consent that allows a sensitive feature to be a model input (required for one).
    legal_basis: NonEmptyLine | None = None
    # Collected with the decision for fairness monitoring only: never passed to the model, never shown to the
    # person or the agency (the manifest keeps these in `monitored`, never in `features`).
    monitor_only: bool = False

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
        return self.mutable and self.sensitive is None and self.disclosure != "withhold" and not self.monitor_only

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


AUTONOMY_OF_ROLE = {"sole_basis": "medium", "supports_officer": "low"}
ROLE_OF_AUTONOMY = {"medium": "sole_basis", "low": "supports_officer"}

PurposeCategory = Literal["credit", "social_benefits", "tax", "employment", "education", "health", "law_enforcement",
                         "migration", "other"]
PURPOSE_CATEGORIES: tuple[str, ...] = get_args(PurposeCategory)

AI_LAW = "Art. 17(3) of the Law of the Republic of Kazakhstan \"On Artificial Intelligence\""
EU_AI_ACT = "Art. 5 of the EU AI Act (Regulation (EU) 2024/1689)"

# Every prohibited capability a model must declare it does not have: name -> the articles that forbid it.
PROHIBITED_PRACTICES: dict[str, str] = {
    "manipulation": f"{AI_LAW}; Art. 5(1)(a) of the EU AI Act (subliminal, manipulative or deceptive techniques)",
    "exploiting_vulnerabilities": f"{AI_LAW}; Art. 5(1)(b) of the EU AI Act (exploiting age, disability or "
                                  "social or economic situation)",
    "social_scoring": f"{AI_LAW}; Art. 5(1)(c) of the EU AI Act (social scoring)",
    "discriminatory_classification": f"{AI_LAW} (classification of people by protected characteristics "
                                     "leading to discrimination)",
    "emotion_recognition_without_consent": f"{AI_LAW}; Art. 5(1)(f) of the EU AI Act (emotion recognition)",
    "unlawful_biometric_processing": f"{AI_LAW}; Art. 5(1)(g) and 5(1)(h) of the EU AI Act (biometric "
                                     "categorisation, real-time remote biometric identification)",
    "unlawful_personal_data_processing": f"{AI_LAW} (collection and processing of personal data in breach of "
                                         "the law)",
    "predictive_policing_by_profiling": "Art. 5(1)(d) of the EU AI Act (crime risk predicted from profiling alone)",
    "untargeted_facial_scraping": "Art. 5(1)(e) of the EU AI Act (facial recognition databases from untargeted "
                                  "scraping)",
}


class RiskAssessment(_Strict):
    """The owner's last risk assessment (AI Law Art. 17): when, what it found, and the document's hash."""

    # A TOML date or an ISO string ("2026-11-01"); lax so that JSON bodies can carry it as a string.
    date: Annotated[dt.date, Field(strict=False)]
    summary: NonEmpty
    document_sha256: Sha256


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
    # OIP v2: the output tensor that holds the answer (MLServer's scikit-learn runtime: predict_proba for a
    # classifier's probabilities; predict for a regression model's values, the default under a regression policy).
    output: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")] = "predict_proba"
    # Binary: which column of a [n, k] probability answer is the positive class (None: a [n] or [n, 1] answer).
    positive_index: JsonInt | None = Field(default=None, ge=0, le=1000)
    # Multi-class: the class label of each column of the [n, k] probability answer, in column order.
    classes: list[Annotated[str, StringConstraints(min_length=1, max_length=200)] | JsonInt] | None = Field(
        default=None, min_length=3, max_length=50)
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
    # Derived from `autonomy` when that is given (low: supports an officer; medium: sole basis).
    role_of_ai: Literal["sole_basis", "supports_officer"] = "sole_basis"
    # A TOML date or an ISO string ("2026-11-01"); lax so that JSON bodies can carry it as a string.
    # Superseded by `risk_assessment`; kept so that versions registered before it still read.
    risk_assessment_date: Annotated[dt.date, Field(strict=False)] | None = None
    explanation: ExplanationSettings = ExplanationSettings()
    # The classification (AI Law Art. 17), enforced at registration by `classification_problems`. Optional
    # here only so that versions registered before it was enforced still read (they are not served).
    autonomy: Literal["low", "medium", "high"] | None = None
    # High risk with medium autonomy: every adverse outcome waits for a person's confirmation first.
    adverse_review_first: bool = False
    purpose_category: PurposeCategory | None = None
    purpose_text: NonEmptyLine | None = None
    prohibited_practices: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")], bool] | None = None
    risk_assessment: RiskAssessment | None = None
    # Features collected for fairness monitoring only (`monitor_only = true` in the file's [[features]]).
    monitored: list[Feature] = Field(default=[], max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _split_and_map(cls, data: Any) -> Any:
        """Move monitor-only features out of the model's inputs; derive role_of_ai from autonomy."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        features = data.get("features")
        monitored = data.get("monitored", [])
        if isinstance(features, list) and isinstance(monitored, list):
            kept = [f for f in features if not (isinstance(f, dict) and f.get("monitor_only") is True)]
            moved = [f for f in features if isinstance(f, dict) and f.get("monitor_only") is True]
            if moved:
                data["features"] = kept
                data["monitored"] = [*monitored, *moved]
        source, policy = data.get("source"), data.get("policy")
        if isinstance(source, dict) and "output" not in source and isinstance(policy, dict) \
                and policy.get("kind") == "regression":
            data["source"] = {**source, "output": "predict"}  # a regression model's value, not probabilities
        autonomy = data.get("autonomy")
        if isinstance(autonomy, str) and autonomy in ROLE_OF_AUTONOMY:
            role = ROLE_OF_AUTONOMY[autonomy]
            if data.get("role_of_ai", role) != role:
                raise ValueError(f"role_of_ai {data['role_of_ai']!r} contradicts autonomy {autonomy!r} (autonomy "
                                 f"{autonomy!r} means role_of_ai {role!r}); give autonomy only")
            data["role_of_ai"] = role
        return data

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
            _check_remote_answer(self.source, self.policy)
        elif self.adapter in REMOTE_PROTOCOLS:
            raise ValueError(f"adapter {self.adapter!r} is a remote protocol: give the model's 'source'")
        names = [f.name for f in self.features] + [f.name for f in self.monitored]
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
        if self.risk_class == "high" and self.assessed_on is None:
            raise ValueError("a high-risk model needs risk_assessment (the date, summary and document sha256 of its "
                             "last risk assessment)")
        stray = [f.name for f in self.monitored if not f.monitor_only]
        if stray:
            raise ValueError(f"monitored features {stray} must be marked monitor_only = true")
        shown = [f.name for f in self.features if f.monitor_only]
        if shown:
            raise ValueError(f"features {shown} are monitor_only and cannot be model inputs")
        return self

    @property
    def assessed_on(self) -> dt.date | None:
        """The date of the last risk assessment (the structured one, or the older bare date)."""
        if self.risk_assessment is not None:
            return self.risk_assessment.date
        return self.risk_assessment_date

    @property
    def held_for_confirmation(self) -> str | None:
        """Which decisions wait for an officer: 'all' (autonomy low), 'adverse' (adverse review first), or None."""
        if self.autonomy == "low":
            return "all"
        if self.adverse_review_first:
            return "adverse"
        return None

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def _check_remote_answer(source: RemoteSource, policy: Policy | MultiClassPolicy | RegressionPolicy) -> None:
    """The remote answer the policy reads: one column per class (multi-class), a value (regression) or the
    positive class's probability (binary)."""
    if isinstance(policy, MultiClassPolicy):
        if source.classes is None:
            raise ValueError("source.classes is required under a multi-class policy: the class label of each column "
                             "of the model's [n, k] probability answer, in column order")
        if source.positive_index is not None:
            raise ValueError("source.positive_index is for binary policies; a multi-class policy reads every column "
                             "named by source.classes")
        labels = [str(c) for c in source.classes]
        if len(set(labels)) != len(labels):
            raise ValueError("source.classes: a class is listed twice")
        named = sorted(str(c.class_) for c in policy.classes)
        if sorted(labels) != named:
            raise ValueError(f"source.classes {sorted(labels)} are not policy.classes {named}")
    elif source.classes is not None:
        raise ValueError(f"source.classes is for multi-class policies; this policy is {policy.kind!r}"
                         + (" (name the positive class's column with positive_index)" if policy.kind == "binary" else ""))
    elif isinstance(policy, RegressionPolicy) and source.positive_index is not None:
        raise ValueError("source.positive_index is for binary policies; a regression model answers one value per row")


def _refusal(field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": field, "rule": rule, "message": message}


MIGRATION_HINT = ("versions registered before the AI Law's classification was enforced must be registered again "
                  "with autonomy (role_of_ai 'sole_basis' maps to autonomy 'medium', 'supports_officer' to 'low'), "
                  "purpose_category, prohibited_practices and, for medium and high risk, risk_assessment")


def classification_problems(m: Manifest) -> list[dict[str, str]]:
    """Every reason the AI Law's risk regime refuses this manifest (empty when it may be registered).

    Each problem names the field, the rule (the article) and what to do.
    """
    problems: list[dict[str, str]] = []
    art17 = "Art. 17 of the Law of the Republic of Kazakhstan \"On Artificial Intelligence\""
    if m.autonomy is None:
        problems.append(_refusal("autonomy", "ai_law_art_17_autonomy",
                                 f"autonomy ('low' or 'medium') is required by {art17}; {MIGRATION_HINT}"))
    elif m.autonomy == "high":
        problems.append(_refusal("autonomy", "ai_law_art_17_autonomy_high",
                                 f"autonomy 'high' (no person can correct or cancel the system's decision) is not "
                                 f"allowed under {art17}: a person must make the final choice (low) or be able to "
                                 "correct or cancel it (medium)"))
    if m.purpose_category is None:
        problems.append(_refusal("purpose_category", "ai_law_art_17_purpose",
                                 f"purpose_category is required, one of {list(PURPOSE_CATEGORIES)}"))
    if m.prohibited_practices is None:
        problems.append(_refusal("prohibited_practices", "ai_law_art_17_3_declaration",
                                 f"the declaration of prohibited capabilities is missing: declare each of "
                                 f"{list(PROHIBITED_PRACTICES)} as false ({AI_LAW}; {EU_AI_ACT})"))
    else:
        unknown = sorted(set(m.prohibited_practices) - set(PROHIBITED_PRACTICES))
        if unknown:
            problems.append(_refusal("prohibited_practices", "unknown",
                                     f"unknown categories {unknown}; the categories are {list(PROHIBITED_PRACTICES)}"))
        for name, article in PROHIBITED_PRACTICES.items():
            declared = m.prohibited_practices.get(name)
            if declared is None:
                problems.append(_refusal(f"prohibited_practices.{name}", "ai_law_art_17_3_declaration",
                                         f"{name} is not declared; declare it false ({article})"))
            elif declared:
                problems.append(_refusal(f"prohibited_practices.{name}", "ai_law_art_17_3_prohibited",
                                         f"a system with {name} is prohibited by {article}"))
    if m.risk_class in ("medium", "high") and m.risk_assessment is None:
        problems.append(_refusal("risk_assessment", "ai_law_art_17_risk_assessment",
                                 f"a {m.risk_class}-risk model needs risk_assessment {{date, summary, "
                                 "document_sha256}} (the owner's assessment under " + art17 + ")"))
    if m.risk_class == "high" and m.autonomy == "medium" and not m.adverse_review_first:
        problems.append(_refusal("autonomy", "ai_law_art_17_high_risk_oversight",
                                 "a high-risk model needs autonomy 'low' (an officer confirms every decision), or "
                                 "autonomy 'medium' with adverse_review_first = true (every adverse outcome goes to "
                                 "a person first)"))
    for f in m.features:
        if f.sensitive is not None and f.legal_basis is None:
            problems.append(_refusal(f"features.{f.name}.legal_basis", "sensitive_input_legal_basis",
                                     f"feature {f.name!r} is sensitive ({f.sensitive}) and needs a legal_basis to be a "
                                     "model input; or collect it monitor_only"))
        if f.sensitive == "protected_attribute" and m.risk_class == "high":
            problems.append(_refusal(f"features.{f.name}", "protected_attribute_high_risk",
                                     f"feature {f.name!r} is a protected attribute and may not be an input of a "
                                     "high-risk model (AI Law Art. 17(3), discriminatory classification); collect it "
                                     "monitor_only for fairness monitoring"))
    return problems


def oversight_mode(m: Manifest) -> str:
    """What registration says about human oversight of this version, in one sentence."""
    if m.autonomy == "low":
        return "autonomy low: every decision waits for an authorised officer's confirmation before any notice"
    if m.adverse_review_first:
        return "autonomy medium: adverse outcomes wait for an officer's confirmation; others take effect at once"
    return "autonomy medium: decisions take effect at once; a person can correct or cancel them by review"


def load_manifest(path: str | Path) -> tuple[Manifest, Path]:
    """Read a manifest from a TOML or JSON file; return it and the folder its paths are relative to."""
    path = Path(path)
    text = path.read_bytes()
    if path.suffix == ".json":
        return Manifest.model_validate_json(text), path.parent
    data: dict[str, Any] = tomllib.loads(text.decode("utf-8"))
    return Manifest.model_validate(data), path.parent
