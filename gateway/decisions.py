"""Record an automated decision: score, decide, and write everything in one transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, exists, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from explainers import ExplainerError
from gateway import access, deadlines, explanations, keystore, links, officials, recourse, registry, runtime
from gateway.audit import leaf_values
from gateway.auth import Caller, Principal, check_live_key, live_key
from gateway.contacts import DataKey, decrypt_contact, encrypt_contact, encrypt_monitoring
from gateway.db import rowcount, write_transaction
from gateway.errors import (
    Conflict,
    DatabaseUnavailable,
    GatewayError,
    ModelUnavailable,
    NotFound,
    ValidationFailed,
)
from gateway.extensions import db
from gateway.features import validate_features, validate_monitoring
from gateway.identity import subject_ref
from gateway.ids import isoformat, new_id, utcnow
from gateway.models import (
    Decision,
    Explanation,
    IdempotencyRecord,
    LogLeaf,
    ModelStatus,
    MonitoringValues,
    Notification,
    NotificationStatus,
    Recourse,
    ReviewRequest,
    ScoringModel,
    table,
)
from gateway.runtime import LoadedModel
from gateway.settings import Settings, current_settings

NOTICE = "decision_notice"


@dataclass(frozen=True)
class DecisionInput:
    """A validated decision request, as plain values."""

    iin: str
    language: str
    contact: dict[str, str]
    features: dict[str, Any]
    operator: str | None = None
    reference: str | None = None
    monitoring: dict[str, Any] = field(default_factory=dict)
    operator_id: str | None = None  # the official who operated it, by recorded identity (checked: officials)


PENDING_CONFIRMATION = "pending_confirmation"
CONFIRMATION = "confirmation"  # the kind of a review-queue case in which an officer confirms a held decision


@dataclass(frozen=True)
class StoredResponse:
    """The response to send: the first one for this Idempotency-Key, byte for byte."""

    status: int
    body: bytes
    resource_id: str
    replayed: bool


# json.dumps with these options, its encoder made once: a batch hashes one body per row (an encoder keeps no
# state between calls, so threads share it).
_REQUEST_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(*parts: Any) -> str:
    """Hash a request's meaning (path parameters and parsed body), not its whitespace."""
    canonical = _REQUEST_JSON.encode(parts)
    return hashlib.sha256(canonical.encode()).hexdigest()


_REPLAY = (
    select(IdempotencyRecord.request_hash, IdempotencyRecord.status_code, IdempotencyRecord.response_body,
           IdempotencyRecord.resource_id)
    .where(IdempotencyRecord.client_id == bindparam("client_id"), IdempotencyRecord.key == bindparam("key"))
)


def _replay(client_id: str, key: str, request_hash: str) -> StoredResponse | None:
    found = db.session.execute(_REPLAY, {"client_id": client_id, "key": key}).first()
    if found is None:
        return None
    if found.request_hash != request_hash:
        raise ValidationFailed(
            "this Idempotency-Key was used with a different request body; use a new key for a new request",
            code="idempotency_key_reused",
            details=[{"field": "Idempotency-Key", "rule": "same_body", "message": "key already used with another body"}],
        )
    return StoredResponse(found.status_code, bytes(found.response_body), found.resource_id, True)


def serving_model(name: str, *, hint: bool = False) -> LoadedModel:
    """Return the loaded serving version of `name`, or raise NotFound / ModelUnavailable.

    `hint`: take the version this process last saw active without a SELECT; the caller must then prove it
    still active in its write transaction (`_guarded_insert`), as `record_decision` does."""
    models = runtime.cache()
    model_id = models.active.get(name) if hint else None
    if model_id is None:
        row = db.session.execute(
            select(ScoringModel.id, ScoringModel.status)
            .where(ScoringModel.name == name, ScoringModel.status.in_(registry.SERVING))
        ).first()
        if row is None:
            raise NotFound(f"no model named {name!r} is being served")
        if row.status == ModelStatus.SUSPENDED:
            # 409, not 503: the kill switch is the model's state, not an outage a client should retry into.
            raise Conflict(f"model {name} is suspended; no decisions are made with it", code="model_suspended")
        model_id = models.active[name] = row.id
    loaded = models.get(model_id)
    registry.check_classification(loaded.manifest)
    registry.check_risk_assessment(loaded.manifest, current_settings().risk_assessment_max_age_days)
    return loaded


