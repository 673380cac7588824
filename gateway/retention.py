"""Forgetting on time: the retention purge of the person's data, and legal holds that stop it.

A decision's personal data — its inputs, contact details (crypto-shredded: the wrapped data key is
destroyed, see gateway.contacts), the explanation's values, the points of view, corrected data and the
reviewers' reasons of its reviews — is deleted once the decision is older than its model's retention
period (the manifest's `retention_days`, else GATEWAY_RETENTION_DAYS; never below 180 days), unless a
review of it is open, its explanation is still being computed, or a legal hold is set on it.

What stays: the decision's id, model and version, score, outcome and effective outcome, dates, the
subject reference (a keyed HMAC, never the IIN) and every audit leaf. The leaves hold only commitments to
the personal data (keyed by the destroyed data key), so every proof and receipt still verifies, and the
purge writes a leaf of its own (`decision:purged`).

`PERSONAL_DATA` is the one list of what is personal, table by table: a table added later with personal
columns tied to a decision (e.g. recourse options) adds one entry here and is purged with the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, exists, not_, null, or_, select, update

from gateway import keystore
from gateway.access import Action, visible_decision
from gateway.audit import canonical_json, record_leaf, redact_record
from gateway.auth import Caller, Principal
from gateway.db import rowcount, write_transaction
from gateway.errors import Conflict, ValidationFailed
from gateway.extensions import db
from gateway.ids import isoformat, utcnow
from gateway.models import (
    OPEN_REVIEW,
    Base,
    Decision,
    DecisionBatchRow,
    Explanation,
    ExplanationStatus,
    IdempotencyRecord,
    LogLeaf,
    Notification,
    Recourse,
    ReviewRequest,
    ScoringModel,
)
from gateway.settings import Settings, current_settings

HOLD_REASON_MAX = 2000


@dataclass(frozen=True)
class PersonalData:
    """Columns of `model` that hold a person's data, tied to a decision by `decision_column`, and the value
    each takes when purged (SQL NULL — `null()`, since None is JSON null in a JSON column — or an empty value
    where the column is NOT NULL)."""

    model: type[Base]
    decision_column: str
    cleared: dict[str, Any]

    def names(self) -> list[str]:
        return [f"{self.model.__tablename__}.{c}" for c in sorted(self.cleared)]


# The hook: every table/column with the person's data.
PERSONAL_DATA: list[PersonalData] = [
    # The decision's data key is in the key store (gateway.keystore): purge() destroys it there after commit.
    PersonalData(Decision, "id", {"inputs": {}, "contact_ciphertext": None}),
    PersonalData(Explanation, "decision_id", {"attributions": null(), "selection": null()}),
    # The options hold the person's values of the changed features ("from"); the digest is a keyed commitment.
    PersonalData(Recourse, "decision_id", {"options": null()}),
    PersonalData(ReviewRequest, "decision_id", {"point_of_view": "", "corrected_data": null(), "reasons": null()}),
    # A batch row's copy of the person's data is erased when its decision is made; kept cleared here too.
    PersonalData(DecisionBatchRow, "decision_id", {"contact_ciphertext": None, "monitoring_ciphertext": None,
                                                    "features": null()}),
]


class DataPurged(Conflict):
    """The person's data of this decision was deleted under the retention rule."""

    def __init__(self, decision: Decision) -> None:
        purged_on = decision.purged_at.date().isoformat() if decision.purged_at else "?"
        super().__init__(
            f"the details of this decision (the data it was made on, its explanation, points of view) were "
            f"deleted on {purged_on} under the retention rule; its outcome, dates and proofs are kept",
            code="data_purged", details={"purged_at": isoformat(decision.purged_at) if decision.purged_at else None},
        )


def check_not_purged(decision: Decision) -> None:
    """Raise DataPurged when the decision's personal data is gone (for readers of inputs or explanations)."""
    if decision.purged_at is not None:
        raise DataPurged(decision)


def retention_days(manifest: dict[str, Any], settings: Settings) -> int:
    """The retention period of a model version: its manifest's, else the deployment's default."""
    days = manifest.get("retention_days")
    return int(days) if days is not None else settings.retention_days


@dataclass(frozen=True)
class Candidate:
    """A decision past its retention period, and why it is kept (None: it is purged)."""

    decision_id: str
    model: str
    created_at: dt.datetime
    expired_at: dt.datetime
    retention_days: int
    kept_because: str | None


