"""Who read a decision, and a person's list of decisions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.schemas.common import DecisionLinks, ListTotal, LowerBound, ModelRef, Out


class AccessPrincipal(Out):
    kind: Literal["agency", "reviewer", "auditor", "admin", "citizen"]
    id: str
    body: str | None


class AccessEventOut(Out):
    at: str
    what: str
    principal: AccessPrincipal


class AccessLog(Out):
    decision_id: str
    events: list[AccessEventOut]
    total: ListTotal
    total_is_lower_bound: LowerBound
    limit: int
    offset: int
    next_after: str | None = Field(default=None, description="Pass as ?after= for the next page; null on the last")


class MyDecision(Out):
    decision_id: str
    model: ModelRef
    outcome: str
    effective_outcome: str
    adverse: bool
    created_at: str
    links: DecisionLinks


class MyDecisions(Out):
    decisions: list[MyDecision]
    total: ListTotal
    total_is_lower_bound: LowerBound
    limit: int
    offset: int
    next_after: str | None = Field(default=None, description="Pass as ?after= for the next page; null on the last")