@dataclass(frozen=True)
class Scored:
    """A row scored, decided and explained (explanation, recourse: the column values of their rows)."""

    row: dict[str, Any]
    score: float
    outcome: str
    adverse: bool
    explanation: dict[str, Any]
    recourse: dict[str, Any] | None = None  # adverse decisions only


def score_and_explain(model: LoadedModel, row: dict[str, Any], now: dt.datetime) -> Scored:
    """Score a validated row, apply the policy and explain exactly; ModelUnavailable when anything fails."""
    scored = score_and_explain_many(model, [row], now)[0]
    if isinstance(scored, ExplainerError):
        # The right to an explanation is part of the decision: without one, nothing is decided.
        raise ModelUnavailable(f"the decision could not be explained: {scored}", code="explanation_failed") from scored
    return scored


def assess_many(model: LoadedModel, rows: list[dict[str, Any]]) -> tuple[list[tuple[float, str, bool]], Any]:
    """(score, outcome, adverse) of validated rows: what `LoadedModel.assess` gives each, scored in one call,
    and their raw margins when scoring computed them (or None); ModelUnavailable when the model fails."""
    try:
        return model.assess_rows_margins(rows)
    except ModelUnavailable:  # a remote model's failure, with the code that says which (nothing is recorded)
        current_app.logger.warning("model %s %s failed to score", model.name, model.version, exc_info=True)
        raise
    except Exception as exc:
        current_app.logger.exception("model %s %s failed to score", model.name, model.version)
        raise ModelUnavailable(f"model {model.name} {model.version} failed to score the request: {type(exc).__name__}") from exc


def _explain_group(tools: Any, rows: list[dict[str, Any]], scores: list[float], now: dt.datetime,
                   model: LoadedModel, margins: Any = None) -> list[dict[str, Any] | ExplainerError]:
    try:
        return list(explanations.values_for_decisions(tools, rows, scores, now, margins=margins))
    except ExplainerError:
        # One row spoils the matrix (e.g. its additivity check): explain row by row to find which.
        values: list[dict[str, Any] | ExplainerError] = []
        for row, score in zip(rows, scores, strict=True):
            try:
                values.append(explanations.values_for_decision(tools, row, score, now))
            except ExplainerError as exc:
                current_app.logger.exception("model %s %s: explanation failed", model.name, model.version)
                values.append(exc)
        return values


def score_and_explain_many(model: LoadedModel, rows: list[dict[str, Any]], now: dt.datetime, *,
                           recourse_now: bool = True) -> list[Scored | ExplainerError]:
    """Score, decide and explain validated rows with one model call and one explainer call per explainer.

    A row whose explanation fails gets its ExplainerError in its place (it is not decided: the right to an
    explanation is part of the decision); the other rows are unaffected. ModelUnavailable when scoring fails.
    Recourse of adverse rows is computed now when cheap (`recourse_now`, a single decision) or left to the
    recourse job (a batch: its options are searched after commit, as for a model that is not cheap).
    """
    if not rows:
        return []
    assessed, margins = assess_many(model, rows)
    groups: dict[int, tuple[Any, list[int]]] = {}  # one explainer call per explainer (multi-class: per class)
    for i, (_, outcome, _) in enumerate(assessed):
        tools = model.tools_for(outcome)
        groups.setdefault(id(tools), (tools, []))[1].append(i)
    values: list[dict[str, Any] | ExplainerError | None] = [None] * len(rows)
    for tools, members in groups.values():
        explained = _explain_group(tools, [rows[i] for i in members], [assessed[i][0] for i in members], now, model,
                                   None if margins is None else margins[members])
        for i, found in zip(members, explained, strict=True):
            values[i] = found
    result: list[Scored | ExplainerError] = []
    for row, (score, outcome, adverse), value in zip(rows, assessed, values, strict=True):
        assert value is not None
        if isinstance(value, ExplainerError):
            result.append(value)
            continue
        options = (recourse.values_for_decision(model, row, adverse, now, score) if recourse_now
                   else recourse.pending_for_decision(adverse, now))
        result.append(Scored(row, score, outcome, adverse, value, options))
    return result


