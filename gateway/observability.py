"""GET /metrics: one Prometheus registry, one owner, collectors that read the database.

Counting in the database rather than in process memory gives the same figures whichever gunicorn worker
answers the scrape, and includes what separate ``gateway worker`` processes did (they serve no HTTP).

A refresh never reads the history: finished events (notices delivered or given up, reviews requested, resolved or
withdrawn, jobs done, decisions made) are counted once per period by the rollups (gateway.rollups), so it reads the
stored counts plus the events of the last period; open rows (notices to send, claimed or overdue reviews) through
their indexes; the oversight statistics over a bounded sample of recent decisions (gateway.oversight.recent_figures).
Its cost does not grow with the number of decisions stored (bench/record_scale.py). The figures are still computed
at most once per METRICS_MAX_AGE_S per process and served from that copy; while one request refreshes a stale copy,
the others get the previous one.
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

from gateway import oversight
from gateway.api.common import principal
from gateway.extensions import db
from gateway.models import Role
from gateway.notifications.outbox import notification_metrics
from gateway.reviews import review_metrics


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
    """Counters and gauges per model from notification_metrics()."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app, notification_metrics)

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
        for model, counts in sorted(stats.items()):
            delivered.add_metric([model], counts["delivered_total"])
            retried.add_metric([model], counts["retries"])
            dead.add_metric([model], counts["dead_total"])
            overdue.add_metric([model], counts["overdue"])
            for status in ("pending", "retrying", "delivered", "dead"):
                by_status.add_metric([model, status], counts[status])
        yield from (delivered, retried, dead, by_status, overdue)


class ReviewCollector(_DatabaseCollector):
    """Open, resolved and overdue reviews per model: an overdue case is never silently dropped."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app, review_metrics)

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


class OversightCollector(_DatabaseCollector):
    """The oversight report's main figures per serving model over the last OVERSIGHT_METRICS_DAYS days: counts and
    states exact, statistics over the OVERSIGHT_METRICS_SAMPLE most recent decisions (oversight.recent_figures)."""

    def __init__(self, app: Flask) -> None:
        days = int(app.config.get("OVERSIGHT_METRICS_DAYS") or 30)
        self.sample = int(app.config.get("OVERSIGHT_METRICS_SAMPLE") or 2000)
        super().__init__(app, lambda: oversight.recent_figures(days, self.sample))

    def collect(self) -> Iterator[Metric]:
        reports = self.figures()
        sample = (f" Over the {self.sample} most recent decisions of the model in the window (all when fewer): "
                  "OVERSIGHT_METRICS_SAMPLE.")
        g = {name: GaugeMetricFamily(f"gateway_oversight_{name}", text, labels=labels) for name, text, labels in (
            ("decisions", "Decisions in the window.", ["model"]),
            ("adverse_rate", "Share of adverse decisions.", ["model"]),
            ("notices_dead", "Decision notices given up (dead letters).", ["model"]),
            ("notice_delivery_seconds_p95", "95th percentile of notice delivery delay." + sample, ["model"]),
            ("reviews_overdue", "Open reviews past their (extended) due date at the window's end.", ["model"]),
            ("reviews_overturn_rate", "Share of resolved reviews changed or annulled." + sample, ["model"]),
            ("reviews_on_time_rate", "Share of resolved reviews resolved by their due date." + sample, ["model"]),
            ("confirmations_waiting", "Held decisions waiting for an officer.", ["model"]),
            ("selection_rate", "Share of favourable outcomes per monitored group." + sample,
             ["model", "attribute", "group"]),
            ("demographic_parity_difference", "Largest gap in selection rate between groups." + sample,
             ["model", "attribute"]),
            ("equalized_odds_difference", "Largest gap in TPR or FPR between groups (ground truth)." + sample,
             ["model", "attribute"]),
            ("score_psi", "Population stability index of the score against the background data." + sample,
             ["model", "version"]),
            ("inputs_drifting", "Inputs whose PSI or KS statistic passed the flag." + sample, ["model", "version"]),
            ("incidents_open", "Incidents not closed.", ["model"]),
        )}

        def put(name: str, labels: list[str], value: Any) -> None:
            if value is not None:
                g[name].add_metric(labels, float(value))

        for model, r in sorted(reports.items()):
            for name in ("decisions", "adverse_rate", "notices_dead", "notice_delivery_seconds_p95", "reviews_overdue",
                         "reviews_overturn_rate", "reviews_on_time_rate", "confirmations_waiting", "incidents_open"):
                put(name, [model], r[name])
            for attribute, f in sorted(r["fairness"].items()):
                for group, rate in sorted(f.get("selection_rate", {}).items()):
                    put("selection_rate", [model, attribute, group], rate)
                put("demographic_parity_difference", [model, attribute], f.get("demographic_parity_difference"))
                put("equalized_odds_difference", [model, attribute],
                    f.get("ground_truth", {}).get("equalized_odds_difference"))
            for version, d in sorted(r["drift"]["versions"].items()):
                if d.get("score"):
                    put("score_psi", [model, version], d["score"]["psi"])
                    put("inputs_drifting", [model, version], len(d["flagged"]))
        yield from g.values()


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
    for collector in (NotificationCollector(app), ReviewCollector(app), OversightCollector(app)):
        registry.register(collector)
    app.extensions["gateway.metrics"] = registry
    cache = ScrapeCache(registry, float(app.config.get("METRICS_MAX_AGE_S", 15.0)))
    app.extensions["gateway.metrics_cache"] = cache

    def metrics() -> Any:
        principal(Role.METRICS, Role.AUDITOR)  # 401 without a key, 403 for other roles
        return Response(cache.get(), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics, methods=["GET"])
