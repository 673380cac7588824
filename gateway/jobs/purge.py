"""The ``purge`` task kind: delete the person's data of decisions past their retention period.

Periodic: a runner looks for expired decisions at most every GATEWAY_PURGE_INTERVAL_S seconds (and at once
again while it finds full batches). Run like every kind by `gateway worker` (or `--kinds purge`) and the
jobs thread of `gateway serve`. Any number of runners may run: each decision is claimed by a conditional
update (gateway.retention.purge_one), so it is purged once, with one audit leaf.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from gateway import retention, rollups
from gateway.jobs.base import KindSettings, TaskKind
from gateway.settings import current_settings

log = logging.getLogger("gateway.jobs")

# What a purge cut short or a failed decision left in the key store and the notices' folder is swept this often.
SWEEP_INTERVAL = dt.timedelta(days=1)

SETTINGS = {
    "batch_size": "JOBS_PURGE_BATCH_SIZE",
    "lease_s": "JOBS_PURGE_LEASE_S",
    "poll_interval_s": "JOBS_PURGE_POLL_INTERVAL_S",
    "retry_schedule": "JOBS_PURGE_RETRY_SCHEDULE",
    "max_attempts": "JOBS_PURGE_MAX_ATTEMPTS",
    "retry_jitter": "JOBS_PURGE_RETRY_JITTER",
    "concurrency": "JOBS_PURGE_CONCURRENCY",
}


class PurgeKind(TaskKind):
    """Purge a batch of expired decisions; look again after PURGE_INTERVAL_S when none are left."""

    name = "purge"
    worker_role = "purger"

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        self.interval = dt.timedelta(seconds=float(app.config["PURGE_INTERVAL_S"]))
        self.next_look: dt.datetime | None = None  # None: look at the first poll
        self.next_sweep: dt.datetime | None = None  # the key store and notice files: once a day (wall clock)

    @classmethod
    def read_settings(cls, config: Mapping[str, Any]) -> KindSettings:
        return KindSettings.from_config(config, SETTINGS)

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Purge one batch; `now` (tests, `gateway purge --now`) moves the clock and skips the interval."""
        at = now or self.clock()
        if now is None and self.next_look is not None and at < self.next_look:
            return 0
        self.wait_for_idle()  # in a serving process: between requests, not during them
        with self.app.app_context():
            result = retention.purge(at, settings=current_settings(), limit=self.settings.batch_size)
            wall = dt.datetime.now(dt.UTC)
            if self.next_sweep is None or wall >= self.next_sweep:
                retention.sweep(current_settings(), now=wall)
                self.next_sweep = wall + SWEEP_INTERVAL
        if result.purged:
            log.info("purge: personal data of %d decision(s) deleted under the retention rule", len(result.purged))
        seen = len(result.purged) + result.skipped
        if seen < self.settings.batch_size:
            self.next_look = at + self.interval  # nothing more due now: look again after the interval
        return seen

    @classmethod
    def stats(cls, now: dt.datetime) -> dict[str, int]:
        """The backlog (decisions past their retention not yet purged: what the purge works off, daily); the purged
        ones from the rollups, never a count of the whole history."""
        due = len(retention.expired(now, current_settings()))
        done = sum(rollups.counts(rollups.PURGED, now).values())
        return {"queued": due, "claimed": 0, "retrying": 0, "done": done, "dead": 0}