def _open_review(decision_id: Any) -> Any:
    return exists().where(ReviewRequest.decision_id == decision_id, ReviewRequest.status.in_(OPEN_REVIEW))


def _pending_explanation(decision_id: Any) -> Any:
    return exists().where(Explanation.decision_id == decision_id,
                          Explanation.status == ExplanationStatus.PENDING.value)


def expired(now: dt.datetime, settings: Settings, *, limit: int | None = None,
            include_kept: bool = False) -> list[Candidate]:
    """Decisions not yet purged whose retention period ended before `now`, oldest first.

    With `include_kept`, also those kept back (open review, legal hold, explanation still pending), each
    with its reason; otherwise only what the purge would remove, at most `limit`.
    """
    found: list[Candidate] = []
    models = db.session.execute(select(ScoringModel.id, ScoringModel.name, ScoringModel.version,
                                       ScoringModel.manifest)).all()
    for model in models:
        days = retention_days(model.manifest, settings)
        cutoff = now - dt.timedelta(days=days)
        query = (
            select(Decision.id, Decision.created_at, Decision.hold_reason,
                   _open_review(Decision.id).label("review_open"),
                   _pending_explanation(Decision.id).label("explaining"))
            .where(Decision.model_id == model.id, Decision.purged_at.is_(None), Decision.created_at < cutoff)
            .order_by(Decision.created_at, Decision.id)
        )
        if not include_kept:
            query = query.where(Decision.hold_reason.is_(None), not_(_open_review(Decision.id)),
                                not_(_pending_explanation(Decision.id)))
        if limit is not None:
            query = query.limit(limit)
        for row in db.session.execute(query):
            why = ("legal hold" if row.hold_reason is not None else "review open" if row.review_open
                   else "explanation pending" if row.explaining else None)
            found.append(Candidate(row.id, f"{model.name} {model.version}", row.created_at,
                                   row.created_at + dt.timedelta(days=days), days, why))
    found.sort(key=lambda c: (c.created_at, c.decision_id))
    return found[:limit] if limit is not None else found


def purge_one(session: Any, candidate: Candidate, now: dt.datetime) -> bool:
    """Delete one decision's personal data in the caller's transaction; False when it is no longer due.

    The decision row is claimed first with a conditional update (not purged, no hold, no open review, no
    pending explanation), so two purgers, or a hold set meanwhile, never race into a half purge.
    """
    d = candidate.decision_id
    claimed = session.execute(
        update(Decision).where(Decision.id == d, Decision.purged_at.is_(None), Decision.hold_reason.is_(None),
                               not_(_open_review(Decision.id)), not_(_pending_explanation(Decision.id)))
        .values(purged_at=now)
    )
    if rowcount(claimed) != 1:
        return False
    removed: list[str] = []
    for personal in PERSONAL_DATA:
        column = getattr(personal.model, personal.decision_column)
        session.execute(update(personal.model).where(column == d).values(**personal.cleared))
        removed += personal.names()
    # The first response to the agency's request is kept for replays; its request hash covered the IIN.
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.resource_id == d))
    redacted = redact_legacy_leaves(session, d, now)
    record_leaf(session, "decision:purged", d, {
        "decision_id": d, "purged_at": isoformat(now), "retention_days": candidate.retention_days,
        "expired_at": isoformat(candidate.expired_at), "removed": removed,
        # Leaves written before commitments existed held the person's data in clear: their records are redacted
        # and named here by hash, so a verifier accepts exactly these by their stored hash (gateway.verify).
        **({"redacted_leaves": redacted} if redacted else {}),
    }, now)
    return True


def redact_legacy_leaves(session: Any, decision_id: str, now: dt.datetime) -> list[str]:
    """Redact the person's data held in clear by the decision's leaves written before commitments existed.

    The leaf hash stays (the tree, every proof and receipt with it); the record keeps everything but the
    personal fields and says which were removed. Returns the redacted leaves' hashes, oldest first.
    """
    reviews = select(ReviewRequest.id).where(ReviewRequest.decision_id == decision_id)
    rows = session.execute(
        select(LogLeaf.id, LogLeaf.leaf_hash, LogLeaf.record)
        .where(LogLeaf.redacted_at.is_(None), or_(LogLeaf.object_id == decision_id, LogLeaf.object_id.in_(reviews)))
        .order_by(LogLeaf.id)
    ).all()
    redacted: list[str] = []
    for row in rows:
        cleared, fields = redact_record(json.loads(row.record))
        if not fields:
            continue
        session.execute(update(LogLeaf).where(LogLeaf.id == row.id)
                        .values(record=canonical_json(cleared), redacted_at=now))
        redacted.append(row.leaf_hash)
    return redacted


