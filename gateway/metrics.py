"""Prometheus metrics of the review queue, read from the database at scrape time (like the notices')."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.extensions import db


class ReviewCollector(Collector):
    """Open, resolved and overdue reviews per model: an overdue case is never silently dropped."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        from gateway.reviews import review_stats

        with self.app.app_context():
            try:
                stats = review_stats()
            finally:
                db.session.remove()
        by_status = GaugeMetricFamily("gateway_reviews", "Review requests by model and status.", labels=["model", "status"])
        overdue = GaugeMetricFamily("gateway_reviews_overdue", "Open review requests past their (extended) due date.",
                                    labels=["model"])
        for model, counts in sorted(stats.items()):
            overdue.add_metric([model], counts["overdue"])
            for status in ("queued", "claimed", "resolved", "withdrawn"):
                by_status.add_metric([model, status], counts[status])
        yield from (by_status, overdue)


def init_app(app: Flask) -> None:
    """Add the review collector to the registry that GET /metrics serves."""
    app.extensions["gateway.metrics"].register(ReviewCollector(app))
