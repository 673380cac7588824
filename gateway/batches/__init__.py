"""Decision batches: a population decided in chunks, each row exactly as a single decision is.

Intake (`submit`) validates every row the way a single decision is validated and stores what the job
needs without the raw IIN: the subject reference, the contact encrypted for the decision id the row will
get, the validated features. A row that fails validation keeps its errors as its result.

The ``batch`` job kind (gateway/batches/task.py) then calls `run_chunk` until the batch is done. A chunk is
scored with one model call and explained with one explainer call on its matrix, and committed in ONE
transaction with everything a single decision writes (decision, explanation, notice rows, audit leaf,
idempotency record) plus the rows' results and the batch's progress. That transaction is fenced by the
claim and by the batch's position (``next_row``): a worker killed mid-chunk commits nothing, the next
claimer starts again from the last committed chunk, and a row is never decided twice (its idempotency
record and its pre-assigned decision id are unique keys as well).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import gc
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from pydantic import ValidationError
from sqlalchemy import and_, bindparam, insert, null, or_, select, update
from sqlalchemy.exc import IntegrityError

from explainers import ExplainerError
from gateway import batchfiles, decisions, keystore, officials, registry, runtime
from gateway.audit import leaf_values
from gateway.auth import Caller, Principal
from gateway.contacts import (
    encrypt_contact,
    encrypt_monitoring,
    new_data_key,
    open_contact,
    open_monitoring,
    unwrap_data_key,
)
from gateway.db import rowcount, write_transaction
from gateway.errors import NotFound, ValidationFailed
from gateway.extensions import db
from gateway.features import FeatureValidator, validate_monitoring
from gateway.identity import InvalidIIN, subject_ref, validate_iin
from gateway.ids import isoformat, new_id, utcnow
from gateway.models import (
    OPEN_BATCH,
    ApiClient,
    BatchStatus,
    DecisionBatch,
    DecisionBatchRow,
    IdempotencyRecord,
    LogLeaf,
    ModelStatus,
    ScoringModel,
    table,
)
from gateway.runtime import LoadedModel
from gateway.schemas.batches import BatchRow, BatchSubject
from gateway.schemas.decisions import Subject
from gateway.settings import Settings, current_settings

B = table(DecisionBatch)
R = table(DecisionBatchRow)
PENDING, DECIDED, REPLAYED, INVALID = "pending", "decided", "replayed", "invalid"
INSERT_SLICE = 5000  # rows per INSERT at intake


@dataclass(frozen=True)
class Upload:
    """What the caller sent: rows already parsed (a JSON body), or a file's bytes and its format."""

    fmt: str
    rows: list[dict[str, Any]] | None = None
    data: bytes | None = None


def _problems(exc: ValidationError, prefix: str) -> list[dict[str, str]]:
    return [{"field": ".".join([prefix, *(str(p) for p in e["loc"])]).strip("."), "rule": e["type"],
             "message": str(e.get("msg", "invalid")).removeprefix("Value error, ")}
            for e in exc.errors(include_url=False, include_input=False)]


# An address whose local part is a plain dot-atom and whose domain is plain ASCII: email_validator gives it back
# as the local part as is, "@", and the domain as it normalises it for any local part (what a probe address
# with the same domain shows), unless the whole is too long or the local part is a case-insensitive mailbox name.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9]+(?:[._+-][A-Za-z0-9]+)*\Z")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9.-]{1,253}\Z")
_MAX_EMAIL = 254


def _plain_email(address: str, domains: dict[str, tuple[str, str] | None]) -> str | None:
    """`address` normalised exactly as `validate_email(address, check_deliverability=False).normalized` would
    (gateway.schemas.decisions.Contact), for plain addresses; None for any other (validated in full then).

    The domain's check (IDNA, its labels, special-use names: most of email_validator's time) is the same for
    every address at that domain, so it runs once per domain of the batch (`domains`, keyed by domain)."""
    local, at, domain = address.partition("@")
    if not at or not _PLAIN_LOCAL.match(local) or not _PLAIN_DOMAIN.match(domain) \
            or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return None
    if domain not in domains:
        try:
            probe = validate_email("a@" + domain, check_deliverability=False)
        except EmailNotValidError:
            domains[domain] = None
        else:
            domains[domain] = (probe.domain, probe.ascii_domain)
    found = domains[domain]
    if found is None:
        return None
    normalized, ascii_domain = found
    if max(len(address), len(local) + 1 + len(normalized.encode()), len(local) + 1 + len(ascii_domain)) > _MAX_EMAIL:
        return None
    return f"{local}@{normalized}"