@dataclass(frozen=True)
class PurgeResult:
    purged: list[str]
    skipped: int  # due when listed, no longer due when purged (a hold or a review came in between)


def purge(now: dt.datetime | None = None, *, settings: Settings | None = None, limit: int = 200) -> PurgeResult:
    """Purge up to `limit` decisions past their retention period, in one transaction."""
    now = now or utcnow()
    settings = settings or current_settings()
    due = expired(now, settings, limit=limit)
    db.session.commit()  # end the read before taking the write lock
    purged: list[str] = []
    if not due:
        return PurgeResult([], 0)
    with write_transaction() as session:
        for candidate in due:
            if purge_one(session, candidate, now):
                purged.append(candidate.decision_id)
    # After the commit (a hold set meanwhile wins the claim): destroy the data keys in the key store — what makes
    # the contact details unreadable in every backup of the main database — and the notices' files. A crash
    # in between leaves them to sweep() (the purge job runs it), which removes both of purged decisions.
    keystore.destroy(purged)
    remove_notice_files(purged, settings)
    if purged and db.engine.dialect.name == "sqlite":
        # The old pages live on in the write-ahead log until a checkpoint copies them back: copy and truncate
        # now, so the file holds no trace of the purged data (PostgreSQL: autovacuum reclaims dead tuples).
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return PurgeResult(purged, len(due) - len(purged))


# --- legal holds ---------------------------------------------------------------------------------------

def _reason(reason: str) -> str:
    text = reason
    if not text or len(text) > HOLD_REASON_MAX:
        raise ValidationFailed(f"give the reason for the hold (1 to {HOLD_REASON_MAX} characters)",
                               details=[{"field": "reason", "rule": "length", "message": f"1..{HOLD_REASON_MAX}"}])
    return text


def hold_view(decision: Decision, settings: Settings) -> dict[str, Any]:
    """A decision's legal hold as the auditor sees it, with its retention state."""
    hold = None
    if decision.hold_reason is not None:
        hold = {"reason": decision.hold_reason, "set_by": decision.hold_set_by or "",
                "set_at": isoformat(decision.hold_set_at) if decision.hold_set_at else ""}
    return {"decision_id": decision.id, "legal_hold": hold, "retention": state(decision, settings)}


def set_hold(caller: Caller, decision_id: str, reason: str, *, now: dt.datetime | None = None) -> Decision:
    """Set a legal hold: the decision's data is kept past its retention period until the hold is cleared.

    Auditors only (gateway.access: LEGAL_HOLD). A decision already purged can't be held (409 data_purged).
    """
    now = now or utcnow()
    text = _reason(reason)
    decision = visible_decision(caller, decision_id, Action.LEGAL_HOLD)
    assert isinstance(caller, Principal)
    check_not_purged(decision)
    with write_transaction() as session:
        row = session.execute(select(Decision).where(Decision.id == decision_id).with_for_update()).scalar_one()
        check_not_purged(row)
        row.hold_reason, row.hold_set_by, row.hold_set_at = text, caller.id, now
        record_leaf(session, "decision:hold:set", decision_id,
                    {"decision_id": decision_id, "reason": text, "set_by": caller.id, "at": isoformat(now)}, now)
    return row


def clear_hold(caller: Caller, decision_id: str, reason: str, *, now: dt.datetime | None = None) -> Decision:
    """Clear a legal hold (the purge takes the decision at its next run if its period is over)."""
    now = now or utcnow()
    text = _reason(reason)
    visible_decision(caller, decision_id, Action.LEGAL_HOLD)
    assert isinstance(caller, Principal)
    with write_transaction() as session:
        row = session.execute(select(Decision).where(Decision.id == decision_id).with_for_update()).scalar_one()
        if row.hold_reason is None:
            raise Conflict("this decision has no legal hold", code="no_hold")
        record_leaf(session, "decision:hold:cleared", decision_id,
                    {"decision_id": decision_id, "reason": text, "held_since": isoformat(row.hold_set_at)
                     if row.hold_set_at else None, "cleared_by": caller.id, "at": isoformat(now)}, now)
        row.hold_reason, row.hold_set_by, row.hold_set_at = None, None, None
    return row


