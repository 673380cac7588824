"""/metrics from the rollups (gateway.rollups): the figures equal a full count of the tables after every increment
of decisions, deliveries and reviews, whether the events were closed into periods or are still read as the tail."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from gateway import oversight, rollups
from gateway.extensions import db
from gateway.ids import utcnow
from gateway.jobs.runner import kinds
from gateway.notifications import notification_stats
from gateway.notifications.dispatcher import Dispatcher
from gateway.reviews import review_stats
from tests.conftest import Gateway
from tests.support.citizens import notice_token

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
MODEL = "german-credit"
# Every committed event is closed into a period at the next refresh: the rollup tables, not the tail, hold them.
CLOSING = {"METRICS_ROLLUP_PERIOD_S": 0.001, "METRICS_ROLLUP_SETTLE_S": 0}
REVIEW = {"point_of_view": "Деректер ескірген.", "contest_grounds": ["wrong_data"]}


def metrics(gw: Gateway) -> dict[str, float]:
    resp = gw.client.get("/metrics", headers=gw.auth("auditor"))
    assert resp.status_code == 200
    return {f"{name}{{{labels}}}": float(value) for name, labels, value in
            re.findall(r"^(gateway_\w+)\{([^}]*)\} (\S+)$", resp.get_data(as_text=True), re.MULTILINE)}


def full_count(gw: Gateway) -> dict[str, Any]:
    """The figures as the gateway computed them before the rollups: grouped counts over every row."""
    with gw.app.app_context():
        notices = notification_stats()["by_model"].get(MODEL, {})
        reviews = review_stats().get(MODEL, {})
        report = oversight.recent_reports(30)[MODEL]
        delivered = db.session.execute(sa.text("SELECT count(*) FROM notifications WHERE status = 'delivered'")).scalar()
        db.session.remove()
    return {"notices": notices, "reviews": reviews, "report": report, "delivered": delivered}


def check(gw: Gateway) -> dict[str, float]:
    """/metrics equals the full count; return the metrics read."""
    found, full = metrics(gw), full_count(gw)
    n, r = full["notices"], full["reviews"]
    m = f'model="{MODEL}"'
    assert found.get(f"gateway_notifications_delivered_total{{{m}}}", 0) == n.get("delivered", 0)
    assert found.get(f"gateway_notifications_dead_total{{{m}}}", 0) == n.get("dead", 0)
    assert found.get(f"gateway_notifications_retried_total{{{m}}}", 0) == n.get("retries", 0)
    assert found.get(f"gateway_notifications_overdue{{{m}}}", 0) == n.get("overdue", 0)
    for status in ("pending", "retrying", "delivered", "dead"):
        assert found.get(f'gateway_notifications{{{m},status="{status}"}}', 0) == n.get(status, 0), status
    for status in ("queued", "claimed", "resolved", "withdrawn"):
        assert found.get(f'gateway_reviews{{{m},status="{status}"}}', 0) == r.get(status, 0), status
    assert found.get(f"gateway_reviews_overdue{{{m}}}", 0) == r.get("overdue", 0)
    volume = full["report"]["volume"]
    assert found[f"gateway_oversight_decisions{{{m}}}"] == volume["decisions"]
    assert found.get(f"gateway_oversight_adverse_rate{{{m}}}") == volume["adverse_rate"]
    assert found['gateway_jobs{kind="deliver",state="done"}'] == full["delivered"]
    return found


def deliver(gw: Gateway) -> None:
    gw.app.config.update(NOTIFY_ROUTES={"email": "log"})
    dispatcher = Dispatcher(gw.app, name="test-dispatcher")
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()


def events_in_increments(gw: Gateway) -> None:
    decided = []
    for i in range(3):
        body = gw.sample | {"subject": gw.sample["subject"] | {"iin": ("921029350851", "061211600012")[i % 2]}}
        resp = gw.decide(body)
        assert resp.status_code == 201, resp.get_json()
        decided.append(resp.get_json()["decision_id"])
    assert check(gw)[f'gateway_notifications{{model="{MODEL}",status="pending"}}'] == 3

    deliver(gw)  # between two refreshes: the notices go out
    assert check(gw)[f'gateway_notifications_delivered_total{{model="{MODEL}"}}'] == 3

    person = {"Authorization": f"Bearer {notice_token(gw, decided[0])}"}
    for did in decided[:2]:
        assert gw.client.post(f"/v1/decisions/{did}/reviews", json=REVIEW, headers=gw.auth("agency_a")).status_code == 201
    found = check(gw)
    assert found[f'gateway_reviews{{model="{MODEL}",status="queued"}}'] == 2

    claimed = gw.client.post("/v1/reviews/claim", json={}, headers=gw.auth("reviewer")).get_json()
    assert check(gw)[f'gateway_reviews{{model="{MODEL}",status="claimed"}}'] == 1
    resolution = {"fencing_token": claimed["fencing_token"], "outcome": "upheld",
                  "reasons": {"kk": "Деректер тексерілді.", "ru": "Данные проверены."}, "point_of_view_considered": True}
    resp = gw.client.post(f"/v1/reviews/{claimed['review_id']}/resolve", json=resolution, headers=gw.auth("reviewer"))
    assert resp.status_code == 200, resp.get_json()
    assert check(gw)[f'gateway_reviews{{model="{MODEL}",status="resolved"}}'] == 1

    open_one = [did for did in decided[:2] if did != claimed["decision_id"]][0]
    if open_one == decided[0]:  # the person withdraws their open request
        with gw.app.app_context():
            rid = db.session.execute(sa.text("SELECT id FROM reviews WHERE decision_id = :d AND status = 'queued'"),
                                     {"d": open_one}).scalar_one()
            db.session.remove()
        resp = gw.client.post(f"/v1/decisions/{open_one}/reviews/{rid}/withdraw", headers=person)
        assert resp.status_code == 200, resp.get_json()
        assert check(gw)[f'gateway_reviews{{model="{MODEL}",status="withdrawn"}}'] == 1

    # Past its due date: counted as overdue (read through the open cases' index), still queued or withdrawn.
    with gw.app.app_context():
        db.session.execute(sa.text("UPDATE reviews SET due_at = :t"), {"t": utcnow() - dt.timedelta(hours=1)})
        db.session.commit()
    check(gw)

    assert gw.decide().status_code == 201  # more decisions and notices after all that
    deliver(gw)
    found = check(gw)
    assert found[f'gateway_oversight_decisions{{model="{MODEL}"}}'] == 4
    assert found[f'gateway_notifications_delivered_total{{model="{MODEL}"}}'] >= 4  # + the review notices


def test_figures_stay_right_as_events_arrive_read_from_the_tail(gateway: Gateway) -> None:
    events_in_increments(gateway)
    with gateway.app.app_context():  # nothing was old enough to close: every figure came from the open tail
        assert db.session.execute(sa.text("SELECT count(*) FROM metric_rollups")).scalar() == 0
        db.session.remove()


@pytest.mark.gateway_config(**CLOSING)
def test_figures_stay_right_as_events_arrive_closed_into_periods(gateway: Gateway) -> None:
    events_in_increments(gateway)
    with gateway.app.app_context():  # the refreshes closed what had happened into the rollup tables
        streams = set(db.session.execute(sa.text("SELECT DISTINCT stream FROM metric_rollups")).scalars())
        db.session.remove()
    assert {"decisions", "notifications_finished", "reviews_requested", "reviews_finished"} <= streams


@pytest.mark.gateway_config(**CLOSING)
def test_a_closing_counts_each_event_once_and_a_wider_window_adds_the_periods_before(gateway: Gateway) -> None:
    for _ in range(3):
        assert gateway.decide().status_code == 201
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE decisions SET created_at = :t WHERE id IN "
                                   "(SELECT id FROM decisions ORDER BY id LIMIT 1)"),
                           {"t": utcnow() - dt.timedelta(days=100)})
        db.session.commit()
        today = dt.datetime.combine(utcnow().date(), dt.time(), dt.UTC)
        month, year = today - dt.timedelta(days=29), today - dt.timedelta(days=364)
        assert rollups.counts(rollups.DECISIONS, since=month)[(MODEL, "decisions")] == 2
        assert rollups.counts(rollups.DECISIONS, since=month)[(MODEL, "decisions")] == 2  # closed once, read twice
        assert rollups.counts(rollups.DECISIONS, since=year)[(MODEL, "decisions")] == 3  # the older periods added
        assert rollups.counts(rollups.DECISIONS, since=month)[(MODEL, "decisions")] == 2
        stored = db.session.execute(sa.text("SELECT sum(value) FROM metric_rollups WHERE stream = 'decisions' "
                                            "AND key = 'decisions'")).scalar()
        assert stored == 3
        db.session.remove()


@pytest.mark.gateway_config(OVERSIGHT_METRICS_SAMPLE=2)
def test_statistics_are_over_the_most_recent_decisions_counts_over_all(gateway: Gateway) -> None:
    ids = [gateway.decide().get_json()["decision_id"] for _ in range(3)]
    with gateway.app.app_context():
        figures = oversight.recent_figures(30, 2)[MODEL]
        full = oversight.recent_reports(30)[MODEL]
        db.session.remove()
    assert figures["decisions"] == full["volume"]["decisions"] == 3 and figures["sample"] == 2
    text = gateway.client.get("/metrics", headers=gateway.auth("auditor")).get_data(as_text=True)
    assert f'gateway_oversight_decisions{{model="{MODEL}"}} 3.0' in text
    assert "# HELP gateway_oversight_selection_rate Share of favourable outcomes per monitored group. Over the 2 most " \
           "recent decisions of the model in the window" in text
    assert len(ids) == 3


def test_every_job_kind_reports_every_state_from_the_rollups(gateway: Gateway) -> None:
    assert gateway.decide().status_code == 201
    with gateway.app.app_context():
        for kind in kinds(gateway.app):
            stats = kind.stats(utcnow())
            assert set(stats) == {"queued", "claimed", "retrying", "done", "dead"} and min(stats.values()) >= 0
        db.session.remove()


# Tables that grow with the record: a refresh may search them through an index, never scan them.
GROWING = ("decisions", "notifications", "reviews", "explanations", "recourse", "log_leaves", "monitoring_values",
           "ground_truths", "access_events", "idempotency_keys", "metric_rollups")


def test_a_refresh_scans_no_table_that_grows_with_the_record(gateway: Gateway) -> None:
    if gateway.backend != "sqlite":
        pytest.skip("read with SQLite's EXPLAIN QUERY PLAN (PostgreSQL: bench/record_scale.py measures it)")
    for _ in range(2):
        assert gateway.decide().status_code == 201
    registry = gateway.app.extensions["gateway.metrics"]
    generate_latest(registry)  # the first refresh closes what is there: the steady state is what follows
    refresh = statements(gateway, lambda: generate_latest(registry))
    assert refresh and not scans(gateway, refresh)
    with gateway.app.app_context():  # the check can fail: the full count the refresh replaced scans the outbox
        full = statements(gateway, notification_stats)
        db.session.remove()
    assert any(table == "notifications" for table in scans(gateway, full))


def statements(gateway: Gateway, run: Any) -> list[tuple[str, Any]]:
    """The SELECT statements (with their parameters) that `run()` sends to the main database."""
    with gateway.app.app_context():
        engine = db.engine
    found: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            found.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)
    return found


def scans(gateway: Gateway, found: list[tuple[str, Any]]) -> list[str]:
    """The growing tables these statements scan whole, by SQLite's query plans."""
    scanned = []
    with gateway.app.app_context(), db.engine.connect() as conn:
        for statement, parameters in found:
            for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all():
                step = str(row[-1])
                if step.startswith("SCAN ") and step.split()[1] in GROWING:
                    scanned.append(step.split()[1])
    return scanned