def _subject_values(subject: BatchSubject, domains: dict[str, tuple[str, str] | None],
                    today: dt.date) -> dict[str, Any] | None:
    """The subject as `Subject` validates it (the IIN's rules, the contact's), without pydantic, for the usual row:
    an email contact only, whose address is plain. None for any other row: `Subject` then validates it and says
    what is wrong (a row refused here is never accepted; every error comes from the single decision's rules)."""
    contact = subject.contact
    if contact.webhook is not None or contact.email is None:
        return None
    email = _plain_email(contact.email, domains)
    if email is None:
        return None
    try:
        iin = validate_iin(subject.iin, today=today)
    except InvalidIIN:
        return None
    return {"iin": iin, "language": subject.language, "contact": {"email": email}}


def _body(row: BatchRow) -> dict[str, Any]:
    """The body a single call would send for this person: `row.model_dump(exclude_none=True)` without the
    idempotency key, and without "monitoring" when there are no monitor-only values (as a single call sends it),
    built from the validated fields directly (pydantic's serialiser costs more than the rest of the hash)."""
    contact = row.subject.contact
    body: dict[str, Any] = {
        "subject": {"iin": row.subject.iin, "language": row.subject.language,
                    "contact": {k: v for k, v in (("email", contact.email), ("webhook", contact.webhook))
                                if v is not None}},
        "features": dict(row.features),
    }
    if row.monitoring:
        body["monitoring"] = dict(row.monitoring)
    for name, value in (("operator", row.operator), ("operator_id", row.operator_id), ("reference", row.reference)):
        if value is not None:
            body[name] = value
    return body


@dataclass
class _Intake:
    """What every row of one intake shares: checked once for the batch, not once per row."""

    model: LoadedModel
    model_name: str
    settings: Settings
    features: FeatureValidator  # the serving model's feature rules, compiled once
    known: set[str]  # the officials the rows name as operators
    today: dt.date  # the day IINs' birth dates are checked against
    seen: dict[str, int]  # idempotency key -> the first row with it
    domains: dict[str, tuple[str, str] | None]  # the email domains of the batch, each checked once


def _row_values(i: int, raw: Any, intake: _Intake) -> dict[str, Any]:
    """One row of intake: validated and prepared (no raw IIN kept), or its errors."""
    model, settings, seen = intake.model, intake.settings, intake.seen
    key = raw.get("idempotency_key") if isinstance(raw, dict) else None
    key = key[:255] if isinstance(key, str) else ""
    values: dict[str, Any] = {"idx": i, "idempotency_key": key, "status": INVALID}
    errors: list[dict[str, str]] = []
    try:
        row = BatchRow.model_validate(raw)
    except ValidationError as exc:
        return values | {"errors": _problems(exc, "")}
    subject = _subject_values(row.subject, intake.domains, intake.today)
    if subject is None:
        try:
            subject = Subject.model_validate(row.subject.model_dump(exclude_none=True)).model_dump(exclude_none=True)
        except ValidationError as exc:
            errors.extend(_problems(exc, "subject"))
    if row.subject.language not in settings.languages:
        errors.append({"field": "subject.language", "rule": "language",
                       "message": f"must be one of {list(settings.languages)}"})
    try:
        features = intake.features(row.features)
    except ValidationFailed as exc:
        errors.extend(exc.details or [])
        features = None
    try:
        monitoring = validate_monitoring(model.manifest, row.monitoring) if row.monitoring else {}
    except ValidationFailed as exc:
        errors.extend(exc.details or [])
        monitoring = {}
    if row.operator_id is not None and row.operator_id not in intake.known:
        errors.append(officials.unknown_operator(row.operator_id))
    if key in seen:
        errors.append({"field": "idempotency_key", "rule": "unique",
                       "message": f"row {seen[key]} of this batch has the same idempotency key"})
    else:
        seen[key] = i
    if errors or subject is None or features is None:
        return values | {"errors": errors}
    planned = new_id("dec")
    contact = subject["contact"]
    data_key = new_data_key(settings.contact_key, planned)  # the decision's own key, made now for its contact
    # The body a single call would send for this person: the same key with the same body replays, either way.
    return values | {
        "status": PENDING, "planned_id": planned, "request_hash": decisions.request_hash(intake.model_name, _body(row)),
        "subject_ref": subject_ref(subject["iin"], settings.subject_key),
        "contact_ciphertext": encrypt_contact(data_key, contact), "data_key": data_key,  # to the key store
        "monitoring_ciphertext": encrypt_monitoring(data_key, monitoring) if monitoring else None,
        "channels": sorted(contact), "language": subject["language"], "features": features,
        "operator": row.operator, "operator_id": row.operator_id, "reference": row.reference,
    }