@dataclass(frozen=True)
class NewDecision:
    """Everything one decision's rows are made of."""

    id: str
    model: LoadedModel
    client_id: str
    subject_ref: str
    contact: dict[str, str]
    language: str
    scored: Scored
    role_of_ai: str
    operator: str | None
    reference: str | None
    created_at: dt.datetime
    audit_extra: dict[str, Any] | None = None
    # Already committed in the key store (gateway.keystore): made before the decision's transaction, or at a
    # batch's intake (its contact was encrypted with it). None: add_decisions makes and stores one first.
    data_key: DataKey | None = None
    monitoring: dict[str, Any] | None = None  # monitor-only values: stored encrypted, never given to the model
    held: bool = False  # waits for an officer's confirmation: no notice until then
    operator_id: str | None = None  # the official who operated it ("cli_…" / "oidc:<subject>"), checked at intake
    # The contact already encrypted under `data_key` for this decision's id (a batch row's, from its intake);
    # None: add_decisions encrypts `contact`.
    contact_ciphertext: bytes | None = None


def held_for_confirmation(model: LoadedModel, adverse: bool) -> bool:
    """Whether a decision waits for an officer (autonomy low: all; adverse review first: adverse ones)."""
    mode = model.manifest.held_for_confirmation
    return mode == "all" or (mode == "adverse" and adverse)


def add_decision(session: Any, d: NewDecision, settings: Settings) -> None:
    """Insert a decision with its explanation, notice rows and audit leaf (the caller's transaction)."""
    add_decisions(session, [d], settings)


def add_decisions(session: Any, made: list[NewDecision], settings: Settings) -> None:
    """Insert decisions with their explanations, notice rows and audit leaves: one statement per table."""
    insert_decision_rows(session, decision_rows(made, settings))


@dataclass(frozen=True)
class DecisionRows:
    """The column values of decisions' rows, table by table (built by `decision_rows`, inserted by
    `insert_decision_rows`): a batch builds them before its write transaction, so the write lock is held for
    the inserts only."""

    decisions: list[dict[str, Any]]
    explanations: list[dict[str, Any]]
    notices: list[dict[str, Any]]
    recourse: list[dict[str, Any]]
    monitoring: list[dict[str, Any]]
    confirmations: list[dict[str, Any]]
    leaves: list[dict[str, Any]]


