"""The algorithm register: model versions, their notices, registration and the kill switch."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from gateway.manifest import Manifest
from gateway.schemas.common import Cursor, ListTotal, LowerBound, Out, PageQuery, Strict, Text


class ModelSummary(Out):
    name: str
    version: str
    status: str
    risk_class: str
    sha256: str
    purpose: dict[str, str | None]
    owner: dict[str, str | None]
    links: dict[str, str]


class ModelList(Out):
    models: list[ModelSummary]
    total: ListTotal
    total_is_lower_bound: LowerBound
    limit: int
    offset: int
    next_after: str | None = Field(default=None, description="Pass as ?after= for the next page; null on the last")


class ModelListQuery(PageQuery):
    """A page of the register, by model name."""

    after: Cursor | None = None


class ModelRegistration(Manifest):
    """A manifest; the artifact (and background data) must have been uploaded to /v1/blobs first."""

    activate: bool = False


class ModelDetail(Out):
    name: str
    version: str
    status: str
    sha256: str
    risk_class: str
    role_of_ai: str
    autonomy: str | None
    purpose_category: str | None
    oversight: str
    notice: dict[str, Any]
    features: list[dict[str, Any]]
    monitored: list[dict[str, Any]]
    policy: dict[str, Any]
    registered_at: str


class ModelRegistered(Out):
    name: str
    version: str
    status: str
    sha256: str
    created: bool
    oversight: str


class SuspendRequest(Strict):
    reason: Annotated[Text, Field(min_length=1, max_length=2000)]
    incident_id: Annotated[str, Field(max_length=64, pattern=r"^inc_[A-Za-z0-9_-]{1,60}$",
                                      description="The incident (POST /v1/incidents) that asks for the suspension")]


class BlobStored(Out):
    sha256: str
    size: int
