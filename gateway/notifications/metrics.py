"""Prometheus metrics of notification delivery, read from the database at scrape time.

Counting in the database rather than in process memory gives the same figures whichever gunicorn worker
answers the scrape, and includes what separate ``gateway worker`` processes delivered (they serve no
HTTP). The price is one grouped query over the outbox per scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.extensions import db


class NotificationCollector(Collector):
    """Counters and gauges per model from notification_stats()."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        from gateway.notifications.outbox import notification_stats

        with self.app.app_context():
            try:
                stats = notification_stats()
            finally:
                db.session.remove()
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


def init_app(app: Flask) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NotificationCollector(app))
    app.extensions["gateway.metrics"] = registry

    def metrics() -> Any:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics, methods=["GET"])
