"""Request and response models: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from gateway.identity import InvalidIIN, validate_iin
from gateway.manifest import INTEGRAL, Manifest
from gateway.reviews import POINT_OF_VIEW_MAX_LENGTH

Language = Literal["kk", "ru", "en"]
FeatureValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=200)]
FencingToken = Annotated[int, Field(ge=1, le=2**31 - 1), INTEGRAL]
# The schema states the default lease limit (REVIEW_MAX_LEASE_SECONDS); a deployment may lower it (422).
LeaseSeconds = Annotated[int, Field(ge=30, le=3600), INTEGRAL]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Contact(_Strict):
    """How to reach the person: an email address, a webhook of the agency's citizen channel, or both."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["email"], "properties": {"email": {"type": "string"}}},
        {"required": ["webhook"], "properties": {"webhook": {"type": "string"}}},
    ]})

    email: Annotated[str, Field(max_length=254, json_schema_extra={"format": "email"})] | None = None
    webhook: Annotated[str, Field(max_length=2000, json_schema_extra={
        "format": "uri", "pattern": r"^https?://[^\s/@:]+(:[0-9]{1,5})?(/[^\s]*)?$"})] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"not a valid email address: {exc}") from None

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute https:// URL")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials")
        return value

    @model_validator(mode="after")
    def _one_channel(self) -> Contact:
        if self.email is None and self.webhook is None:
            raise ValueError("give at least one of email or webhook")
        return self


class Subject(_Strict):
    """The person the decision is about."""

    iin: Annotated[str, Field(json_schema_extra={"format": "iin", "pattern": r"^[0-9]{12}$"},
                              description="12-digit individual identification number (IIN): YYMMDD, century/sex digit, "
                              "serial, check digit; never stored")]
    language: Language
    contact: Contact

    @field_validator("iin")
    @classmethod
    def _iin(cls, value: str) -> str:
        try:
            return validate_iin(value)
        except InvalidIIN as exc:
            raise ValueError(str(exc)) from None


class DecisionRequest(_Strict):
    subject: Subject
    features: dict[Annotated[str, Field(max_length=64)], FeatureValue] = Field(max_length=500)
    operator: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="The officer who operated the system, if any"
    )
    reference: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="The caller's own reference for this application"
    )


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str


class DecisionLinks(BaseModel):
    decision: str
    explanation: str
    review: str
    citizen: str | None = Field(
        default=None,
        description="The person's capability link (…/d/{id}?token=…): shown to the person and the agency that "
        "made the decision, never to reviewers or auditors",
    )


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=100, description="Page size (at most 100)")
    offset: int = Field(default=0, ge=0, le=1_000_000)


class AccessPrincipal(BaseModel):
    kind: Literal["agency", "reviewer", "auditor", "admin", "citizen"]
    id: str
    body: str | None


class AccessEventOut(BaseModel):
    at: str
    what: str
    principal: AccessPrincipal


class AccessLog(BaseModel):
    decision_id: str
    events: list[AccessEventOut]
    total: int
    limit: int
    offset: int


class MyDecision(BaseModel):
    decision_id: str
    model: ModelRef
    outcome: str
    effective_outcome: str
    adverse: bool
    created_at: str
    links: DecisionLinks


class MyDecisions(BaseModel):
    decisions: list[MyDecision]
    total: int
    limit: int
    offset: int


class DecisionCreated(BaseModel):
    decision_id: str
    model: ModelRef
    score: float
    outcome: str
    adverse: bool
    created_at: str
    links: DecisionLinks


class NotificationStatusOut(BaseModel):
    id: str
    kind: str
    channel: str
    status: Literal["pending", "retrying", "delivered", "dead"]
    attempts: int
    delivered_at: str | None


class DecisionOut(BaseModel):
    decision_id: str
    model: ModelRef
    score: float
    outcome: str
    adverse: bool
    effective_outcome: str
    role_of_ai: str
    language: str
    inputs: dict[str, Any]
    operator: str | None
    reference: str | None
    created_at: str
    notifications: list[NotificationStatusOut]
    effective_outcome_set_by: str | None
    reviews: list[ReviewSummary]
    links: DecisionLinks


