"""The ``recourse`` task kind: recourse options of adverse decisions by models that are not cheap to search.

The job is the pending ``recourse`` row inserted in the decision's transaction (gateway/recourse.py);
nothing else is enqueued. A runner claims pending rows under a lease, searches and verifies each with the
decision's model version (loaded once per process) and stores it with one write fenced by the claim, with
its audit leaf ``decision:recourse:recorded`` (the row's digest) in the same transaction: a runner killed
or stalled past its lease stores nothing, and the row is stored exactly once, by whoever holds it.

Failures back off per job (GATEWAY_JOBS_RECOURSE_RETRY_SCHEDULE); after the last attempt the row is
``failed`` with its reason: the recourse endpoint answers 409 ``recourse_failed``, /metrics counts it
(``gateway_jobs_dead{kind="recourse"}``) and the audit log records it (``decision:recourse:failed``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, and_, case, func, insert, select, text, update

from gateway import keystore, recourse, rollups, runtime
from gateway.audit import leaf_values
from gateway.contacts import committer
from gateway.db import write_transaction
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.jobs import claims
from gateway.jobs.base import STATES, KindSettings, TaskKind
from gateway.models import PENDING_JOB_SQL, Decision, LogLeaf, Recourse, RecourseStatus
from gateway.rollups import stamp
from gateway.settings import current_settings

log = logging.getLogger("gateway.jobs")

T = cast(Table, Recourse.__table__)
PENDING = RecourseStatus.PENDING.value
SETTINGS = {
    "batch_size": "JOBS_RECOURSE_BATCH_SIZE",
    "lease_s": "JOBS_RECOURSE_LEASE_S",
    "poll_interval_s": "JOBS_RECOURSE_POLL_INTERVAL_S",
    "retry_schedule": "JOBS_RECOURSE_RETRY_SCHEDULE",
    "max_attempts": "JOBS_RECOURSE_MAX_ATTEMPTS",
    "retry_jitter": "JOBS_RECOURSE_RETRY_JITTER",
    "concurrency": "JOBS_RECOURSE_CONCURRENCY",
}


@dataclass(frozen=True)
class Job:
    """One claimed pending recourse row."""

    decision_id: str
    attempts: int


@dataclass(frozen=True)
class Result:
    """What one attempt produced: the ready row's values, or why it failed."""

    job: Job
    at: dt.datetime
    values: dict[str, Any] | None = None
    error: str | None = None
    permanent: bool = False  # a failure that can only repeat: failed at once


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class RecourseKind(TaskKind):
    """Compute pending recourse options, verified with the model that decided, and store each exactly once."""

    name = "recourse"
    worker_role = "searcher"

    @classmethod
    def read_settings(cls, config: Mapping[str, Any]) -> KindSettings:
        return KindSettings.from_config(config, SETTINGS)

    def claim(self, now: dt.datetime) -> list[Job]:
        rows = claims.claim(
            T, self.owner, key=T.c.decision_id, due=[T.c.status == PENDING, T.c.next_attempt_at <= now],
            order_by=[T.c.next_attempt_at, T.c.decision_id],
            returning=[T.c.decision_id, T.c.attempts, T.c.next_attempt_at],
            now=now, limit=self.settings.batch_size, lease_s=self.settings.lease_s,
        )
        rows.sort(key=lambda r: (r.next_attempt_at, r.decision_id))
        return [Job(r.decision_id, r.attempts) for r in rows]

    def run_once(self, now: dt.datetime | None = None) -> int:
        with self.app.app_context():
            started = now or self.clock()
            jobs = self.claim(started)
            deadline = started + dt.timedelta(seconds=self.settings.lease_s / 2)
            for i, job in enumerate(jobs):
                # Don't start a job that could outlive the claim: another runner would take the row over.
                if self.stopping.is_set() or (i > 0 and now is None and self.clock() >= deadline):
                    claims.release(T, self.owner, key=T.c.decision_id, ids=[j.decision_id for j in jobs[i:]],
                                   due=[T.c.status == PENDING])
                    break
                self.wait_for_idle()
                self.record(self.attempt(job, now))
            return len(jobs)

    def attempt(self, job: Job, now: dt.datetime | None = None) -> Result:
        """Search one claimed row with the decision's model version; nothing is written here."""
        decision = db.session.get(Decision, job.decision_id)
        if decision is None:  # foreign keys make this impossible
            return Result(job, now or self.clock(), error="the decision does not exist", permanent=True)
        if decision.purged_at is not None:  # its inputs were deleted under the retention rule
            return Result(job, now or self.clock(), error="the decision's data was deleted under the retention rule",
                          permanent=True)
        model_id, inputs = decision.model_id, dict(decision.inputs)
        db.session.commit()  # end the read transaction before the slow part
        try:
            model = runtime.cache().get(model_id)
            db.session.commit()  # loading may have read from the database: hold no snapshot while searching
            values = recourse.compute(model, inputs)
        except GatewayError as exc:  # the stored artifact is missing or corrupt: an operator can restore it
            db.session.rollback()
            return Result(job, now or self.clock(), error=f"the model version could not be loaded: {exc.message}")
        except Exception as exc:  # a bug or a resource problem: recorded on the row and retried, never lost
            log.exception("recourse %s: unexpected error", job.decision_id)
            db.session.rollback()
            return Result(job, now or self.clock(), error=f"{type(exc).__name__}: {exc}")
        return Result(job, now or self.clock(), values=values)

    def _values(self, result: Result, commit: Callable[[Any], str]) -> dict[str, Any]:
        done = {"attempts": T.c.attempts + 1, "claimed_by": None, "lease_expires_at": None}
        if result.values is not None:
            ready = recourse.row_values(result.job.decision_id, result.values, commit)
            return {**done, **ready, "computed_at": result.at, "finished_at": stamp(result.at), "next_attempt_at": None}
        assert result.error is not None
        failed = result.job.attempts + 1
        if result.permanent or failed >= self.settings.max_attempts:
            return {**done, "status": RecourseStatus.FAILED.value, "next_attempt_at": None, "finished_at": stamp(result.at),
                    "last_error": result.error[:1000]}
        delay = claims.retry_delay(failed, schedule=self.settings.retry_schedule, jitter=self.settings.retry_jitter,
                                   rng=self.rng)
        return {**done, "last_error": result.error[:1000], "next_attempt_at": result.at + dt.timedelta(seconds=delay)}

    def record(self, result: Result) -> str | None:
        """Write one result fenced by the claim; return the row's new status (None: the claim was lost)."""
        job = result.job
        fenced = and_(T.c.decision_id == job.decision_id, T.c.claimed_by == self.owner, T.c.status == PENDING)
        leaves = cast(Table, LogLeaf.__table__)
        settings = current_settings()
        # The digest is a commitment keyed by the decision's data key, as the decision's own leaf is.
        wrapped = keystore.wrapped(job.decision_id)
        with write_transaction() as session:
            values = self._values(result, committer(settings.contact_key, settings.subject_key, job.decision_id,
                                                    wrapped))
            written = cast(CursorResult[Any], session.execute(update(T).where(fenced).values(**values))).rowcount
            status = str(values.get("status", PENDING))
            if written and result.values is not None:
                record: dict[str, Any] = {"decision_id": job.decision_id, "recourse": recourse.audit_digest(values),
                          "computed_at": _iso(result.at)}
                session.execute(insert(leaves), leaf_values("decision:recourse:recorded", job.decision_id, record,
                                                            result.at))
            elif written and status == RecourseStatus.FAILED.value:
                record = {"decision_id": job.decision_id, "reason": values["last_error"],
                          "attempts": job.attempts + 1, "failed_at": _iso(result.at)}
                session.execute(insert(leaves), leaf_values("decision:recourse:failed", job.decision_id, record,
                                                            result.at))
        if not written:
            log.warning("recourse %s: the claim passed to another runner before the result was written",
                        job.decision_id)
            return None
        if result.values is not None:
            log.info("recourse %s stored (attempt %d)", job.decision_id, job.attempts + 1)
        elif status == RecourseStatus.FAILED.value:
            log.error("recourse %s failed for good after %d attempt(s): %s", job.decision_id, job.attempts + 1,
                      result.error)
        else:
            log.warning("recourse %s attempt %d failed, will retry: %s", job.decision_id, job.attempts + 1,
                        result.error)
        return status

    @classmethod
    def stats(cls, now: dt.datetime) -> dict[str, int]:
        r = Recourse
        held = and_(r.lease_expires_at.is_not(None), r.lease_expires_at > now)
        state = case(
            (held, "claimed"),
            (r.attempts > 0, "retrying"),
            else_="queued",
        )
        counts = dict.fromkeys(STATES, 0)
        # Waiting rows through the (status, next_attempt_at) index; finished ones from the rollups (gateway.rollups):
        # only rows that were ever jobs (recourse computed with its decision has no attempts).
        query = select(state, func.count()).where(text(f"recourse.{PENDING_JOB_SQL}")).group_by(state)
        for name, count in db.session.execute(query).all():
            counts[name] += int(count)
        for (_, key), count in rollups.counts(rollups.RECOURSE_JOBS, now).items():
            counts[key] += count
        return counts
