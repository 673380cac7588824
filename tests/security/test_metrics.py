"""Finding 1: /metrics was anonymous, unlimited, and ran grouped aggregates over every notice and review on
each scrape. The tests scrape again: without a key, with the wrong role, past the limit, and many times in a
row (the figures are computed at most once per interval)."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway
from tests.security.support import decided, new_key


@pytest.mark.gateway_config(METRICS_MAX_AGE_S=15.0)
def test_metrics_need_a_metrics_or_auditor_key(gateway: Gateway) -> None:
    anonymous = gateway.client.get("/metrics")
    assert anonymous.status_code == 401 and anonymous.get_json()["error"]["code"] == "unauthorized"
    for who in ("agency_a", "reviewer", "admin"):
        assert gateway.client.get("/metrics", headers=gateway.auth(who)).status_code == 403, who
    new_key(gateway, "scraper", "metrics", "Operations")
    for who in ("scraper", "auditor"):
        resp = gateway.client.get("/metrics", headers=gateway.auth(who))
        assert resp.status_code == 200 and b"gateway_notifications" in resp.data
    # A metrics key sees no decision.
    did = decided(gateway)["decision_id"]
    assert gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("scraper")).status_code == 404


@pytest.mark.gateway_config(METRICS_MAX_AGE_S=15.0)
def test_many_scrapes_compute_the_figures_once(gateway: Gateway) -> None:
    new_key(gateway, "scraper", "metrics", "Operations")
    cache = gateway.app.extensions["gateway.metrics_cache"]
    first = gateway.client.get("/metrics", headers=gateway.auth("scraper")).data
    decided(gateway)  # a new notice: the cached copy does not show it until it is 15 s old
    for _ in range(20):
        assert gateway.client.get("/metrics", headers=gateway.auth("scraper")).data == first
    assert cache.computed == 1
    cache._at -= 16  # the copy ages past the interval: the next scrape computes again, once
    fresh = gateway.client.get("/metrics", headers=gateway.auth("scraper")).data
    assert fresh != first and b'status="pending"} 1.0' in fresh and cache.computed == 2


@pytest.mark.gateway_config(METRICS_MAX_AGE_S=15.0, RATELIMIT_METRICS="5/minute")
def test_metrics_have_a_rate_limit(gateway: Gateway) -> None:
    new_key(gateway, "scraper", "metrics", "Operations")
    answers = [gateway.client.get("/metrics", headers=gateway.auth("scraper")).status_code for _ in range(7)]
    assert answers == [200] * 5 + [429] * 2
    assert gateway.client.get("/metrics").status_code in (401, 429)