def decision_rows(made: list[NewDecision], settings: Settings) -> DecisionRows:
    """The rows of decisions, their explanations, notices and audit leaves (nothing is written here but the
    key store's keys of decisions that have none yet, committed in the key store's own database first)."""
    if not made:
        return DecisionRows([], [], [], [], [], [], [])
    # The key store is another database: its keys are committed before the decisions are (a key without a
    # decision is garbage the purge job sweeps; a decision without its key would lose the person's contact).
    issued = keystore.issue_many(settings.contact_key, [d.id for d in made if d.data_key is None], made[0].created_at)
    decision_rows: list[dict[str, Any]] = []
    explanation_rows: list[dict[str, Any]] = []
    notice_rows: list[dict[str, Any]] = []
    recourse_rows: list[dict[str, Any]] = []
    monitoring_rows: list[dict[str, Any]] = []
    confirmation_rows: list[dict[str, Any]] = []
    leaves: list[dict[str, Any]] = []
    for d in made:
        model, scored, now = d.model, d.scored, d.created_at
        model_ref = {"name": model.name, "version": model.version, "sha256": model.sha256}
        data_key = d.data_key if d.data_key is not None else issued[d.id]
        decision_rows.append({
            "id": d.id, "model_id": model.id, "model_name": model.name, "model_version": model.version,
            "artifact_sha256": model.sha256, "client_id": d.client_id, "subject_ref": d.subject_ref,
            "contact_ciphertext": (d.contact_ciphertext if d.contact_ciphertext is not None
                                   else encrypt_contact(data_key, d.contact)),
            "language": d.language, "inputs": scored.row, "score": scored.score, "outcome": scored.outcome,
            "adverse": scored.adverse, "role_of_ai": d.role_of_ai, "operator": d.operator, "operator_id": d.operator_id,
            "reference": d.reference,
            "created_at": now, "effective_outcome": scored.outcome, "effective_review_id": None,
            "confirmation": PENDING_CONFIRMATION if d.held else None,
        })
        explanation_rows.append(_explanation_row(scored.explanation, d.id))
        recourse_row = None
        if scored.recourse is not None:
            recourse_row = recourse.row_values(d.id, scored.recourse, data_key.commitment)
            recourse_rows.append(recourse_row)
        if d.monitoring:
            monitoring_rows.append({"decision_id": d.id, "model_id": model.id,
                                    "ciphertext": encrypt_monitoring(data_key, d.monitoring)})
        if d.held:
            # The confirmation queue is the review queue (same leases and fencing tokens), cases of another kind.
            confirmation_rows.append({
                "id": new_id("rev"), "decision_id": d.id, "kind": CONFIRMATION, "status": "queued",
                "point_of_view": "", "contest_grounds": [], "corrected_data": None, "language": d.language,
                "requested_by": "gateway", "requested_at": now, "due_at": deadlines.due_date(now, settings),
                "fencing_token": 0, "late": False,
            })
        notice_rows.extend(() if d.held else (
            {
                "id": new_id("ntf"), "decision_id": d.id, "kind": NOTICE, "channel": channel, "language": d.language,
                "status": NotificationStatus.PENDING.value, "attempts": 0, "next_attempt_at": now, "created_at": now,
            }
            for channel in sorted(d.contact)
        ))
        # Personal data only as commitments keyed by the decision's data key (gateway.contacts): the purge
        # deletes the values and destroys the key, and the leaf, its hash and every proof stay as they are.
        audit_record = {
            "decision_id": d.id, "model": model_ref, "subject_ref": d.subject_ref,
            "inputs_commitment": data_key.commitment(scored.row),
            "contact_commitment": data_key.commitment(d.contact),
            "score": scored.score, "outcome": scored.outcome, "adverse": scored.adverse, "role_of_ai": d.role_of_ai,
            "client_id": d.client_id, "operator": d.operator, "created_at": isoformat(now),
            "explanation": explanations.audit_digest(scored.explanation, data_key.commitment),
            **({"operator_id": d.operator_id} if d.operator_id is not None else {}),
            **(d.audit_extra or {}),
            **({"recourse": recourse.audit_digest(recourse_row)} if scored.adverse else {}),
            **({"confirmation": PENDING_CONFIRMATION} if d.held else {}),
        }
        leaves.append(leaf_values("decision:recorded", d.id, audit_record, now))
    return DecisionRows(decision_rows, explanation_rows, notice_rows, recourse_rows, monitoring_rows,
                        confirmation_rows, leaves)


