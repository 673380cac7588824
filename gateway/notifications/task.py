"""The ``deliver`` task kind: notices from the outbox, through the jobs engine (gateway/jobs).

The dispatcher (claim, send, fenced record, retry, dead letter) is the one in ``dispatcher.py``; this
kind runs it under the engine's runner, with the NOTIFY_* settings it always had (GATEWAY_NOTIFY_BATCH_SIZE,
GATEWAY_NOTIFY_LEASE_S, ...) plus GATEWAY_JOBS_DELIVER_CONCURRENCY.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text

from gateway import rollups
from gateway.extensions import db
from gateway.jobs.base import STATES, KindSettings, TaskKind
from gateway.models import WAITING_NOTICE_SQL, Notification, NotificationStatus
from gateway.notifications.dispatcher import Dispatcher, log
from gateway.notifications.outbox import Retries

SETTINGS = {
    "batch_size": "NOTIFY_BATCH_SIZE",
    "lease_s": "NOTIFY_LEASE_S",
    "poll_interval_s": "NOTIFY_POLL_INTERVAL_S",
    "retry_schedule": "NOTIFY_RETRY_SCHEDULE",
    "max_attempts": "NOTIFY_MAX_ATTEMPTS",
    "retry_jitter": "NOTIFY_RETRY_JITTER",
    "concurrency": "JOBS_DELIVER_CONCURRENCY",
}


class DeliverKind(TaskKind):
    """Send due notices (email, webhook, log) and record each attempt."""

    name = "deliver"
    worker_role = "dispatcher"

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        s = self.settings
        self.dispatcher = Dispatcher(app, name=self.owner, clock=self.clock, rng=self.rng, batch_size=s.batch_size,
                                     lease_s=s.lease_s, poll_interval_s=s.poll_interval_s, retries=Retries.of(s),
                                     yield_to=self.yield_to)
        self.dispatcher.stopping = self.stopping

    @classmethod
    def read_settings(cls, config: Mapping[str, Any]) -> KindSettings:
        return KindSettings.from_config(config, SETTINGS)

    def run_once(self, now: dt.datetime | None = None) -> int:
        return self.dispatcher.run_once(now)

    def on_start(self) -> None:
        if not self.app.config.get("SMTP_HOST") and self.dispatcher.routes.get("email", "email") == "email":
            log.warning("GATEWAY_SMTP_HOST is not set: email notices wait (retrying) until it is; "
                        "GATEWAY_NOTIFY_ROUTES='{\"email\": \"log\"}' writes them to the log instead")

    def close(self) -> None:
        self.dispatcher.close()

    @classmethod
    def stats(cls, now: dt.datetime) -> dict[str, int]:
        """Rows to send and dead rows through the (status, next_attempt_at) index; delivered ones from the rollups."""
        n = Notification
        held = and_(n.lease_expires_at.is_not(None), n.lease_expires_at > now)
        state = case(
            (n.status == NotificationStatus.DEAD.value, "dead"),
            (held, "claimed"),
            (or_(n.status == NotificationStatus.RETRYING.value, n.attempts > 0), "retrying"),
            else_="queued",
        )
        counts = dict.fromkeys(STATES, 0)
        waiting = select(state, func.count()).where(text(f"notifications.{WAITING_NOTICE_SQL}")).group_by(state)
        for name, count in db.session.execute(waiting).all():
            counts[name] += int(count)
        for (_, key), count in rollups.counts(rollups.NOTIFICATIONS, now).items():
            if key == NotificationStatus.DELIVERED:
                counts["done"] += count
        return counts
