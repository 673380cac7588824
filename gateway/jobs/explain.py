"""The ``explain`` task kind: model-agnostic explanations, computed after their decision committed.

The job is the pending ``explanations`` row inserted in the decision's transaction; nothing else is
enqueued. A runner claims pending rows under a lease, computes each with the decision's model version
(loaded once per process, explainer pinned to the version's background and seed) and stores it with one
fenced write: only a row still pending and still claimed by this runner is written, so a runner killed
or stalled past its lease stores nothing and the row's explanation is stored exactly once, by whoever
holds it. The stored explanation gets its audit leaf (``decision:explanation:recorded``) in the same
transaction.

Failures are per job: a model that cannot be loaded or explained backs off its own rows (retried on
GATEWAY_JOBS_EXPLAIN_RETRY_SCHEDULE) while other models' rows go on. After the last attempt, or at
once for a failure that can only repeat (the explainer's own error), the row is ``failed`` with its
reason (a dead letter): the person's explanation endpoint says so (409 ``explanation_failed``), the
decision shows it, /metrics counts it, and the audit log records it (``decision:explanation:failed``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, and_, case, func, insert, select, text, update

from explainers import ExplainerError
from gateway import explanations, keystore, rollups, runtime
from gateway.audit import leaf_values
from gateway.contacts import committer
from gateway.db import write_transaction
from gateway.errors import GatewayError, ModelUnavailable
from gateway.extensions import db
from gateway.features import to_frame
from gateway.jobs import claims
from gateway.jobs.base import STATES, KindSettings, TaskKind
from gateway.models import PENDING_JOB_SQL, Decision, Explanation, ExplanationStatus, LogLeaf
from gateway.rollups import stamp
from gateway.settings import current_settings

log = logging.getLogger("gateway.jobs")

T = cast(Table, Explanation.__table__)
PENDING = ExplanationStatus.PENDING.value
SETTINGS = {
    "batch_size": "JOBS_EXPLAIN_BATCH_SIZE",
    "lease_s": "JOBS_EXPLAIN_LEASE_S",
    "poll_interval_s": "JOBS_EXPLAIN_POLL_INTERVAL_S",
    "retry_schedule": "JOBS_EXPLAIN_RETRY_SCHEDULE",
    "max_attempts": "JOBS_EXPLAIN_MAX_ATTEMPTS",
    "retry_jitter": "JOBS_EXPLAIN_RETRY_JITTER",
    "concurrency": "JOBS_EXPLAIN_CONCURRENCY",
}


@dataclass(frozen=True)
class Job:
    """One claimed pending explanation."""

    decision_id: str
    attempts: int


@dataclass(frozen=True)
class Result:
    """What one attempt produced: the explanation's column values, or why it failed and whether it can recur."""

    job: Job
    at: dt.datetime
    values: dict[str, Any] | None = None
    error: str | None = None
    permanent: bool = False


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _fenced(decision_id: str, owner: str) -> Any:
    return and_(T.c.decision_id == decision_id, T.c.claimed_by == owner, T.c.status == PENDING)