def insert_decision_rows(session: Any, rows: DecisionRows) -> None:
    """Insert `decision_rows`' rows in the caller's transaction: one statement per table."""
    if not rows.decisions:
        return
    # Core statements on the session's connection: no ORM unit of work or ORM execution layer on the hot
    # path; one executemany per table, built once (SQLAlchemy caches their compiled form).
    conn = session.connection()
    conn.execute(_INSERTS[Decision], rows.decisions)
    conn.execute(_INSERTS[Explanation], rows.explanations)
    for group in _same_columns(rows.recourse):  # ready and pending rows name different columns
        conn.execute(_INSERTS[Recourse], group)
    if rows.monitoring:
        conn.execute(_INSERTS[MonitoringValues], rows.monitoring)
    if rows.confirmations:
        conn.execute(_INSERTS[ReviewRequest], rows.confirmations)
    if rows.notices:
        conn.execute(_INSERTS[Notification], rows.notices)
    conn.execute(_INSERTS[LogLeaf], rows.leaves)


_INSERTS = {model: insert(table(model)) for model in (Decision, Explanation, Recourse, MonitoringValues,
                                                      ReviewRequest, Notification, LogLeaf)}


EXPLANATION_COLUMNS = tuple(c.name for c in table(Explanation).columns)


def _same_columns(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.values())


def _explanation_row(values: dict[str, Any], decision_id: str) -> dict[str, Any]:
    # Every column named, so that rows of one executemany share one statement whatever their status.
    return {c: None for c in EXPLANATION_COLUMNS} | values | {"decision_id": decision_id}


def decision_body(d: NewDecision, settings: Settings) -> bytes:
    """The 201 body of a recorded decision, as stored for its idempotency key and replayed byte for byte."""
    model, scored = d.model, d.scored
    body = {
        "decision_id": d.id,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "score": scored.score,
        "outcome": scored.outcome,
        "adverse": scored.adverse,
        "created_at": isoformat(d.created_at),
        # No personal link: it reaches the person through the notice only; this body is stored (idempotency)
        # and read by the agency's systems. An agency hands a link on with a handover link.
        "links": links.decision_links(settings.base_url, d.id),
    }
    if d.held:
        body["confirmation"] = PENDING_CONFIRMATION  # no notice until an officer confirms it
    return _BODY_JSON.encode(body).encode()


# json.dumps(body, ensure_ascii=False, separators=(",", ":")), its encoder made once (a chunk stores one per decision).
_BODY_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def idempotency_row(client_id: str, key: str, request_hash: str, d: NewDecision, body: bytes) -> dict[str, Any]:
    """The idempotency record of a decision made for `key` (inserted in the decision's transaction)."""
    return {"client_id": client_id, "key": key, "request_hash": request_hash, "resource_id": d.id,
            "status_code": 201, "response_body": body, "created_at": d.created_at}


class _StaleLookup(Exception):
    """The key or the model version taken from this process's caches did not hold in the write."""


def record_decision(
    principal: Principal, model_name: str, data: DecisionInput, *, idempotency_key: str, request_hash: str,
    settings: Settings | None = None, key_hash: str | None = None,
) -> StoredResponse:
    """Score `data` with the serving model and record the decision durably; return the response to send.

    `key_hash`: the principal came from the process's key cache (gateway.auth.cached_key) unchecked; the
    key is then proved live in the decision's own transaction, so a revoked key records nothing from the
    moment its revocation commits. The serving version is taken from the process's cache likewise and proved
    active in the same statement (the INSERT of the idempotency record). When either fails, the transaction
    is rolled back, the caches forgotten, and the request decided again with both read from the database.
    """
    settings = settings or current_settings()
    try:
        return _record_decision(principal, model_name, data, idempotency_key=idempotency_key,
                                request_hash=request_hash, settings=settings, key_hash=key_hash, cached=True)
    except _StaleLookup:
        runtime.cache().active.pop(model_name, None)
        if key_hash is not None:
            check_live_key(principal.id, key_hash)  # Unauthorized once revoked
        try:
            return _record_decision(principal, model_name, data, idempotency_key=idempotency_key,
                                    request_hash=request_hash, settings=settings, key_hash=key_hash, cached=False)
        except _StaleLookup as exc:  # changed again within the request: let the client retry
            raise Conflict("the model or the API key changed while the decision was being made; nothing was "
                           "recorded, send the request again", code="changed_during_request") from exc