ROW_COLUMNS = tuple(c.name for c in R.columns)

_gc_lock = threading.Lock()
_gc_pausers = 0


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a chunk (or an intake) is computed.

    A chunk makes some 10^5 small containers (row dicts, explanations, statement parameters) that live until
    its commit. Every young collection they survive, and the full collections their number then triggers,
    walk the process's whole heap (the loaded model, numba, SQLAlchemy: ~5 x 10^5 objects): 135 us a row,
    16 % of a chunk, in bench/profile_batch.py. Reference counting frees all a chunk makes (it makes no
    cycles), so nothing is lost by pausing; the collector runs as usual once no chunk is being computed.
    Nested and concurrent pauses (several runner threads) are counted: the last one out resumes it.
    """
    global _gc_pausers
    with _gc_lock:
        ours = _gc_pausers > 0 or gc.isenabled()  # disabled by someone else: theirs to resume, not ours
        if ours:
            _gc_pausers += 1
            gc.disable()
    try:
        yield
    finally:
        if ours:
            with _gc_lock:
                _gc_pausers -= 1
                if _gc_pausers == 0:
                    gc.enable()


def submit(principal: Principal, model_name: str, upload: Upload, *, settings: Settings | None = None) -> DecisionBatch:
    """Validate the rows against the serving model and store the batch for the jobs engine; return it."""
    with collector_paused():
        return _submit(principal, model_name, upload, settings or current_settings())


def _submit(principal: Principal, model_name: str, upload: Upload, settings: Settings) -> DecisionBatch:
    model = decisions.serving_model(model_name)
    if upload.rows is not None:
        raws = upload.rows
    else:
        assert upload.data is not None
        raws = batchfiles.read_rows(upload.data, upload.fmt, model.manifest, max_rows=settings.batch_max_rows)
    # The officials the rows name as operators, looked up once for the whole batch.
    known = officials.known_officials({raw["operator_id"] for raw in raws
                                       if isinstance(raw, dict) and isinstance(raw.get("operator_id"), str)})
    intake = _Intake(model=model, model_name=model_name, settings=settings,
                     features=FeatureValidator(model.manifest), known=known, today=dt.datetime.now(dt.UTC).date(),
                     seen={}, domains={})
    empty: dict[str, Any] = dict.fromkeys(ROW_COLUMNS)
    rows = [empty | _row_values(i, raw, intake) for i, raw in enumerate(raws)]
    db.session.commit()  # end the read transaction: nothing is held while the rows are written
    now = utcnow()
    # The planned decisions' keys go to the key store first (its own database): committed before the rows
    # whose contacts they encrypt; a batch that then fails to store leaves keys the purge job sweeps.
    keystore.store([r.pop("data_key") for r in rows if r.get("data_key") is not None], now)
    for r in rows:
        r.pop("data_key", None)
    batch_id = new_id("bat")
    invalid = sum(1 for r in rows if r["status"] == INVALID)
    with write_transaction() as session:
        session.execute(insert(B), {
            "id": batch_id, "model_id": model.id, "model_name": model.name, "client_id": principal.id,
            "status": BatchStatus.QUEUED.value, "source": upload.fmt, "total_rows": len(rows), "next_row": 0,
            "decided_rows": 0, "replayed_rows": 0, "invalid_rows": invalid, "chunk_size": settings.batch_chunk_size,
            "created_at": now, "attempts": 0, "next_attempt_at": now,
        })
        for start in range(0, len(rows), INSERT_SLICE):
            session.execute(insert(R), [r | {"batch_id": batch_id} for r in rows[start:start + INSERT_SLICE]])
        digest = hashlib.sha256("\n".join(r["request_hash"] or "" for r in rows).encode()).hexdigest()
        session.execute(insert(table(LogLeaf)), leaf_values("decision_batch:submitted", batch_id, {
            "batch_id": batch_id, "model": _model_ref(model), "client_id": principal.id, "source": upload.fmt,
            "total_rows": len(rows), "invalid_rows": invalid, "rows_sha256": digest, "created_at": isoformat(now),
        }, now))
    found = db.session.get(DecisionBatch, batch_id)
    assert found is not None
    return found


def _model_ref(model: LoadedModel) -> dict[str, str]:
    return {"name": model.name, "version": model.version, "sha256": model.sha256}


# --- running ------------------------------------------------------------------------------------------


class Chunk(enum.StrEnum):
    """What one call of `run_chunk` did."""

    MORE = "more"  # a chunk committed; more rows wait
    DONE = "done"  # the last chunk committed (or the batch was already finished)
    STOPPED = "stopped"  # the model version stopped serving: the batch is stopped
    LOST = "lost"  # the claim passed to another runner: nothing was written


class _Lost(Exception):
    pass


def _not_serving(model_id: str) -> str | None:
    """Why the batch's model version may no longer decide (suspended, retired, replaced), or None."""
    row = db.session.execute(select(ScoringModel.name, ScoringModel.version, ScoringModel.status)
                             .where(ScoringModel.id == model_id)).one()
    if row.status == ModelStatus.SUSPENDED:
        return f"model {row.name} {row.version} was suspended; the rows not yet decided were not decided"
    if row.status != ModelStatus.ACTIVE:
        return (f"model {row.name} {row.version} is no longer the serving version; the rows not yet decided were "
                "not decided (submit them again: rows already decided are replayed, not decided twice)")
    return None


