"""Decisions: the agency's request and what a decision looks like to its readers."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from flask import current_app, has_app_context
from pydantic import ConfigDict, Field, field_validator, model_validator

from gateway.addresses import refusal
from gateway.identity import InvalidIIN, validate_iin
from gateway.schemas.common import DecisionLinks, FeatureValue, Language, Line, ModelRef, OperatorId, Out, Strict, Text
from gateway.schemas.reviews import ReviewSummary


def _allow_private() -> bool:
    """GATEWAY_WEBHOOK_ALLOW_PRIVATE of the app handling the request (False outside one)."""
    if not has_app_context():
        return False
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE"))


class Contact(Strict):
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
        # What can never be delivered is refused now, not after a day of retries: http://, loopback, private
        # and reserved literal addresses (unless the deployment allows them), hosts with no IDNA form.
        reason = refusal(value, allow_private=_allow_private())
        if reason is not None:
            raise ValueError(reason.removeprefix("the webhook URL ").removeprefix("is ").removeprefix("names "))
        return value

    @model_validator(mode="after")
    def _one_channel(self) -> Contact:
        if self.email is None and self.webhook is None:
            raise ValueError("give at least one of email or webhook")
        return self


class Subject(Strict):
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


class DecisionRequest(Strict):
    subject: Subject
    features: dict[Annotated[str, Field(max_length=64)], FeatureValue] = Field(max_length=500)
    monitoring: dict[Annotated[str, Field(max_length=64)], FeatureValue] = Field(
        default_factory=dict, max_length=50,
        description="Monitor-only values (the model's `monitored` features, e.g. sex) for fairness figures: never "
        "passed to the model, never shown to the person or the agency")
    operator: Annotated[Line, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="The officer who operated the system, if any: their name as shown (free text)"
    )
    operator_id: OperatorId | None = None
    reference: Annotated[Line, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="The caller's own reference for this application"
    )


class DecisionCreated(Out):
    decision_id: str
    model: ModelRef
    score: float
    outcome: str
    adverse: bool
    created_at: str
    links: DecisionLinks
    confirmation: Literal["pending_confirmation"] | None = Field(
        default=None, description="Present when the decision waits for an officer's confirmation (no notice yet)")


class NotificationStatusOut(Out):
    id: str
    kind: str
    channel: str
    status: Literal["pending", "retrying", "delivered", "dead"]
    attempts: int
    created_at: str
    delivered_at: str | None
    next_attempt_at: str | None = Field(description="When the next attempt is due (pending / retrying)")
    last_error: str | None = Field(description="Why the last attempt failed (never contains the address)")


class ExplanationState(Out):
    status: Literal["ready", "pending", "failed", "unavailable"]
    reason: str | None = Field(description="why the last attempt failed, or why the explanation failed for good")
    attempts: int


class RetentionState(Out):
    """How long the person's data of the decision is kept, and whether it was purged or is held."""

    retention_days: int = Field(description="The model's retention period (days from the decision)")
    retained_until: str = Field(description="When the personal data is purged unless a review is open or a hold is set")
    purged_at: str | None = Field(description="When the data was deleted under the retention rule (inputs, "
                                  "contact, explanation values, points of view); the outcome, dates and proofs stay")
    legal_hold_since: str | None = Field(description="Set while a legal hold keeps the data past its period")


class RecourseState(Out):
    status: Literal["ready", "pending", "failed", "not_adverse", "unavailable", "purged"]
    options: int = Field(description="how many verified options the recourse endpoint shows")
    reason: str | None = Field(description="why there are none (none_found, no_mutable_features, policy_kind_unsupported), or why the "
                                           "last attempt of the recourse job failed")
    attempts: int


class DecisionOut(Out):
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
    operator_id: str | None = Field(description="The official who operated the system, by recorded identity "
                                    "(cli_… or oidc:<subject>), when the agency named one")
    reference: str | None
    created_at: str
    notifications: list[NotificationStatusOut]
    explanation: ExplanationState
    recourse: RecourseState
    effective_outcome_set_by: str | None
    confirmation: str | None = Field(description="pending_confirmation, confirmed or changed for a decision held for "
                                     "an officer; null for one that took effect at once")
    reviews: list[ReviewSummary]
    links: DecisionLinks
    retention: RetentionState


HoldReason = Annotated[Text, Field(min_length=1, max_length=2000, description="Why the data must be kept "
                                   "(a lawsuit, an investigation); recorded in the audit log")]


class HoldIn(Strict):
    reason: HoldReason


class HoldQuery(Strict):
    reason: HoldReason


class LegalHold(Out):
    reason: str
    set_by: str
    set_at: str


class HoldOut(Out):
    decision_id: str
    legal_hold: LegalHold | None = Field(description="null once cleared")
    retention: RetentionState


class HandoverPath(Strict):
    decision_id: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    handover_id: Annotated[str, Field(max_length=64, pattern=r"^hnd_[A-Za-z0-9_-]{1,60}$")]


class HandoverCreated(Out):
    handover_id: str
    decision_id: str
    link: str = Field(description="The link to hand on to the person (…/d/{id}?token=gwh_…): shown this once; "
                      "its use is recorded as delivered by the agency; revoke it with DELETE …/handover-links/{id}")
    created_at: str