def _record_decision(
    principal: Principal, model_name: str, data: DecisionInput, *, idempotency_key: str, request_hash: str,
    settings: Settings, key_hash: str | None, cached: bool,
) -> StoredResponse:
    if not cached:  # a retry after a stale cache: the stored answer first, as read from the database
        replay = _replay(principal.id, idempotency_key, request_hash)
        if replay is not None:
            return replay
    # With the caches, no read comes first: the key's own INSERT (a unique key) finds a replay when it
    # conflicts, and a request refused before its write looks for one first (a retried request answers as
    # it was first answered, whatever changed since: a suspended model, an operator no longer known).
    try:
        decision = _decide(principal, model_name, data, settings=settings, cached=cached)
    except GatewayError:
        if cached:
            replay = _replay(principal.id, idempotency_key, request_hash)
            if replay is not None:
                if key_hash is not None:
                    check_live_key(principal.id, key_hash)  # a replay writes nothing: prove the key here
                return replay
        raise
    body_bytes = decision_body(decision, settings)
    record = idempotency_row(principal.id, idempotency_key, request_hash, decision, body_bytes)
    # Every row built before the write transaction (encryption, commitments, the audit leaf's hash): SQLite
    # admits one writer at a time, so what runs inside it runs alone; only the statements and the commit do.
    rows = decision_rows([decision], settings)
    try:
        with write_transaction() as session:
            insert_decision_rows(session, rows)
            if _guarded_insert(session, record, decision.model.id, principal.id, key_hash) != 1:
                raise _StaleLookup()  # rolls the decision's rows back with it
    except IntegrityError as exc:
        # A concurrent request with the same key committed first (both databases make the loser wait for
        # the winner's commit, so its record is visible now): answer with its response.
        db.session.rollback()
        replay = _replay(principal.id, idempotency_key, request_hash)
        if replay is None:
            current_app.logger.error("decision not recorded: %s", exc)
            raise DatabaseUnavailable("the database refused the record; nothing was recorded") from exc
        return replay
    except DBAPIError as exc:
        current_app.logger.error("decision not recorded: %s", exc)
        raise DatabaseUnavailable() from exc
    return StoredResponse(201, body_bytes, decision.id, False)


def _decide(principal: Principal, model_name: str, data: DecisionInput, *, settings: Settings,
            cached: bool) -> NewDecision:
    """Validate, score, decide and explain one request: the decision to write (nothing is written here)."""
    try:
        model = serving_model(model_name, hint=cached)
    except ModelUnavailable as exc:
        _stale_if_changed(exc, cached)
        raise
    if data.language not in settings.languages:
        raise ValidationFailed(
            f"language {data.language!r} is not offered by this deployment",
            details=[{"field": "subject.language", "rule": "language",
                      "message": f"must be one of {list(settings.languages)}"}],
        )
    row = validate_features(model.manifest, data.features)
    monitoring = validate_monitoring(model.manifest, data.monitoring)
    if data.operator_id is not None and data.operator_id not in officials.known_officials({data.operator_id}):
        raise ValidationFailed("operator_id names no official the gateway knows",
                               details=[officials.unknown_operator(data.operator_id)])
    db.session.commit()  # end any read transaction (a cache miss) before the slow part: nothing is held

    now = utcnow()
    try:
        scored = score_and_explain(model, row, now)
    except ModelUnavailable as exc:
        _stale_if_changed(exc, cached)
        raise
    # A key already committed in the key store (keys are committed ahead in batches, each with the id of the
    # decision it will serve): the key store's commit stays out of the decision's path and its transaction.
    try:
        data_key = keystore.take(settings.contact_key, now)
    except DBAPIError as exc:
        current_app.logger.error("decision not recorded: the key store refused its data key: %s", exc)
        raise DatabaseUnavailable("the key store refused the decision's data key; nothing was recorded") from exc
    decision = NewDecision(
        id=data_key.decision_id, data_key=data_key, model=model, client_id=principal.id,
        subject_ref=subject_ref(data.iin, settings.subject_key), contact=data.contact,
        language=data.language, scored=scored, role_of_ai=model.manifest.role_of_ai, operator=data.operator,
        operator_id=data.operator_id, reference=data.reference, created_at=now, monitoring=monitoring or None,
        held=held_for_confirmation(model, scored.adverse),
    )
    return decision