def _replayed(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    return {"decision_id": data["decision_id"], "outcome": data["outcome"], "score": data["score"],
            "adverse": data["adverse"]}


def run_chunk(batch_id: str, owner: str | None, *, lease_s: float = 120.0, settings: Settings | None = None) -> Chunk:
    """Decide the batch's next chunk and commit it with its progress, fenced by `owner`'s claim."""
    with collector_paused():
        return _run_chunk(batch_id, owner, lease_s, settings or current_settings())


PENDING_COLUMNS = (R.c.idx, R.c.idempotency_key, R.c.request_hash, R.c.planned_id, R.c.subject_ref,
                   R.c.contact_ciphertext, R.c.language, R.c.features, R.c.monitoring_ciphertext, R.c.operator,
                   R.c.operator_id, R.c.reference)


def _run_chunk(batch_id: str, owner: str | None, lease_s: float, settings: Settings) -> Chunk:
    batch = db.session.execute(select(B).where(B.c.id == batch_id)).one()
    if owner is not None and batch.claimed_by != owner:
        db.session.commit()
        return Chunk.LOST
    if batch.status not in OPEN_BATCH:
        db.session.commit()
        return Chunk.DONE
    reason = _not_serving(batch.model_id)
    if reason is not None:
        db.session.commit()
        return _finish(batch, owner, BatchStatus.STOPPED, reason)
    registry.check_risk_assessment(registry.manifest_of(batch.model_id), settings.risk_assessment_max_age_days)
    model = runtime.cache().get(batch.model_id)
    start, end = batch.next_row, min(batch.next_row + batch.chunk_size, batch.total_rows)
    # The pending rows only (those refused at intake have their result already), and only what deciding reads.
    pending = db.session.execute(select(*PENDING_COLUMNS).where(R.c.batch_id == batch_id, R.c.idx >= start,
                                                                 R.c.idx < end, R.c.status == PENDING)
                                 .order_by(R.c.idx)).all()
    existing = {e.key: e for e in db.session.execute(
        select(IdempotencyRecord.key, IdempotencyRecord.request_hash, IdempotencyRecord.response_body)
        .where(IdempotencyRecord.client_id == batch.client_id,
               IdempotencyRecord.key.in_([r.idempotency_key for r in pending]))).all()} if pending else {}
    db.session.commit()  # end the read transaction before scoring

    results: list[dict[str, Any]] = []  # the rows' new values
    to_decide = []
    for r in pending:
        found = existing.get(r.idempotency_key)
        if found is None:
            to_decide.append(r)
        elif found.request_hash == r.request_hash:
            results.append({"b_idx": r.idx, "status": REPLAYED, **_replayed(bytes(found.response_body)), "errors": None})
        else:
            results.append({"b_idx": r.idx, "status": INVALID, "decision_id": None, "outcome": None, "score": None,
                            "adverse": None, "errors": [{
                                "field": "idempotency_key", "rule": "same_body",
                                "message": "this idempotency key was used with a different request; use a new key"}]})
    now = utcnow()
    # Recourse of adverse rows is left to the recourse job: searching options row by row would dominate a chunk.
    scored = decisions.score_and_explain_many(model, [dict(r.features) for r in to_decide], now, recourse_now=False)
    made: list[decisions.NewDecision] = []
    keys: list[dict[str, Any]] = []
    wrapped = keystore.wrapped_many([r.planned_id for r in to_decide])
    for r, s in zip(to_decide, scored, strict=True):
        if isinstance(s, ExplainerError):
            results.append({"b_idx": r.idx, "status": INVALID, "decision_id": None, "outcome": None, "score": None,
                            "adverse": None, "errors": [{"field": "features", "rule": "explanation_failed",
                                                         "message": f"the decision could not be explained: {s}"}]})
            continue
        # Unwrapped once for the row: it opens the contact and the monitor-only values, and keys the commitments.
        data_key = unwrap_data_key(settings.contact_key, r.planned_id, wrapped.get(r.planned_id))
        d = decisions.NewDecision(
            id=r.planned_id, model=model, client_id=batch.client_id, subject_ref=r.subject_ref,
            contact=open_contact(settings.contact_key, data_key, r.planned_id, r.contact_ciphertext),
            # Encrypted at intake under this decision's own data key, for its id: the decision's ciphertext as is.
            contact_ciphertext=bytes(r.contact_ciphertext),
            language=r.language, scored=s, role_of_ai=model.manifest.role_of_ai, operator=r.operator,
            operator_id=r.operator_id, reference=r.reference, created_at=now,
            audit_extra={"batch": {"id": batch_id, "row": r.idx}},
            data_key=data_key,
            # A low-autonomy model never decides alone, in a batch either: held rows wait for an officer.
            held=decisions.held_for_confirmation(model, s.adverse),
            monitoring=(open_monitoring(data_key, r.monitoring_ciphertext)
                        if r.monitoring_ciphertext is not None else None),
        )
        made.append(d)
        keys.append(decisions.idempotency_row(batch.client_id, r.idempotency_key, r.request_hash, d,
                                              decisions.decision_body(d, settings)))
        results.append({"b_idx": r.idx, "status": DECIDED, "decision_id": d.id, "outcome": s.outcome,
                        "score": s.score, "adverse": s.adverse, "errors": None})
    counts = {s: sum(1 for r in results if r["status"] == s) for s in (DECIDED, REPLAYED, INVALID)}
    finished = end >= batch.total_rows
    progress: dict[str, Any] = {
        "next_row": end, "decided_rows": B.c.decided_rows + counts[DECIDED],
        "replayed_rows": B.c.replayed_rows + counts[REPLAYED], "invalid_rows": B.c.invalid_rows + counts[INVALID],
        "status": (BatchStatus.DONE if finished else BatchStatus.RUNNING).value, "attempts": 0, "last_error": None,
    }
    if owner is not None:
        progress["lease_expires_at"] = utcnow() + dt.timedelta(seconds=lease_s)
    if finished:
        progress |= {"finished_at": now, "claimed_by": None, "lease_expires_at": None, "next_attempt_at": None}
    inserts = decisions.decision_rows(made, settings)  # built before the write lock is taken
    try:
        with write_transaction() as session:
            fence = [B.c.id == batch_id, B.c.next_row == start, B.c.status.in_(OPEN_BATCH)]
            if owner is not None:
                fence.append(B.c.claimed_by == owner)
            if rowcount(session.execute(update(B).where(*fence).values(**progress))) != 1:
                raise _Lost()
            decisions.insert_decision_rows(session, inserts)
            if keys:
                session.execute(insert(table(IdempotencyRecord)), keys)
            if results:
                session.execute(
                    update(R).where(R.c.batch_id == batch_id, R.c.idx == bindparam("b_idx"))
                    .values(status=bindparam("status"), decision_id=bindparam("decision_id"),
                            outcome=bindparam("outcome"), score=bindparam("score"), adverse=bindparam("adverse"),
                            errors=bindparam("errors"), decided_at=now, contact_ciphertext=None, monitoring_ciphertext=None,
                            features=null()),
                    results)
            if finished:
                session.execute(insert(table(LogLeaf)), _finished_leaf(batch_id, BatchStatus.DONE, now, None))
    except _Lost:
        return Chunk.LOST
    except IntegrityError:
        # A single call with one of these keys committed between our read and our write: nothing of this
        # chunk was written; the next attempt finds its record and replays it.
        db.session.rollback()
        return Chunk.MORE
    return Chunk.DONE if finished else Chunk.MORE


def _finished_leaf(batch_id: str, status: BatchStatus, now: dt.datetime, reason: str | None) -> dict[str, Any]:
    counts = db.session.execute(select(B.c.total_rows, B.c.next_row, B.c.decided_rows, B.c.replayed_rows,
                                       B.c.invalid_rows).where(B.c.id == batch_id)).one()
    return leaf_values(f"decision_batch:{status.value}", batch_id, {
        "batch_id": batch_id, "status": status.value, "total_rows": counts.total_rows, "processed_rows": counts.next_row,
        "decided_rows": counts.decided_rows, "replayed_rows": counts.replayed_rows,
        "invalid_rows": counts.invalid_rows, "reason": reason, "finished_at": isoformat(now)}, now)


def _finish(batch: Any, owner: str | None, status: BatchStatus, reason: str) -> Chunk:
    now = utcnow()
    with write_transaction() as session:
        fence = [B.c.id == batch.id, B.c.status.in_(OPEN_BATCH)]
        if owner is not None:
            fence.append(B.c.claimed_by == owner)
        if not rowcount(session.execute(update(B).where(*fence).values(
                status=status.value, finished_at=now, last_error=reason, claimed_by=None, lease_expires_at=None,
                next_attempt_at=None))):
            return Chunk.LOST
        session.execute(insert(table(LogLeaf)), _finished_leaf(batch.id, status, now, reason))
    return Chunk.STOPPED if status == BatchStatus.STOPPED else Chunk.DONE


def chunk_failed(batch_id: str, owner: str, error: str, *, retry_at: dt.datetime | None) -> str | None:
    """Record a failed chunk attempt: retried at `retry_at`, or (None) the batch is failed. Fenced by the claim."""
    now = utcnow()
    with write_transaction() as session:
        fence = and_(B.c.id == batch_id, B.c.claimed_by == owner, B.c.status.in_(OPEN_BATCH))
        if retry_at is not None:
            written = rowcount(session.execute(update(B).where(fence).values(
                attempts=B.c.attempts + 1, last_error=error[:1000], next_attempt_at=retry_at, claimed_by=None,
                lease_expires_at=None)))
            return BatchStatus.RUNNING.value if written else None
        written = rowcount(session.execute(update(B).where(fence).values(
            attempts=B.c.attempts + 1, last_error=error[:1000], status=BatchStatus.FAILED.value, finished_at=now,
            next_attempt_at=None, claimed_by=None, lease_expires_at=None)))
        if written:
            session.execute(insert(table(LogLeaf)), _finished_leaf(batch_id, BatchStatus.FAILED, now, error[:1000]))
    return BatchStatus.FAILED.value if written else None


def release(batch_id: str, owner: str) -> None:
    """Give a claimed batch back (shutdown): another runner may take it at once."""
    with write_transaction() as session:
        session.execute(update(B).where(B.c.id == batch_id, B.c.claimed_by == owner)
                        .values(claimed_by=None, lease_expires_at=None))


# --- reading ------------------------------------------------------------------------------------------


def visible_batch(caller: Caller, model_name: str, batch_id: str) -> DecisionBatch:
    """A batch for an agency of the body that submitted it; NotFound for anyone else (as for no batch)."""
    batch = db.session.get(DecisionBatch, batch_id)
    if batch is None or batch.model_name != model_name or not isinstance(caller, Principal) or caller.role != "agency":
        raise NotFound("The resource does not exist.")
    if batch.client_id != caller.id:
        maker = db.session.get(ApiClient, batch.client_id)
        if maker is None or maker.role != "agency" or maker.body != caller.body:
            raise NotFound("The resource does not exist.")
    return batch


def list_batches(caller: Principal, model_name: str, *, limit: int,
                 after: tuple[dt.datetime, str] | None = None) -> list[DecisionBatch]:
    """The batches of the caller's agency (its body) for a model, newest first; `after`: the (created_at, id) of
    the previous page's last batch (keyset paging)."""
    bodies = select(ApiClient.id).where(ApiClient.role == "agency", ApiClient.body == caller.body)
    query = select(DecisionBatch).where(DecisionBatch.model_name == model_name, DecisionBatch.client_id.in_(bodies))
    if after is not None:
        at, batch_id = after
        # `created_at <= at` bounds the index range (model_name, created_at, id): the page starts at the cursor.
        query = query.where(DecisionBatch.created_at <= at, or_(DecisionBatch.created_at < at,
                                                                and_(DecisionBatch.created_at == at,
                                                                     DecisionBatch.id < batch_id)))
    # Newest first, ties by id descending: the index's order read backwards (no sort).
    query = query.order_by(DecisionBatch.created_at.desc(), DecisionBatch.id.desc()).limit(limit)
    return list(db.session.execute(query).scalars())


def batch_model(batch: DecisionBatch) -> ScoringModel:
    found = db.session.get(ScoringModel, batch.model_id)
    assert found is not None
    return found


def batch_rows(batch_id: str, *, after: int, limit: int) -> list[DecisionBatchRow]:
    """A page of the batch's rows by index (keyset: rows after `after`)."""
    return list(db.session.execute(select(DecisionBatchRow).where(DecisionBatchRow.batch_id == batch_id,
                                                                  DecisionBatchRow.idx > after)
                                   .order_by(DecisionBatchRow.idx).limit(limit)).scalars())


def iter_rows(batch_id: str, page: int = 5000) -> Iterator[DecisionBatchRow]:
    """Every row of the batch, in pages (for the results file)."""
    after = -1
    while True:
        rows = batch_rows(batch_id, after=after, limit=page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].idx


def links_of(base_url: str, model_name: str, batch_id: str) -> dict[str, str]:
    base = f"{base_url.rstrip('/')}/v1/models/{model_name}/decision-batches/{batch_id}"
    return {"batch": base, "results": f"{base}/results"}
