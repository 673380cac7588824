"""Tables (SQLAlchemy 2.0 typed). All times are UTC; ids are opaque random strings."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm import registry as orm_registry
from sqlalchemy.sql.schema import Table


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Store aware UTC datetimes; SQLite keeps no zone, so add it back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC datetimes")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    registry = orm_registry(
        metadata=MetaData(naming_convention=NAMING),
        type_annotation_map={dt.datetime: UTCDateTime(), dict[str, Any]: JSONType, list[str]: JSONType},
    )


class Role(enum.StrEnum):
    AGENCY = "agency"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"
    ADMIN = "admin"
    METRICS = "metrics"  # reads /metrics only (a Prometheus scraper); sees no decisions


class ModelStatus(enum.StrEnum):
    REGISTERED = "registered"  # stored, not serving
    ACTIVE = "active"  # the serving version of its name
    SUSPENDED = "suspended"  # the serving version, stopped by the kill switch
    RETIRED = "retired"


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    DEAD = "dead"


class ApiClient(Base):
    """A machine caller (agency system, reviewer, auditor, admin) holding an API key."""

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    body: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class Blob(Base):
    """Content-addressed bytes: model artifacts and background data, shared by every instance."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime]


class ScoringModel(Base):
    """One registered model version with its manifest."""

    __tablename__ = "scoring_models"
    __table_args__ = (UniqueConstraint("name", "version"), Index(None, "status", "name", "registered_at"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    adapter: Mapped[str] = mapped_column(String(32))
    artifact_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    background_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    risk_class: Mapped[str] = mapped_column(String(10))
    manifest: Mapped[dict[str, Any]]
    registered_at: Mapped[dt.datetime]
    registered_by: Mapped[str] = mapped_column(String(200))
    status_changed_at: Mapped[dt.datetime]
    status_reason: Mapped[str | None] = mapped_column(Text)


class Decision(Base):
    """One automated decision about one person. Never updated except its effective outcome."""

    __tablename__ = "decisions"
    # A person's decisions newest first (GET /v1/me/decisions, the person's pages): read in index order from the
    # page's cursor, so a page costs the same at page 1 and page 1,000 (a backward scan serves created_at DESC).
    # A model's decisions by time (the /metrics rollups and window sample, the purge backlog): gateway.rollups.
    __table_args__ = (Index(None, "subject_ref", "created_at", "id"), Index(None, "model_name", "created_at"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("scoring_models.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(64))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), index=True)
    subject_ref: Mapped[str] = mapped_column(String(64))
    contact_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Its data key (gateway.contacts) is wrapped by the deployment key and kept in the key store
    # (gateway.keystore, a database of its own), never here: the purge destroys it there.
    language: Mapped[str] = mapped_column(String(5))
    inputs: Mapped[dict[str, Any]]
    score: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(64))
    adverse: Mapped[bool] = mapped_column(Boolean)
    role_of_ai: Mapped[str] = mapped_column(String(20))
    operator: Mapped[str | None] = mapped_column(String(200))  # the officer's display name, as the agency sent it
    # The official who operated the system, by recorded identity ("cli_…" or "oidc:<subject>", checked at intake):
    # the one a reviewer is compared with (a reviewer never reviews a decision they operated).
    operator_id: Mapped[str | None] = mapped_column(String(100))
    reference: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(index=True)
    effective_outcome: Mapped[str] = mapped_column(String(64))
    effective_review_id: Mapped[str | None] = mapped_column(String(40))
    # Held for an officer (autonomy low, or an adverse outcome of a model that reviews those first):
    # 'pending_confirmation' until a confirmation resolves it, then 'confirmed' or 'changed'; NULL otherwise.
    confirmation: Mapped[str | None] = mapped_column(String(30))
    # Retention (gateway.retention): when the personal data was purged, and a legal hold that stops it.
    purged_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    hold_reason: Mapped[str | None] = mapped_column(Text)
    hold_set_by: Mapped[str | None] = mapped_column(String(100))
    hold_set_at: Mapped[dt.datetime | None]


class Notification(Base):
    """The outbox: one row per message to deliver; the dispatcher claims due rows."""

    __tablename__ = "notifications"
    __table_args__ = (Index(None, "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    # What a later kind of message is about (e.g. {"review_id": ...}); the decision is always known.
    context: Mapped[dict[str, Any] | None]
    # A dispatcher's claim: rows whose lease ran out are claimed again (delivery is at least once).
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None]
    # When the row reached a final state, stamped in the transaction that wrote it: the event time the /metrics
    # rollups (gateway.rollups) count finished rows by, so a refresh never counts the whole table.
    finished_at: Mapped[dt.datetime | None]


# The rows still to send and the dead letters, read by /metrics (gateway.notifications.outbox.notification_metrics)
# without touching the delivered history: a query repeats WAITING_NOTICE_SQL word for word to use it.
WAITING_NOTICE_SQL = "status IN ('pending', 'retrying', 'dead')"
Index("ix_notifications_waiting", Notification.status,
      sqlite_where=text(WAITING_NOTICE_SQL), postgresql_where=text(WAITING_NOTICE_SQL))
# The same for the jobs that compute explanations and recourse after commit (their stats on /metrics).
PENDING_JOB_SQL = "status = 'pending'"


class WebhookEndpoint(Base):
    """A webhook URL the gateway stopped delivering to (the receiver answered 410 Gone)."""

    __tablename__ = "webhook_endpoints"

    url_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    disabled_at: Mapped[dt.datetime]
    reason: Mapped[str] = mapped_column(Text)


class LogLeaf(Base):
    """An append-only audit record: the hash of a canonical record of something that happened.

    `seq` is the leaf's index in the Merkle tree, assigned by the sequencer (gateway/auditlog/sequencer.py)
    in the order leaves became visible to it, consecutively from 0; NULL until sequenced.
    """

    __tablename__ = "log_leaves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    kind: Mapped[str] = mapped_column(String(60))
    object_id: Mapped[str] = mapped_column(String(40), index=True)
    leaf_hash: Mapped[str] = mapped_column(String(64))
    record: Mapped[str] = mapped_column(Text)  # the canonical JSON whose hash is leaf_hash (unless redacted)
    created_at: Mapped[dt.datetime]
    # Set when the retention purge removed the person's data a leaf written before commitments held in clear:
    # `record` is then the redacted record, no longer what leaf_hash covers (gateway.audit.redact_record).
    redacted_at: Mapped[dt.datetime | None]


class LogNode(Base):
    """The hash of a complete subtree of the log: 2**level leaves from index * 2**level (RFC 6962)."""

    __tablename__ = "log_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column("idx", BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) of the tree of `size` leaves."""

    __tablename__ = "log_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]


class LogSequencer(Base):
    """The one row sequencers lock while they append (one holder at a time), and who last held it."""

    __tablename__ = "log_sequencer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(100))
    held_at: Mapped[dt.datetime | None]


class IdempotencyRecord(Base):
    """The first response to a client's Idempotency-Key, replayed byte for byte."""

    __tablename__ = "idempotency_keys"

    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(40))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime]


class ExplanationStatus(enum.StrEnum):
    READY = "ready"  # computed in the decision's transaction (exact explainers) or by a job
    PENDING = "pending"  # a job computes it after commit (model-agnostic explainers); retried with backoff
    FAILED = "failed"  # the job gave up (dead letter): the reason is stored and shown
    UNAVAILABLE = "unavailable"  # the model has no background data to explain against


class Explanation(Base):
    """The frozen explanation of one decision: attributions per raw feature and what may be published."""

    __tablename__ = "explanations"
    __table_args__ = (Index(None, "status", "next_attempt_at"),)

    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    method: Mapped[str | None] = mapped_column(String(60))
    output_space: Mapped[str | None] = mapped_column(String(20))
    explainer_version: Mapped[str | None] = mapped_column(String(40))
    shap_version: Mapped[str | None] = mapped_column(String(40))
    background_sha256: Mapped[str | None] = mapped_column(String(64))
    random_state: Mapped[int | None] = mapped_column(Integer)
    base_value: Mapped[float | None] = mapped_column(Float)
    output: Mapped[float | None] = mapped_column(Float)
    attributions: Mapped[dict[str, Any] | None]
    selection: Mapped[dict[str, Any] | None]
    additivity_error: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    computed_at: Mapped[dt.datetime | None]
    # The explain job's claim (gateway/jobs): a pending row whose lease ran out is taken again, and only
    # the claim's holder stores the result.
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None]
    # When a job (not the decision's own transaction) finished the row, ready or failed: the event time the jobs'
    # done and dead figures on /metrics are rolled up by (gateway.rollups).
    finished_at: Mapped[dt.datetime | None]


Index("ix_explanations_waiting", Explanation.status,
      sqlite_where=text(PENDING_JOB_SQL), postgresql_where=text(PENDING_JOB_SQL))


class RecourseStatus(enum.StrEnum):
    READY = "ready"  # computed with the decision (cheap models) or by the recourse job; options may be empty
    PENDING = "pending"  # the recourse job computes it after commit; retried with backoff
    FAILED = "failed"  # the job gave up (dead letter): the reason is stored and shown


class Recourse(Base):
    """The frozen recourse of one adverse decision: verified options to reach the other outcome.

    Personal data: each option holds the person's own values of the changed features ("from") and the
    values that would change the outcome ("to"); purge it with the decision. Written once (with the
    decision, or by the job's fenced write); its digest is in an audit leaf.
    """

    __tablename__ = "recourse"
    __table_args__ = (Index(None, "status", "next_attempt_at"),)

    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    method: Mapped[str | None] = mapped_column(String(60))
    # [{"changes": {feature: {"from", "to", "from_band"}}, "cost", "score"}], cheapest first
    options: Mapped[list[Any] | None] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(String(40))  # why there are no options: none_found, no_mutable_features
    parameters: Mapped[dict[str, Any] | None]  # the search as it ran: features, steps, limits
    digest: Mapped[str | None] = mapped_column(String(64))  # sha256 of the canonical record (in the audit leaf)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    computed_at: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None]
    # When a job (not the decision's own transaction) finished the row, ready or failed: the event time the jobs'
    # done and dead figures on /metrics are rolled up by (gateway.rollups).
    finished_at: Mapped[dt.datetime | None]


Index("ix_recourse_waiting", Recourse.status,
      sqlite_where=text(PENDING_JOB_SQL), postgresql_where=text(PENDING_JOB_SQL))


class ReviewStatus(enum.StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    WITHDRAWN = "withdrawn"


OPEN_REVIEW = ("queued", "claimed")
# The same as SQL text: the partial indexes' condition, which a query must repeat word for word for the planner
# (SQLite's and PostgreSQL's with bound parameters alike) to know it may use them.
OPEN_REVIEW_SQL = "status IN ('queued', 'claimed')"
# A review-queue case is the person's request for human review, or an officer's confirmation of a held decision.
REVIEW_KIND = "review"


class ReviewRequest(Base):
    """A person's request for human review of a decision, and the reviewer's resolution."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index(None, "status", "due_at"),
        # One open review per decision, enforced by the database on both backends.
        Index("uq_reviews_open_decision", "decision_id", unique=True,
              sqlite_where=text(OPEN_REVIEW_SQL), postgresql_where=text(OPEN_REVIEW_SQL)),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    point_of_view: Mapped[str] = mapped_column(Text)
    contest_grounds: Mapped[list[str]]
    corrected_data: Mapped[dict[str, Any] | None]
    language: Mapped[str] = mapped_column(String(5))
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[dt.datetime] = mapped_column(index=True)
    due_at: Mapped[dt.datetime]
    extended_until: Mapped[dt.datetime | None]
    extension_reason: Mapped[str | None] = mapped_column(Text)
    extended_by: Mapped[str | None] = mapped_column(String(100))
    extended_at: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None]
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(20))
    new_outcome: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[dict[str, Any] | None]
    point_of_view_considered: Mapped[bool | None] = mapped_column(Boolean)
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[dt.datetime | None]
    rescore_decision_id: Mapped[str | None] = mapped_column(String(40))
    # Requested after the window the decision notice printed (REVIEW_REQUEST_WINDOW_DAYS): accepted, flagged.
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # 'review' (the person's request) or 'confirmation' (an officer confirms a held decision): one queue
    # engine, one set of leases and fencing tokens.
    kind: Mapped[str] = mapped_column(String(20), default="review", server_default=text("'review'"))
    # When the case was resolved or withdrawn, stamped in the transaction that wrote it: the event time the /metrics
    # rollups (gateway.rollups) count finished rows by, so a refresh never counts the whole table.
    finished_at: Mapped[dt.datetime | None]


# The queue's order (gateway.reviews._next_claimable): the open cases of a kind by effective due date, so the next
# case is the index's first entry whatever the size of the queue and of the resolved history.
Index("ix_reviews_claim_order", ReviewRequest.kind,
      func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at), ReviewRequest.requested_at, ReviewRequest.id,
      sqlite_where=text(OPEN_REVIEW_SQL), postgresql_where=text(OPEN_REVIEW_SQL))
# The listed queue's orders (gateway.reviews.list_reviews): every case of a kind, and the cases of one status.
# The listing of every case sorts by LISTED_DUE: the same value as the claim order's coalesce(extended_until,
# due_at), written differently on purpose. Given two indexes on one expression, SQLite picks either (the one created
# last): the claim and the overdue count must read the small open-cases index, never every case ever requested.
LISTED_DUE = func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at, ReviewRequest.due_at)
Index("ix_reviews_queue_order", ReviewRequest.kind, LISTED_DUE, ReviewRequest.requested_at, ReviewRequest.id)
Index("ix_reviews_status_queue_order", ReviewRequest.kind, ReviewRequest.status,
      func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at), ReviewRequest.requested_at, ReviewRequest.id)


class MonitoringValues(Base):
    """Monitor-only values (e.g. sex) collected with a decision for fairness figures: never passed to the model,
    never shown to the person or the agency, never in an audit leaf. Encrypted like contacts (AES-GCM, the
    contact key, associated data 'monitoring:<decision id>'); retention and crypto-shredding: issue 15."""

    __tablename__ = "monitoring_values"

    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("scoring_models.id"), index=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class GroundTruth(Base):
    """The true outcome of a decision, posted later by its agency (for error rates per group)."""

    __tablename__ = "ground_truths"

    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), primary_key=True)
    positive: Mapped[bool] = mapped_column(Boolean)  # the model's positive class turned out true
    posted_by: Mapped[str] = mapped_column(String(40))
    posted_at: Mapped[dt.datetime]


class Incident(Base):
    """An incident with a model (AI Law: the owner monitors and reports): severity, status, report deadline."""

    __tablename__ = "incidents"
    __table_args__ = (Index(None, "opened_at", "id"), Index(None, "model_name", "opened_at", "id"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    opened_by: Mapped[str] = mapped_column(String(200))
    opened_at: Mapped[dt.datetime]
    report_due_at: Mapped[dt.datetime]
    reported_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]


class AccessEvent(Base):
    """Who read a decision (or its explanation, review, access log), and when. Append-only."""

    __tablename__ = "access_events"
    __table_args__ = (Index(None, "decision_id", "at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[dt.datetime]
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"))
    # agency / reviewer / auditor / admin, or citizen; the client id, or "citizen:<via>:<subject ref prefix>"
    # (never an IIN); the client's body (organisation) for API clients.
    principal_kind: Mapped[str] = mapped_column(String(20))
    principal_id: Mapped[str] = mapped_column(String(100))
    principal_body: Mapped[str | None] = mapped_column(String(200))
    what: Mapped[str] = mapped_column(String(40))  # decision, explanation, explanation.svg, review, ...


class HandoverLink(Base):
    """A link to the person's decision that an agency hands on (a counter clerk prints it): revocable, and
    recorded as delivered by the agency, so whoever uses it is never taken for the person's own link."""

    __tablename__ = "handover_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(40))  # the API client (agency) that made it
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(40))


class BatchStatus(enum.StrEnum):
    QUEUED = "queued"  # accepted, no chunk decided yet
    RUNNING = "running"  # some chunks decided; the batch job goes on from next_row
    DONE = "done"  # every row decided, replayed or refused
    STOPPED = "stopped"  # the model version stopped serving (suspended, replaced): the rest is not decided
    FAILED = "failed"  # a chunk failed on every attempt (dead letter); last_error says why


OPEN_BATCH = ("queued", "running")


class DecisionBatch(Base):
    """A population decided in chunks by the ``batch`` job kind; each chunk commits with its decisions."""

    __tablename__ = "decision_batches"
    __table_args__ = (Index(None, "status", "next_attempt_at"), Index(None, "model_name", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("scoring_models.id"))
    model_name: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))  # json, jsonl, csv, parquet
    total_rows: Mapped[int] = mapped_column(Integer)
    next_row: Mapped[int] = mapped_column(Integer, default=0)  # rows before it are done (committed chunks)
    decided_rows: Mapped[int] = mapped_column(Integer, default=0)
    replayed_rows: Mapped[int] = mapped_column(Integer, default=0)
    invalid_rows: Mapped[int] = mapped_column(Integer, default=0)
    chunk_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed chunk attempts in a row
    next_attempt_at: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None]


