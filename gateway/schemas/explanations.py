"""Explanations of the main influencing factors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas.common import Language, Out


class ExplanationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lang: Language | None = Field(default=None, description="kk, ru or en; default: the decision's language")


class ExplanationFactor(Out):
    feature: str
    label: str
    value: str
    band: list[float | None] | None
    direction: Literal["raised", "lowered"]
    contribution: float
    error: float | None = Field(default=None, description="estimates only: the ± half-width of the ~95 % interval "
                                                          "around the contribution, in the same space")
    rank: int | None = Field(default=None, description="1-based place by |contribution| among the shown factors; "
                                                       "estimates that overlap within their errors share a rank")


class ConfidentialOut(Out):
    count: int
    contribution_or_null: float | None
    direction: Literal["raised", "lowered"] | None
    legal_ground: str


class ExplanationText(Out):
    summary: str
    role: str
    baseline: str | None
    factors_intro: str
    precision: str | None = Field(description="what the figures are when they are not exact Shapley values of "
                                              "the raw features in the stated space (estimates, or converted)")
    factors: list[str]
    confidential: str | None


class ExplanationOut(Out):
    decision_id: str
    language: str
    outcome: str
    effective_outcome: str
    method: str | None
    output_space: str
    estimate: bool = Field(default=False, description="whether the contributions are model-agnostic estimates "
                                                      "(each factor then has its error)")
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


class Pending(Out):
    decision_id: str
    status: Literal["pending"]
    retry_after: int