class ModelPath(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$", max_length=100)]


class DecisionPath(_Strict):
    decision_id: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class ModelSummary(BaseModel):
    name: str
    version: str
    status: str
    risk_class: str
    sha256: str
    purpose: dict[str, str | None]
    owner: dict[str, str | None]
    links: dict[str, str]


class ModelList(BaseModel):
    models: list[ModelSummary]
    total: int
    limit: int
    offset: int


class ModelRegistration(Manifest):
    """A manifest; the artifact (and background data) must have been uploaded to /v1/blobs first."""

    activate: bool = False


class ModelDetail(BaseModel):
    name: str
    version: str
    status: str
    sha256: str
    risk_class: str
    role_of_ai: str
    notice: dict[str, Any]
    features: list[dict[str, Any]]
    policy: dict[str, Any]
    registered_at: str


class ModelRegistered(BaseModel):
    name: str
    version: str
    status: str
    sha256: str
    created: bool


class SuspendRequest(_Strict):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class BlobPath(_Strict):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class BlobStored(BaseModel):
    sha256: str
    size: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = {}


class ExplanationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lang: Language | None = Field(default=None, description="kk, ru or en; default: the decision's language")


class ExplanationFactor(BaseModel):
    feature: str
    label: str
    value: str
    band: list[float | None] | None
    direction: Literal["raised", "lowered"]
    contribution: float


class ConfidentialOut(BaseModel):
    count: int
    contribution_or_null: float | None
    direction: Literal["raised", "lowered"] | None
    legal_ground: str


class ExplanationText(BaseModel):
    summary: str
    role: str
    baseline: str | None
    factors_intro: str
    factors: list[str]
    confidential: str | None


class ExplanationOut(BaseModel):
    decision_id: str
    language: str
    outcome: str
    effective_outcome: str
    method: str | None
    output_space: str
    base_value: float | None
    score: float
    output: float | None
    factors: list[ExplanationFactor]
    confidential: ConfidentialOut | None
    text: ExplanationText
    role_of_ai: str
    additivity_error: float | None
    baseline: dict[str, Any]
    model: dict[str, Any]


class Pending(BaseModel):
    decision_id: str
    status: Literal["pending"]
    retry_after: int


class ReviewRequestIn(_Strict):
    point_of_view: Annotated[str, Field(min_length=1, max_length=POINT_OF_VIEW_MAX_LENGTH, description="The person's point of view")]
    contest_grounds: list[Literal["wrong_data", "wrong_assessment", "other"]] = Field(
        min_length=1, max_length=3, json_schema_extra={"uniqueItems": True})
    corrected_data: dict[Annotated[str, Field(max_length=64)], FeatureValue] | None = Field(
        default=None, max_length=500, description="Raw features the person says are wrong, with the right values")
    language: Language | None = Field(default=None, description="Language of the answer; default: the decision's")

    @field_validator("contest_grounds")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("grounds must not repeat")
        return value


ReviewId = Annotated[str, Field(max_length=64, pattern=r"^rev_[A-Za-z0-9_-]{1,60}$")]


class ReviewPath(_Strict):
    review_id: ReviewId


class DecisionReviewPath(_Strict):
    """A review named under its decision (the person's own actions on their request)."""

    decision_id: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    review_id: ReviewId


class ClaimIn(_Strict):
    review_id: ReviewId | None = None
    lease_seconds: LeaseSeconds | None = None


class LeaseIn(_Strict):
    fencing_token: FencingToken
    lease_seconds: LeaseSeconds | None = None


class ReleaseIn(_Strict):
    fencing_token: FencingToken


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


# A language's reasons: absent, or text (never null).
Reason = Annotated[str, Field(min_length=1, max_length=10000, json_schema_extra=_no_default)]


class Reasons(_Strict):
    """The reasons, in the person's language at least (kk, ru or en)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    kk: Reason = None  # type: ignore[assignment]  # may be left out, never null
    ru: Reason = None  # type: ignore[assignment]
    en: Reason = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _some(self) -> Reasons:
        if self.kk is None and self.ru is None and self.en is None:
            raise ValueError("give the reasons in at least one language")
        return self


class ResolveIn(_Strict):
    fencing_token: FencingToken
    outcome: Literal["upheld", "changed", "annulled"]
    new_outcome: Annotated[str, Field(max_length=64)] | None = None
    reasons: Reasons
    point_of_view_considered: Literal[True] = Field(description="Confirms that the person's point of view was considered")


class ExtendIn(_Strict):
    until: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", json_schema_extra={"format": "date"},
                                description="The new due date (YYYY-MM-DD, local)")]
    reason: Annotated[str, Field(min_length=1, max_length=4000)]


def _date_or_datetime(schema: dict[str, Any]) -> None:
    schema.pop("maxLength", None)
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]


class ReviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["queued", "claimed", "resolved", "withdrawn"] | None = None
    model: Annotated[str, Field(max_length=100)] | None = None
    due_before: Annotated[str, Field(max_length=64, json_schema_extra=_date_or_datetime)] | None = Field(
        default=None, description="A date (end of that local day) or an RFC 3339 date-time")
    overdue: bool | None = None
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    lang: Language = "ru"


class ReviewSummary(BaseModel):
    review_id: str
    decision_id: str
    status: str
    contest_grounds: list[str]
    requested_at: str | None
    due_at: str | None
    extended_until: str | None
    extension_reason: str | None
    effective_due_at: str | None
    overdue: bool
    outcome: str | None
    new_outcome: str | None
    reasons: dict[str, str] | None
    point_of_view_considered: bool | None
    resolved_by: str | None
    resolved_at: str | None
    rescore_decision_id: str | None
    late: bool = Field(description="Requested after the window printed in the decision notice (accepted, flagged)")


class ReviewList(BaseModel):
    reviews: list[ReviewSummary]
    total: int
    limit: int
    offset: int
    overdue_total: int


class ReviewCase(ReviewSummary):
    fencing_token: int
    lease_expires_at: str | None
    claimed_by: str | None
    point_of_view: str
    corrected_data: dict[str, Any] | None
    language: str
    decision: dict[str, Any]
    explanation: dict[str, Any] | None
    notice: dict[str, Any]
    outcomes: list[str]


class Rescored(BaseModel):
    review_id: str
    decision_id: str
    rescore_of: str
    score: float
    outcome: str
    adverse: bool
    explanation: dict[str, Any] | None
