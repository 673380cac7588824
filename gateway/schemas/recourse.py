"""Recourse: verified options to reach the other outcome of an adverse decision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.schemas.common import Out


class RecourseChange(Out):
    feature: str
    label: str = Field(description="the feature's label in the asked language")
    current: str = Field(description="the person's value as they read it (its band for banded features)")
    proposed: str = Field(description="the value that, with the option's other changes, gives the other outcome")
    to: bool | int | float | str = Field(description="the proposed value in raw units")


class RecourseOptionOut(Out):
    changes: list[RecourseChange]
    cost: float = Field(description="sum over changes of |change| / the feature's scale (a category change: 1)")
    score: float = Field(description="the score the model that decided gives the changed application")
    outcome: str = Field(description="the outcome the changed application gets")
    text: str


class RecourseText(Out):
    heading: str
    intro: str | None
    options: list[str]
    none: str | None = Field(description="why there are no options, when there are none")
    scope: str


class RecourseOut(Out):
    decision_id: str
    language: str
    outcome: str
    effective_outcome: str
    adverse: bool
    status: Literal["ready", "not_adverse", "unavailable"] = Field(
        description="ready: computed (options may be empty, see reason); not_adverse: the decision is not adverse, "
                    "so no recourse is offered; unavailable: decided before recourse was computed")
    reason: Literal["none_found", "no_mutable_features", "policy_kind_unsupported", "not_adverse", "not_computed"] | None
    method: str | None
    options: list[RecourseOptionOut]
    text: RecourseText
    computed_at: str | None
    digest: str | None = Field(description="sha256 of the stored record, as pinned by its audit leaf")