def state(decision: Decision, settings: Settings) -> dict[str, Any]:
    """What a reader is told about the decision's retention: until when its data is kept, purge, hold."""
    manifest = db.session.execute(select(ScoringModel.manifest).where(ScoringModel.id == decision.model_id)).scalar_one()
    days = retention_days(manifest, settings)
    return {
        "retention_days": days,
        "retained_until": isoformat(decision.created_at + dt.timedelta(days=days)),
        "purged_at": isoformat(decision.purged_at) if decision.purged_at else None,
        # Whether a hold is set and since when; its reason (an investigation, a lawsuit) is for auditors only.
        "legal_hold_since": (isoformat(decision.hold_set_at) if decision.hold_set_at else None)
        if decision.hold_reason is not None else None,
    }


# --- what lives outside the main database: the key store, the notices' files -----------------------------

log = logging.getLogger("gateway.retention")

KEY_GRACE = dt.timedelta(days=1)  # a key is committed before its decision: younger keys may still get theirs


def _notice_folder(settings: Settings) -> Path | None:
    folder = settings.raw.get("NOTIFY_FILE_DIR")
    return Path(folder) if folder else None


def remove_notice_files(decision_ids: list[str], settings: Settings) -> int:
    """Delete the `.eml` files the `file` channel wrote for these decisions' notices; return how many."""
    folder = _notice_folder(settings)
    if folder is None or not decision_ids or not folder.is_dir():
        return 0
    ids: list[str] = []
    for start in range(0, len(decision_ids), keystore.CHUNK):
        ids += db.session.execute(select(Notification.id).where(
            Notification.decision_id.in_(decision_ids[start:start + keystore.CHUNK]))).scalars()
    db.session.commit()
    removed = 0
    for notification_id in ids:
        for suffix in (".eml", ".part"):
            try:
                (folder / f"{notification_id}{suffix}").unlink()
                removed += 1 if suffix == ".eml" else 0
            except FileNotFoundError:
                pass
    return removed


def _live(decision_ids: list[str]) -> set[str]:
    """Of these ids, those whose data key must stay: decisions not purged, and batch rows not yet decided."""
    live = set(db.session.execute(select(Decision.id).where(Decision.id.in_(decision_ids),
                                                            Decision.purged_at.is_(None))).scalars())
    live |= {planned for planned in db.session.execute(select(DecisionBatchRow.planned_id).where(
        DecisionBatchRow.planned_id.in_(decision_ids), DecisionBatchRow.status == "pending")).scalars() if planned}
    db.session.commit()
    return live


@dataclass(frozen=True)
class SweepResult:
    keys: int  # keys destroyed: of purged decisions (a purge cut short) or of none (a decision never committed)
    files: int  # notice files of purged decisions


def sweep(settings: Settings | None = None, *, now: dt.datetime | None = None) -> SweepResult:
    """Remove what a purge or a failed decision left outside the main database.

    Keys older than KEY_GRACE (wall-clock time: a key is committed just before its decision) whose decision
    is purged or does not exist, and the notice files of purged decisions.
    """
    settings = settings or current_settings()
    cutoff = (now or utcnow()) - KEY_GRACE
    destroyed, after = 0, ""
    while ids := keystore.older_than(cutoff, after=after):
        after = ids[-1]
        live = _live(ids)
        destroyed += keystore.destroy([d for d in ids if d not in live])
    files = 0
    folder = _notice_folder(settings)
    if folder is not None and folder.is_dir():
        names = sorted(p.name.split(".", 1)[0] for p in folder.iterdir() if p.suffix in (".eml", ".part"))
        for start in range(0, len(names), keystore.CHUNK):
            purged = list(db.session.execute(
                select(Decision.id).join(Notification, Notification.decision_id == Decision.id)
                .where(Notification.id.in_(names[start:start + keystore.CHUNK]), Decision.purged_at.is_not(None))
            ).scalars())
            db.session.commit()
            files += remove_notice_files(purged, settings)
    if destroyed or files:
        log.info("sweep: %d data key(s) and %d notice file(s) of purged or unrecorded decisions removed",
                 destroyed, files)
    return SweepResult(destroyed, files)
