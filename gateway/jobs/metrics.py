"""Prometheus metrics of every task kind, read from the database at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.extensions import db
from gateway.ids import utcnow
from gateway.jobs.base import STATES
from gateway.jobs.runner import kinds


class JobsCollector(Collector):
    """Jobs per kind and state, and the dead ones per kind (a job given up is never silent)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with self.app.app_context():
            try:
                stats = {kind.name: kind.stats(now) for kind in kinds(self.app)}
            finally:
                db.session.remove()
        by_state = GaugeMetricFamily("gateway_jobs", "Background jobs by kind and state.", labels=["kind", "state"])
        dead = GaugeMetricFamily("gateway_jobs_dead",
                                 "Background jobs given up after their last attempt or a permanent failure, per kind.",
                                 labels=["kind"])
        for name, counts in sorted(stats.items()):
            dead.add_metric([name], counts["dead"])
            for state in STATES:
                by_state.add_metric([name, state], counts[state])
        yield from (by_state, dead)


def init_app(app: Flask) -> None:
    """Add the jobs collector to the registry that GET /metrics serves."""
    app.extensions["gateway.metrics"].register(JobsCollector(app))
