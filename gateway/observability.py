"""GET /metrics: one Prometheus registry, one owner, collectors that read the database at scrape time.

Counting in the database rather than in process memory gives the same figures whichever gunicorn worker
answers the scrape, and includes what separate ``gateway worker`` processes did (they serve no HTTP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.extensions import db
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


def init_app(app: Flask) -> None:
    """Build the registry with every collector and serve it at GET /metrics."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (NotificationCollector(app), ReviewCollector(app)):
        registry.register(collector)
    app.extensions["gateway.metrics"] = registry

    def metrics() -> Any:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics, methods=["GET"])