class DecisionBatchRow(Base):
    """One row of a batch: what was validated at intake (no raw IIN: its subject reference), then its result."""

    __tablename__ = "decision_batch_rows"

    batch_id: Mapped[str] = mapped_column(ForeignKey("decision_batches.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))  # pending, decided, replayed, invalid
    planned_id: Mapped[str | None] = mapped_column(String(40))  # the decision's id if this row decides
    subject_ref: Mapped[str | None] = mapped_column(String(64))
    # Under the planned decision's data key (in the key store from intake on); erased once decided.
    contact_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    channels: Mapped[list[str] | None]
    language: Mapped[str | None] = mapped_column(String(5))
    features: Mapped[dict[str, Any] | None]  # validated; erased once decided (the decision keeps its inputs)
    monitoring_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)  # monitor-only values, under data_key
    operator: Mapped[str | None] = mapped_column(String(200))
    operator_id: Mapped[str | None] = mapped_column(String(100))  # checked at intake: an official the gateway knows
    reference: Mapped[str | None] = mapped_column(String(200))
    errors: Mapped[list[Any] | None] = mapped_column(JSONType)  # the row's problems, each {"field", "rule", "message"}
    decision_id: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    adverse: Mapped[bool | None] = mapped_column(Boolean)
    decided_at: Mapped[dt.datetime | None]



class SignInLink(Base):
    """A one-time sign-in link for an official, bound to their API client (key): only its hash is stored.

    Single use (``used_at``), short-lived (``expires_at``); the key itself never reaches the browser."""

    __tablename__ = "sign_in_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), index=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class WebSession(Base):
    """A signed-in browser session (an official's or a person's): the cookie holds a random id, the table
    its hash, who it is and until when. Signing in makes a new one; signing out ends it."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # "official" | "person"
    via: Mapped[str] = mapped_column(String(20))  # "link" | "oidc"
    client_id: Mapped[str | None] = mapped_column(ForeignKey("api_clients.id"), index=True)  # link sign-in
    official_id: Mapped[str | None] = mapped_column(String(100))  # "cli_…" or "oidc:<subject>"
    name: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str | None] = mapped_column(String(20))
    subject_ref: Mapped[str | None] = mapped_column(String(64))  # a person's (HMAC of the IIN), never the IIN
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]

# The finished rows by the time they finished (gateway.rollups reads a range of it): partial, because most rows of
# the job tables never were jobs; and a planner that sees mostly NULLs would not use a full index for a range.
FINISHED_SQL = "finished_at IS NOT NULL"
for _finished in (Notification, ReviewRequest, Explanation, Recourse):
    Index(f"ix_{_finished.__tablename__}_finished_at", _finished.finished_at,
          sqlite_where=text(FINISHED_SQL), postgresql_where=text(FINISHED_SQL))
# The claimed review cases (few: each holds a lease), counted by /metrics; a query repeats CLAIMED_SQL word for word.
CLAIMED_SQL = "status = 'claimed'"
Index("ix_reviews_claimed", ReviewRequest.kind, sqlite_where=text(CLAIMED_SQL), postgresql_where=text(CLAIMED_SQL))


class MetricRollup(Base):
    """A count of finished events of one stream, per model and key, over closed time (gateway.rollups).

    Hourly streams keep one row per hour (a window sums its hours); total streams keep one running total
    (period_start = 1970-01-01) that each closing adds to.
    """

    __tablename__ = "metric_rollups"

    stream: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class MetricWatermark(Base):
    """How far a rollup stream is closed: events before `closed_until` are in metric_rollups (from `covered_from`
    on for hourly streams); later ones are read from their table at each refresh."""

    __tablename__ = "metric_watermarks"

    stream: Mapped[str] = mapped_column(String(40), primary_key=True)
    covered_from: Mapped[dt.datetime]
    closed_until: Mapped[dt.datetime]


def table(model: type[Base]) -> Table:
    """The Core table of a mapped class (for inserts and updates on the hot path, without the unit of work)."""
    found: Table = model.__table__  # type: ignore[assignment]
    return found
