"""The ``batch`` task kind: decision batches worked off chunk by chunk (gateway/batches/__init__.py).

The job is the batch row itself, inserted by the submission (nothing else is enqueued). A runner claims
an open batch under a lease and decides its chunks one after another; every chunk commits with the
batch's new position and renews the lease, fenced by the claim, so a runner killed at any point loses
at most the chunk in hand and the next claimer (after the lease) resumes from the last committed chunk.
A chunk that fails (the model cannot score, the database went away) is retried on
GATEWAY_JOBS_BATCH_RETRY_SCHEDULE; after GATEWAY_JOBS_BATCH_MAX_ATTEMPTS the batch is failed, with the
reason, and the audit log says so.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, case, func, select

from gateway import batches
from gateway.extensions import db
from gateway.jobs import claims
from gateway.jobs.base import STATES, KindSettings, TaskKind
from gateway.models import OPEN_BATCH, BatchStatus, DecisionBatch, table

log = logging.getLogger("gateway.jobs")
T = table(DecisionBatch)
SETTINGS = {
    "batch_size": "JOBS_BATCH_BATCH_SIZE",
    "lease_s": "JOBS_BATCH_LEASE_S",
    "poll_interval_s": "JOBS_BATCH_POLL_INTERVAL_S",
    "retry_schedule": "JOBS_BATCH_RETRY_SCHEDULE",
    "max_attempts": "JOBS_BATCH_MAX_ATTEMPTS",
    "retry_jitter": "JOBS_BATCH_RETRY_JITTER",
    "concurrency": "JOBS_BATCH_CONCURRENCY",
}


def due(now: dt.datetime) -> list[Any]:
    return [T.c.status.in_(OPEN_BATCH), T.c.next_attempt_at <= now]


class BatchKind(TaskKind):
    """Decide open decision batches, one committed chunk at a time."""

    name = "batch"
    worker_role = "decider"

    @classmethod
    def read_settings(cls, config: Mapping[str, Any]) -> KindSettings:
        return KindSettings.from_config(config, SETTINGS)

    def claim(self, now: dt.datetime, batch_id: str | None = None) -> list[str]:
        """Claim due batches (or the one named): their ids, oldest first."""
        where = due(now) + ([T.c.id == batch_id] if batch_id is not None else [])
        rows = claims.claim(T, self.owner, key=T.c.id, due=where, order_by=[T.c.created_at, T.c.id],
                            returning=[T.c.id, T.c.created_at], now=now, limit=self.settings.batch_size,
                            lease_s=self.settings.lease_s)
        rows.sort(key=lambda r: (r.created_at, r.id))
        return [r.id for r in rows]

    def run_once(self, now: dt.datetime | None = None) -> int:
        with self.app.app_context():
            ids = self.claim(now or self.clock())
            for i, batch_id in enumerate(ids):
                if self.stopping.is_set():
                    for rest in ids[i:]:
                        batches.release(rest, self.owner)
                    break
                self.work(batch_id)
            return len(ids)

    def work(self, batch_id: str, on_chunk: Any = None) -> batches.Chunk | None:
        """Decide the claimed batch chunk by chunk until it is finished, the claim is lost or we stop."""
        while True:
            if self.stopping.is_set():
                batches.release(batch_id, self.owner)
                log.info("batch %s: given back at shutdown (resumes from its last committed chunk)", batch_id)
                return None
            self.wait_for_idle()
            try:
                outcome = batches.run_chunk(batch_id, self.owner, lease_s=self.settings.lease_s)
            except Exception as exc:  # the model or the database failed: recorded on the batch, retried
                from_db = self._failed(batch_id, exc)
                log.warning("batch %s: a chunk failed (%s): %s", batch_id, from_db, exc)
                return None
            if on_chunk is not None:
                on_chunk(outcome)
            if outcome == batches.Chunk.LOST:
                log.warning("batch %s: the claim passed to another runner; it goes on from there", batch_id)
                return outcome
            if outcome in (batches.Chunk.DONE, batches.Chunk.STOPPED):
                log.info("batch %s: %s", batch_id, outcome.value)
                return outcome

    def _failed(self, batch_id: str, exc: Exception) -> str | None:
        db.session.rollback()
        attempts = db.session.execute(select(T.c.attempts).where(T.c.id == batch_id)).scalar_one()
        failed = int(attempts) + 1
        error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        if failed >= self.settings.max_attempts:
            return batches.chunk_failed(batch_id, self.owner, error, retry_at=None)
        delay = claims.retry_delay(failed, schedule=self.settings.retry_schedule, jitter=self.settings.retry_jitter,
                                   rng=self.rng)
        return batches.chunk_failed(batch_id, self.owner, error, retry_at=self.clock() + dt.timedelta(seconds=delay))

    @classmethod
    def stats(cls, now: dt.datetime) -> dict[str, int]:
        b = DecisionBatch
        held = and_(b.lease_expires_at.is_not(None), b.lease_expires_at > now)
        state = case(
            (b.status == BatchStatus.FAILED.value, "dead"),
            (b.status.not_in(OPEN_BATCH), "done"),
            (held, "claimed"),
            (b.attempts > 0, "retrying"),
            else_="queued",
        )
        counts = dict.fromkeys(STATES, 0)
        for name, count in db.session.execute(select(state, func.count()).group_by(state)).all():
            counts[name] += int(count)
        return counts
