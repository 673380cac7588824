"""The ``sequence`` task kind: leaves into the Merkle tree, and a signed checkpoint at least every N seconds.

Run like every kind by `gateway worker` (or `--kinds sequence`) and the thread of `gateway serve`. Any
number of runners may run: they take turns on the sequencer row (gateway.auditlog.store.append), so the
log has one holder at a time and indices follow the order leaves became visible (commit order), never
the autoincrement ids (which do not follow commit order on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from gateway.auditlog import store
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.jobs.base import KindSettings, TaskKind

SETTINGS = {
    "batch_size": "JOBS_SEQUENCE_BATCH_SIZE",
    "lease_s": "JOBS_SEQUENCE_LEASE_S",
    "poll_interval_s": "JOBS_SEQUENCE_POLL_INTERVAL_S",
    "retry_schedule": "JOBS_SEQUENCE_RETRY_SCHEDULE",
    "max_attempts": "JOBS_SEQUENCE_MAX_ATTEMPTS",
    "retry_jitter": "JOBS_SEQUENCE_RETRY_JITTER",
    "concurrency": "JOBS_SEQUENCE_CONCURRENCY",
}


class SequenceKind(TaskKind):
    """Give visible leaves the next indices of the tree; sign checkpoints."""

    name = "sequence"
    worker_role = "sequencer"

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        self.signer = store.signer(app.config)
        self.checkpoint_every_s = float(app.config["LOG_CHECKPOINT_INTERVAL_S"])

    @classmethod
    def read_settings(cls, config: Mapping[str, Any]) -> KindSettings:
        store.signer(config)  # a bad key stops the start, not the first batch
        return KindSettings.from_config(config, SETTINGS)

    def run_once(self, now: dt.datetime | None = None) -> int:
        with self.app.app_context():
            at = now or self.clock()
            if not store.work_due(at, self.checkpoint_every_s):
                return 0  # a read, not a write lock: idle sequencers never hold up the decisions' commits
            db.session.commit()  # end that read before waiting
            self.wait_for_idle()  # in a serving process: append between requests, not during them
            with write_transaction() as session:
                return store.append(session, self.owner, at, limit=self.settings.batch_size, signer_=self.signer,
                                    checkpoint_every_s=self.checkpoint_every_s)

    @classmethod
    def stats(cls, now: dt.datetime) -> dict[str, int]:
        return {"queued": store.unsequenced(), "claimed": 0, "retrying": 0, "done": store.tree_size(), "dead": 0}
