"""Decision batches: the rows an agency sends, the batch's progress and each row's result."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas.common import Cursor, FeatureValue, Language, Line, ModelRef, OperatorId, Out, Strict

IdempotencyReference = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[ -~]+$")]
BatchId = Annotated[str, Field(max_length=64, pattern=r"^bat_[A-Za-z0-9_-]{1,60}$")]


class BatchContact(Strict):
    email: Annotated[str, Field(max_length=254)] | None = None
    webhook: Annotated[str, Field(max_length=2000)] | None = None


class BatchSubject(Strict):
    iin: Annotated[str, Field(pattern=r"^[0-9]{12}$", description="12-digit IIN (check digit checked per row); "
                              "never stored")]
    language: Language
    contact: BatchContact


class BatchRow(Strict):
    """One person's application: a decision request with its own idempotency reference."""

    idempotency_key: IdempotencyReference = Field(
        description="This row's Idempotency-Key: a row whose key already made a decision (in an earlier batch or "
                    "a single call) is not decided again; its first decision is its result")
    subject: BatchSubject
    features: dict[Annotated[str, Field(max_length=64)], FeatureValue] = Field(max_length=500)
    monitoring: dict[Annotated[str, Field(max_length=64)], FeatureValue] = Field(
        default={}, max_length=50, description="monitor-only values, as in a single decision request: stored "
                                               "encrypted for fairness monitoring, never given to the model")
    operator: Annotated[Line, Field(min_length=1, max_length=200)] | None = None
    operator_id: OperatorId | None = None
    reference: Annotated[Line, Field(min_length=1, max_length=200)] | None = None


class BatchRequest(Strict):
    rows: list[BatchRow] = Field(min_length=1, max_length=100_000)


class BatchPath(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$", max_length=100)]
    batch_id: BatchId


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int = Field(default=-1, ge=-1, le=10_000_000,
                       description="Rows after this index (keyset pagination: pass the previous page's next_after)")
    limit: int = Field(default=100, ge=1, le=1000, description="Rows per page (at most 1000)")


class ResultsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "jsonl"] = Field(default="csv", description="csv or jsonl (JSON lines)")


class BatchLinks(Out):
    batch: str
    results: str


class BatchRowOut(Out):
    index: int
    idempotency_key: str
    reference: str | None
    status: Literal["pending", "decided", "replayed", "invalid"] = Field(
        description="pending: not decided yet; decided: decided by this batch; replayed: its key had made a decision "
                    "before (that decision is its result); invalid: not decided, see errors")
    decision_id: str | None
    outcome: str | None
    score: float | None
    adverse: bool | None
    errors: list[dict[str, Any]] | None


class BatchCreated(Out):
    batch_id: str
    model: ModelRef
    status: str
    total_rows: int
    invalid_rows: int = Field(description="Rows refused at intake (their errors are in the batch's rows)")
    created_at: str
    links: BatchLinks


class BatchOut(Out):
    batch_id: str
    model: ModelRef
    status: Literal["queued", "running", "done", "stopped", "failed"]
    source: str
    total_rows: int
    processed_rows: int
    decided_rows: int
    replayed_rows: int
    invalid_rows: int
    created_at: str
    finished_at: str | None
    last_error: str | None
    links: BatchLinks
    rows: list[BatchRowOut]
    next_after: int | None = Field(description="Pass as ?after= for the next page; null on the last page")


class BatchListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=100, description="Batches per page (at most 100)")
    after: Cursor | None = None


class BatchSummary(Out):
    batch_id: str
    model: ModelRef
    status: Literal["queued", "running", "done", "stopped", "failed"]
    total_rows: int
    processed_rows: int
    decided_rows: int
    replayed_rows: int
    invalid_rows: int
    created_at: str
    finished_at: str | None
    links: BatchLinks


class BatchList(Out):
    batches: list[BatchSummary] = Field(description="The batches of your agency for this model, newest first")
    limit: int
    next_after: str | None = Field(description="Pass as ?after= for the next page; null on the last page")
