"""Human review: the person's request, the queue, the reviewer's actions and the case."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.schemas.common import (
    Cursor,
    FeatureValue,
    FencingToken,
    Language,
    LeaseSeconds,
    Line,
    ListTotal,
    LowerBound,
    Out,
    ReviewId,
    Strict,
    Text,
)
from gateway.text import TEXT_PATTERN

POINT_OF_VIEW_MAX = 10000  # characters; the review service and the review page share this limit


class ReviewRequestIn(Strict):
    point_of_view: Annotated[Text, Field(min_length=1, max_length=POINT_OF_VIEW_MAX,
                                         description="The person's point of view")]
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


class DecisionReviewPath(Strict):
    """A review named under its decision (the person's own actions on their request)."""

    decision_id: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    review_id: ReviewId


class ClaimIn(Strict):
    review_id: ReviewId | None = None
    lease_seconds: LeaseSeconds | None = None


class LeaseIn(Strict):
    fencing_token: FencingToken
    lease_seconds: LeaseSeconds | None = None


class ReleaseIn(Strict):
    fencing_token: FencingToken


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


# A language's reasons: absent, or text without control characters (never null).
Reason = Annotated[str, Field(min_length=1, max_length=10000, pattern=TEXT_PATTERN, json_schema_extra=_no_default)]


class Reasons(Strict):
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


class ResolveIn(Strict):
    fencing_token: FencingToken
    outcome: Literal["upheld", "changed", "annulled"]
    new_outcome: Annotated[Line, Field(max_length=64)] | None = None
    reasons: Reasons
    point_of_view_considered: Literal[True] = Field(description="Confirms that the person's point of view was considered")


class ConfirmReasons(Strict):
    """The officer's reasons (required when the outcome is changed), in any of kk, ru, en."""

    kk: Reason = None  # type: ignore[assignment]  # may be left out, never null
    ru: Reason = None  # type: ignore[assignment]
    en: Reason = None  # type: ignore[assignment]


class ConfirmIn(Strict):
    """An officer's decision on a held decision: confirm the system's outcome, or change it (with reasons)."""

    fencing_token: FencingToken
    outcome: Literal["confirmed", "changed"]
    new_outcome: Annotated[Line, Field(max_length=64)] | None = None
    reasons: ConfirmReasons = Field(default_factory=ConfirmReasons)


class ConfirmationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["queued", "claimed", "resolved"] | None = None
    model: Annotated[Line, Field(max_length=100)] | None = None
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    after: Cursor | None = None


class ExtendIn(Strict):
    fencing_token: FencingToken
    until: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", json_schema_extra={"format": "date"},
                                description="The new due date (YYYY-MM-DD, local)")]
    reason: Annotated[Text, Field(min_length=1, max_length=4000)]


def _date_or_datetime(schema: dict[str, Any]) -> None:
    schema.pop("maxLength", None)
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]


class ReviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["queued", "claimed", "resolved", "withdrawn"] | None = None
    model: Annotated[Line, Field(max_length=100)] | None = None
    due_before: Annotated[str, Field(max_length=64, json_schema_extra=_date_or_datetime)] | None = Field(
        default=None, description="A date (end of that local day) or an RFC 3339 date-time")
    overdue: bool | None = None
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    after: Cursor | None = None
    lang: Language = "ru"


class ReviewSummary(Out):
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
    kind: Literal["review", "confirmation"] = Field(
        default="review", description="review: the person's request; confirmation: an officer confirms a held decision")


class ReviewList(Out):
    reviews: list[ReviewSummary]
    total: ListTotal
    total_is_lower_bound: LowerBound
    limit: int
    offset: int
    overdue_total: Annotated[int, Field(ge=0, description="Open reviews past their due date (all of the queue, "
                                                          "whatever the filters): exact up to LIST_COUNT_CAP")]
    overdue_total_is_lower_bound: Annotated[bool, Field(description="true: more reviews are overdue than "
                                                                    "overdue_total says (counting stopped at the cap)")]
    next_after: str | None = Field(default=None, description="Pass as ?after= for the next page; null on the last")


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


class Rescored(Out):
    review_id: str
    decision_id: str
    rescore_of: str
    score: float
    outcome: str
    adverse: bool
    explanation: dict[str, Any] | None
