"""GET /metrics: one Prometheus registry, one owner, collectors that read the database.

Counting in the database rather than in process memory gives the same figures whichever gunicorn worker
answers the scrape, and includes what separate ``gateway worker`` processes did (they serve no HTTP).

Those counts are grouped aggregates over every notice and review (linear in the number of decisions), so
a scrape never runs them itself: the figures are computed at most once per METRICS_MAX_AGE_S per process
and served from that copy; while one request refreshes a stale copy, the others get the previous one.
/metrics needs an API key of the role ``metrics`` (``gateway keys create --role metrics``) or ``auditor``,
and has a rate limit of its own (RATELIMIT_METRICS).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.api.common import principal
from gateway.extensions import db
from gateway.models import Role
from gateway.notifications.outbox import notification_stats
from gateway.reviews import review_stats


class _DatabaseCollector(Collector):
    """Read figures inside an app context and release the session afterwards."""

    def __init__(self, app: Flask, read: Callable[[], Any]) -> None:
        self.app = app
        self.read = read

    def figures(self) -> Any:
        with self.app.app_context():
            try:
                return self.read()
            finally:
                db.session.remove()


class NotificationCollector(_DatabaseCollector):
    """Counters and gauges per model from notification_stats()."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app, notification_stats)

    def collect(self) -> Iterator[Metric]:
        stats = self.figures()
        delivered = CounterMetricFamily("gateway_notifications_delivered", "Notifications delivered, per model.",
                                        labels=["model"])
        retried = CounterMetricFamily("gateway_notifications_retried",
                                      "Failed delivery attempts that were retried, per model.", labels=["model"])
        dead = CounterMetricFamily("gateway_notifications_dead",
                                   "Notifications given up after their last attempt or a permanent failure, per model.",
                                   labels=["model"])
        by_status = GaugeMetricFamily("gateway_notifications", "Notifications by model and status.",
                                      labels=["model", "status"])
        overdue = GaugeMetricFamily("gateway_notifications_overdue",
                                    "Notifications due for over a minute that no dispatcher holds, per model.",
                                    labels=["model"])
        for model, counts in sorted(stats["by_model"].items()):
            delivered.add_metric([model], counts["delivered"])
            retried.add_metric([model], counts["retries"])
            dead.add_metric([model], counts["dead"])
            overdue.add_metric([model], counts["overdue"])
            for status in ("pending", "retrying", "delivered", "dead"):
                by_status.add_metric([model, status], counts[status])
        yield from (delivered, retried, dead, by_status, overdue)


class ReviewCollector(_DatabaseCollector):
    """Open, resolved and overdue reviews per model: an overdue case is never silently dropped."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app, review_stats)

    def collect(self) -> Iterator[Metric]:
        stats = self.figures()
        by_status = GaugeMetricFamily("gateway_reviews", "Review requests by model and status.", labels=["model", "status"])
        overdue = GaugeMetricFamily("gateway_reviews_overdue", "Open review requests past their (extended) due date.",
                                    labels=["model"])
        for model, counts in sorted(stats.items()):
            overdue.add_metric([model], counts["overdue"])
            for status in ("queued", "claimed", "resolved", "withdrawn"):
                by_status.add_metric([model, status], counts[status])
        yield from (by_status, overdue)


class ScrapeCache:
    """The registry's exposition, computed at most once per `max_age` seconds and shared by every request."""

    def __init__(self, registry: CollectorRegistry, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry, self.max_age, self.clock = registry, max_age, clock
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._at = -float("inf")
        self.computed = 0  # how many times the figures were computed (tests, bench)

    def get(self) -> bytes:
        if self._body is not None and self.clock() - self._at < self.max_age:
            return self._body
        # One request refreshes; the others keep serving the previous copy instead of queueing behind it.
        if not self._lock.acquire(blocking=self._body is None):
            assert self._body is not None
            return self._body
        try:
            if self._body is None or self.clock() - self._at >= self.max_age:
                self._body = generate_latest(self.registry)
                self._at = self.clock()
                self.computed += 1
            return self._body
        finally:
            self._lock.release()


def init_app(app: Flask) -> None:
    """Build the registry with every collector and serve it, cached, at GET /metrics (metrics or auditor key)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (NotificationCollector(app), ReviewCollector(app)):
        registry.register(collector)
    app.extensions["gateway.metrics"] = registry
    cache = ScrapeCache(registry, float(app.config.get("METRICS_MAX_AGE_S", 15.0)))
    app.extensions["gateway.metrics_cache"] = cache

    def metrics() -> Any:
        principal(Role.METRICS, Role.AUDITOR)  # 401 without a key, 403 for other roles
        return Response(cache.get(), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics, methods=["GET"])