def _stale_if_changed(exc: ModelUnavailable, cached: bool) -> None:
    """A remote model that now serves another version than the cached serving version pinned: an admin may have
    registered that version since this process cached it, so the request is decided again with the serving
    version read from the database (where, if nobody registered it, the same refusal follows)."""
    if cached and exc.code == "model_changed":
        raise _StaleLookup() from exc


IDEMPOTENCY = table(IdempotencyRecord)
IDEMPOTENCY_COLUMNS = ("client_id", "key", "request_hash", "resource_id", "status_code", "response_body", "created_at")


def _guarded_statement(with_key: bool) -> Any:
    """INSERT … SELECT of the idempotency record, guarded: the version still active and (`with_key`) the
    cached key still live. Built once; its values and the guard's ids are bound parameters."""
    guard = exists().where(ScoringModel.id == bindparam("guard_model_id"),
                           ScoringModel.status == ModelStatus.ACTIVE.value)
    if with_key:
        guard = guard & live_key(bindparam("guard_client_id"), bindparam("guard_key_hash"))  # type: ignore[arg-type]
    values = select(*[bindparam(c, type_=IDEMPOTENCY.c[c].type) for c in IDEMPOTENCY_COLUMNS]).where(guard)
    # rowcount of an INSERT is kept only when asked for (SQLAlchemy 2.x; psycopg reports -1 otherwise).
    return (insert(IDEMPOTENCY).from_select(list(IDEMPOTENCY_COLUMNS), values)
            .execution_options(preserve_rowcount=True))


_GUARDED = {with_key: _guarded_statement(with_key) for with_key in (False, True)}


def _guarded_insert(session: Any, record: dict[str, Any], model_id: str, client_id: str, key_hash: str | None) -> int:
    """INSERT the idempotency record only if the model version is still active and the key (if cached) live:
    one statement, evaluated under the write transaction's lock; returns 1, or 0 when either no longer holds."""
    params = {**record, "guard_model_id": model_id, "guard_client_id": client_id, "guard_key_hash": key_hash}
    return rowcount(session.connection().execute(_GUARDED[key_hash is not None], params))


@dataclass(frozen=True)
class DecisionRecord:
    """A decision with what happened to it since: its notices and reviews (newest review first)."""

    decision: Decision
    notifications: list[Notification]
    reviews: list[ReviewRequest]
    explanation: Explanation | None
    recourse: Recourse | None = None


def decision_record(caller: Caller, decision_id: str) -> DecisionRecord:
    """Read a decision for a caller who sees it (gateway.access); anyone else gets NotFound."""
    decision = access.visible_decision(caller, decision_id)
    notes = db.session.execute(
        select(Notification).where(Notification.decision_id == decision_id)
        .order_by(Notification.created_at, Notification.id)
    ).scalars()
    reviews = db.session.execute(
        select(ReviewRequest).where(ReviewRequest.decision_id == decision.id, ReviewRequest.kind == "review")
        .order_by(ReviewRequest.requested_at.desc())
    ).scalars()
    return DecisionRecord(decision, list(notes), list(reviews), db.session.get(Explanation, decision_id),
                          db.session.get(Recourse, decision_id))


def contact_of(decision: Decision, settings: Settings | None = None) -> dict[str, str]:
    """The decision's contact details, decrypted (never log them); {} once erased."""
    settings = settings or current_settings()
    if decision.contact_ciphertext is None:
        return {}
    return decrypt_contact(settings.contact_key, decision.id, decision.contact_ciphertext, keystore.wrapped(decision.id))
