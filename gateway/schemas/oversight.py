"""The oversight report, ground truth and the incident register."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas.common import Cursor, Line, Out, Strict, Text

DateText = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", max_length=10,
                                json_schema_extra={"format": "date"})]


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[Line, Field(min_length=1, max_length=100)]
    from_: DateText = Field(alias="from", description="first day of the period (UTC), included")
    to: DateText = Field(description="last day of the period (UTC), included")
    format: Literal["json", "csv", "html"] = "json"


class OversightReport(Out):
    """Every figure of the oversight report (see README: Oversight report)."""

    report: Literal["oversight"]
    model: str
    period: dict[str, str]
    data: dict[str, Any]
    volume: dict[str, Any]
    notices: dict[str, Any]
    explanations: dict[str, Any]
    reviews: dict[str, Any]
    confirmations: dict[str, Any]
    fairness: dict[str, Any]
    drift: dict[str, Any]
    sensitive_factors: dict[str, Any]
    incidents: list[dict[str, Any]]


class GroundTruthIn(Strict):
    positive: bool = Field(description="whether the model's positive class turned out true (e.g. the loan was repaid)")


class GroundTruthOut(Out):
    decision_id: str
    positive: bool
    posted_at: str


class IncidentIn(Strict):
    model: Annotated[Line, Field(min_length=1, max_length=100)]
    version: Annotated[Line, Field(min_length=1, max_length=64)] | None = None
    severity: Literal["low", "medium", "high", "critical"]
    description: Annotated[Text, Field(min_length=1, max_length=10000)]


class IncidentStatusIn(Strict):
    status: Literal["reported", "closed"]


class IncidentPath(Strict):
    incident_id: Annotated[str, Field(max_length=64, pattern=r"^inc_[A-Za-z0-9_-]{1,60}$")]


class IncidentQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[Line, Field(max_length=100)] | None = None
    status: Literal["open", "reported", "closed"] | None = None
    limit: int = Field(default=50, ge=1, le=100, description="Page size (at most 100)")
    after: Cursor | None = None


class IncidentOut(Out):
    incident_id: str
    model: str
    version: str | None
    severity: str
    description: str
    status: str
    opened_at: str
    opened_by: str
    report_due_at: str = Field(description="when the regulator must have the report (INCIDENT_REPORT_HOURS)")
    reported_at: str | None
    closed_at: str | None
    report_overdue: bool
    link: str


class IncidentList(Out):
    incidents: list[IncidentOut]
    limit: int
    next_after: str | None = Field(default=None, description="Pass as ?after= for the next page; null on the last")