class ExplainKind(TaskKind):
    """Compute pending explanations (model-agnostic SHAP) and store each exactly once."""

    name = "explain"
    worker_role = "explainer"

    @classmethod
    def read_settings(cls, config: Mapping[str, Any]) -> KindSettings:
        return KindSettings.from_config(config, SETTINGS)

    def claim(self, now: dt.datetime) -> list[Job]:
        rows = claims.claim(
            T, self.owner, key=T.c.decision_id, due=[T.c.status == PENDING, T.c.next_attempt_at <= now],
            order_by=[T.c.next_attempt_at, T.c.decision_id], returning=[T.c.decision_id, T.c.attempts,
                                                                        T.c.next_attempt_at],
            now=now, limit=self.settings.batch_size, lease_s=self.settings.lease_s,
        )
        rows.sort(key=lambda r: (r.next_attempt_at, r.decision_id))
        return [Job(r.decision_id, r.attempts) for r in rows]

    def run_once(self, now: dt.datetime | None = None) -> int:
        with self.app.app_context():
            started = now or self.clock()
            jobs = self.claim(started)
            deadline = started + dt.timedelta(seconds=self.settings.lease_s / 2)
            broken: dict[str, str] = {}  # model id → why it can't be loaded (not retried within this batch)
            for i, job in enumerate(jobs):
                # Don't start a job that could outlive the claim: another runner would take the row over.
                if self.stopping.is_set() or (i > 0 and now is None and self.clock() >= deadline):
                    claims.release(T, self.owner, key=T.c.decision_id, ids=[j.decision_id for j in jobs[i:]],
                                   due=[T.c.status == PENDING])
                    break
                self.wait_for_idle()
                # Each result is written at once, in its own short transaction: a runner killed now loses
                # only the job in hand, which another runner takes after the lease.
                self.record(self.attempt(job, broken, now))
            return len(jobs)

    def attempt(self, job: Job, broken: dict[str, str], now: dt.datetime | None = None) -> Result:
        """Compute one claimed explanation; return what happened (nothing is written here)."""
        decision = db.session.get(Decision, job.decision_id)
        if decision is None:  # foreign keys make this impossible; fail loudly rather than loop
            return Result(job, now or self.clock(), error="the decision does not exist", permanent=True)
        model_id, inputs, score, outcome = decision.model_id, dict(decision.inputs), decision.score, decision.outcome
        db.session.commit()  # end the read transaction before the slow part
        if model_id in broken:
            return Result(job, now or self.clock(), error=broken[model_id])
        try:
            model = runtime.cache().get(model_id)
        except GatewayError as exc:  # the stored artifact is missing or corrupt: an operator can restore it
            broken[model_id] = f"the model version could not be loaded: {exc.message}"
            log.error("explanation %s: %s", job.decision_id, broken[model_id])
            db.session.rollback()
            return Result(job, now or self.clock(), error=broken[model_id])
        db.session.commit()  # loading may have read from the database: hold no snapshot while computing
        try:
            tools = model.tools_for(outcome)
            if tools is None:
                raise ExplainerError("the model version was registered without background data to explain against")
            raw = tools.explainer.explain(to_frame(model.manifest, [inputs]))[0]
            values = explanations.computed_values(tools, raw, inputs, score)
        except ExplainerError as exc:  # deterministic: the same inputs fail the same way again
            return Result(job, now or self.clock(), error=f"the explainer failed: {exc}", permanent=True)
        except ModelUnavailable as exc:  # a remote model's server failed (or serves another model): retried later
            log.warning("explanation %s: the model is unavailable (%s): %s", job.decision_id, exc.code, exc.message)
            db.session.rollback()
            return Result(job, now or self.clock(), error=f"the model is unavailable ({exc.code}): {exc.message}")
        except Exception as exc:  # a bug or a resource problem: recorded on the row and retried, never lost
            log.exception("explanation %s: unexpected error", job.decision_id)
            db.session.rollback()
            return Result(job, now or self.clock(), error=f"{type(exc).__name__}: {exc}")
        return Result(job, now or self.clock(), values=values)

    def _values(self, result: Result) -> dict[str, Any]:
        done = {"attempts": T.c.attempts + 1, "claimed_by": None, "lease_expires_at": None}
        if result.values is not None:
            return {**done, **result.values, "computed_at": result.at, "finished_at": stamp(result.at), "next_attempt_at": None, "last_error": None}
        assert result.error is not None
        failed = result.job.attempts + 1
        if result.permanent or failed >= self.settings.max_attempts:
            return {**done, "status": ExplanationStatus.FAILED.value, "next_attempt_at": None, "finished_at": stamp(result.at),
                    "last_error": result.error[:1000]}
        delay = claims.retry_delay(failed, schedule=self.settings.retry_schedule, jitter=self.settings.retry_jitter,
                                   rng=self.rng)
        return {**done, "last_error": result.error[:1000], "next_attempt_at": result.at + dt.timedelta(seconds=delay)}

    def record(self, result: Result) -> str | None:
        """Write one result fenced by the claim; return the row's new status (None: the claim was lost)."""
        job, values = result.job, self._values(result)
        with write_transaction() as session:
            result_ = cast(CursorResult[Any], session.execute(update(T).where(_fenced(job.decision_id, self.owner))
                                                              .values(**values)))
            written = result_.rowcount
            status = str(values.get("status", PENDING))
            if written and result.values is not None:
                settings = current_settings()
                commit = committer(settings.contact_key, settings.subject_key, job.decision_id,
                                   keystore.wrapped(job.decision_id))
                record: dict[str, Any] = {"decision_id": job.decision_id,
                                          "explanation": explanations.audit_digest(result.values, commit),
                          "computed_at": _iso(result.at)}
                session.execute(insert(cast(Table, LogLeaf.__table__)),
                                leaf_values("decision:explanation:recorded", job.decision_id, record, result.at))
            elif written and status == ExplanationStatus.FAILED.value:
                record = {"decision_id": job.decision_id, "reason": values["last_error"], "attempts": job.attempts + 1,
                          "failed_at": _iso(result.at)}
                session.execute(insert(cast(Table, LogLeaf.__table__)),
                                leaf_values("decision:explanation:failed", job.decision_id, record, result.at))
        if not written:
            log.warning("explanation %s: the claim passed to another runner before the result was written "
                        "(the other runner stores it)", job.decision_id)
            return None
        if result.values is not None:
            log.info("explanation %s stored (attempt %d)", job.decision_id, job.attempts + 1)
        elif status == ExplanationStatus.FAILED.value:
            log.error("explanation %s failed for good after %d attempt(s): %s", job.decision_id, job.attempts + 1,
                      result.error)
        elif result.error is not None:
            log.warning("explanation %s attempt %d failed, will retry: %s", job.decision_id, job.attempts + 1,
                        result.error)
        return status

    @classmethod
    def stats(cls, now: dt.datetime) -> dict[str, int]:
        e = Explanation
        held = and_(e.lease_expires_at.is_not(None), e.lease_expires_at > now)
        state = case(
            (held, "claimed"),
            (e.attempts > 0, "retrying"),
            else_="queued",
        )
        counts = dict.fromkeys(STATES, 0)
        # Waiting rows through the (status, next_attempt_at) index; finished ones from the rollups (gateway.rollups):
        # only rows that were ever jobs (exact explanations, stored with their decision, have no attempts).
        query = select(state, func.count()).where(text(f"explanations.{PENDING_JOB_SQL}")).group_by(state)
        for name, count in db.session.execute(query).all():
            counts[name] += int(count)
        for (_, key), count in rollups.counts(rollups.EXPLAIN_JOBS, now).items():
            counts[key] += count
        return counts
