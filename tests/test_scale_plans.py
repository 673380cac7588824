"""The queries whose cost must not grow with the record read their rows in index order (issue 17).

bench/record_scale.py measures them at 10^6 decisions; here the statements the app actually runs are captured
and explained: a person's page of decisions and the review claim each read one index in order, with no sort of
the person's decisions or of the review queue (which grows with the record and made them linear). So does every
list's page (the queues, access logs, incidents, batches, the register: 0026), starting at its `after` cursor,
and every list's `total` is a count of at most LIST_COUNT_CAP + 1 entries of an index, never of the table.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.citizens import IdentityProvider
from tests.support.registration import open_incident, request_reviews
from tests.web.console_support import official

IIN = "921029350851"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gateway_extra(idp: IdentityProvider) -> dict[str, Any]:
    return idp.config()


@contextmanager
def captured(gateway: Gateway) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (and their parameters) the app runs inside the block."""
    found: list[tuple[str, Any]] = []
    with gateway.app.app_context():
        engine = db.engine

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        found.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        yield found
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)


def plan(gateway: Gateway, statement: str, parameters: Any) -> str:
    """The query plan of a captured statement, as text. PostgreSQL is told to avoid sequential scans and sorts,
    so the plan shows whether an index *can* serve the query on tables this small."""
    with gateway.app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_sort = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return "\n".join(str(r[0]) for r in rows)


def the_statement(found: list[tuple[str, Any]], *needles: str) -> tuple[str, Any]:
    matching = [(s, p) for s, p in found if s.lstrip().upper().startswith("SELECT") and all(n in s for n in needles)]
    assert matching, f"no SELECT with {needles} among {[s[:80] for s, _ in found]}"
    return matching[0]


def sorted_in_plan(text: str) -> bool:
    return "TEMP B-TREE" in text or any(line.strip().startswith(("Sort", "->  Sort", "Incremental Sort"))
                                        for line in text.splitlines())


def decisions_of_one_person(gateway: Gateway, idp: IdentityProvider, n: int, prefix: str) -> dict[str, str]:
    """Make `n` decisions about one person (IIN); the headers that person signs in with."""
    for i in range(n):
        body = copy.deepcopy(gateway.sample)
        body["subject"]["iin"] = IIN
        assert gateway.decide(body, key=f"{prefix}-{i}").status_code == 201
    return {"Authorization": f"Bearer {idp.token(IIN, exp=int(time.time()) + 3600)}"}


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_page_of_my_decisions_reads_the_persons_index_in_order(gateway: Gateway, idp: IdentityProvider) -> None:
    citizen = decisions_of_one_person(gateway, idp, 5, "plan")
    first = gateway.client.get("/v1/me/decisions", headers=citizen, query_string={"limit": 2}).get_json()
    assert first["next_after"]
    with captured(gateway) as found:
        resp = gateway.client.get("/v1/me/decisions", headers=citizen,
                                  query_string={"limit": 2, "after": first["next_after"]})
    assert resp.status_code == 200 and len(resp.get_json()["decisions"]) == 2
    statement, parameters = the_statement(found, "FROM decisions", "ORDER BY")
    shown = plan(gateway, statement, parameters)
    assert "ix_decisions_subject_ref_created_at_id" in shown, shown
    assert not sorted_in_plan(shown), shown
    if gateway.backend == "sqlite":  # the cursor bounds the index range: the page starts where the cursor is
        assert "created_at<?" in shown.replace(" ", ""), shown


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_claim_reads_the_open_queue_in_due_order(gateway: Gateway) -> None:
    for i in range(3):
        decision = gateway.decide(key=f"claim-plan-{i}").get_json()["decision_id"]
        resp = gateway.client.post(f"/v1/decisions/{decision}/reviews", headers=gateway.auth("agency_a"),
                                   json={"point_of_view": "Please look again.", "contest_grounds": ["other"]})
        assert resp.status_code == 201, resp.get_json()
    with captured(gateway) as found:
        resp = gateway.client.post("/v1/reviews/claim", json={}, headers=gateway.auth("reviewer"))
    assert resp.status_code == 200, resp.get_json()
    statement, parameters = the_statement(found, "FROM reviews", "ORDER BY")
    shown = plan(gateway, statement, parameters)
    assert "ix_reviews_claim_order" in shown, shown
    assert not sorted_in_plan(shown), shown


# --- every list: its page reads an index in the list's order, its count reads at most cap + 1 index entries ------

def uses_index(text: str, index: str) -> bool:
    return index in text


def full_scan(text: str, table: str) -> bool:
    """A read of the whole table (SQLite's `SCAN table` without an index, PostgreSQL's Seq Scan on it)."""
    return any(line.strip().startswith(f"SCAN {table}") and " INDEX " not in line for line in text.splitlines()) or \
        f"Seq Scan on {table}" in text


def check_page(gateway: Gateway, found: list[tuple[str, Any]], table: str, index: str) -> str:
    """The list's page query reads `index` in order (no sort, no scan of the table); its plan, for more checks."""
    statement, parameters = the_statement(found, f"FROM {table}", "ORDER BY")
    shown = plan(gateway, statement, parameters)
    assert uses_index(shown, index), shown
    assert not sorted_in_plan(shown) and not full_scan(shown, table), shown
    return shown


def check_count(gateway: Gateway, found: list[tuple[str, Any]], table: str, *indexes: str) -> None:
    """The list's count is bounded (LIMIT cap + 1 inside) and reads one of `indexes`, never the whole table."""
    counts = [(s, p) for s, p in found if "count(*)" in s and f"FROM {table}" in s]
    assert counts, [s[:80] for s, _ in found]
    for statement, parameters in counts:
        assert "LIMIT" in statement.upper(), statement
        shown = plan(gateway, statement, parameters)
        assert any(uses_index(shown, i) for i in indexes), shown
        assert not full_scan(shown, table), shown



@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize(("query", "index"), [
    ({}, "ix_reviews_queue_order"),  # every case, whatever its status: the listing's index
    ({"status": "queued"}, "ix_reviews_status_queue_order"),
    ({"overdue": "true"}, "ix_reviews_claim_order"),  # overdue cases are open ones: the claim order's range
    ({"due_before": "2100-01-01"}, "ix_reviews_queue_order"),  # a due-date filter bounds the same range
])
def test_a_page_of_the_review_queue_and_its_counts_read_indexes(gateway: Gateway, query: dict[str, str],
                                                                 index: str) -> None:
    request_reviews(gateway, 3, "list-plan")
    reviewer = gateway.auth("reviewer")
    first = gateway.client.get("/v1/reviews", headers=reviewer, query_string={"limit": 1, "status": "queued"})
    cursor = first.get_json()["next_after"]
    assert cursor
    with captured(gateway) as found:
        resp = gateway.client.get("/v1/reviews", headers=reviewer, query_string={"limit": 1, "after": cursor, **query})
    assert resp.status_code == 200, resp.get_json()
    if query.get("overdue"):  # none is overdue: the page is empty, its query still reads the open cases' index
        assert resp.get_json()["reviews"] == []
    shown = check_page(gateway, found, "reviews", index)
    if gateway.backend == "sqlite":  # the cursor bounds the index range: the page starts where the cursor is
        assert ">?" in shown.replace(" ", ""), shown
    check_count(gateway, found, "reviews", "ix_reviews_queue_order", "ix_reviews_status_queue_order",
                "ix_reviews_claim_order")
    # overdue_total counts the open cases past due on an index of open cases, never every case ever requested
    overdue = [(s, p) for s, p in found if "count(*)" in s and "due_at) <" in s and "queued" in s]
    assert overdue, [s[:120] for s, _ in found]
    shown = plan(gateway, *overdue[-1])
    assert "ix_reviews_claim_order" in shown or "ix_reviews_status_queue_order" in shown, shown


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_console_queue_lists_open_cases_on_the_claim_order(gateway: Gateway) -> None:
    request_reviews(gateway, 3, "console-plan")
    browser = official(gateway)
    with captured(gateway) as found:
        page = browser.get("/console")
    assert page.status_code == 200
    check_page(gateway, found, "reviews", "ix_reviews_claim_order")
    check_count(gateway, found, "reviews", "ix_reviews_claim_order", "ix_reviews_status_queue_order")


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_count_of_my_decisions_reads_the_persons_index(gateway: Gateway, idp: IdentityProvider) -> None:
    citizen = decisions_of_one_person(gateway, idp, 3, "count-plan")
    with captured(gateway) as found:
        resp = gateway.client.get("/v1/me/decisions", headers=citizen, query_string={"limit": 2})
    assert resp.status_code == 200
    check_count(gateway, found, "decisions", "ix_decisions_subject_ref_created_at_id")


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_page_of_an_access_log_and_its_count_read_the_decisions_index(gateway: Gateway) -> None:
    decision = gateway.decide(key="log-plan").get_json()["decision_id"]
    auditor = gateway.auth("auditor")
    for _ in range(3):
        assert gateway.client.get(f"/v1/decisions/{decision}", headers=auditor).status_code == 200
    first = gateway.client.get(f"/v1/decisions/{decision}/access-log", headers=auditor, query_string={"limit": 1})
    with captured(gateway) as found:
        resp = gateway.client.get(f"/v1/decisions/{decision}/access-log", headers=auditor,
                                  query_string={"limit": 1, "after": first.get_json()["next_after"]})
    assert resp.status_code == 200 and len(resp.get_json()["events"]) == 1
    check_page(gateway, found, "access_events", "ix_access_events_decision_id_at_id")
    check_count(gateway, found, "access_events", "ix_access_events_decision_id_at_id")


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize(("query", "index"), [({}, "ix_incidents_opened_at_id"),
                                              ({"model": "german-credit"}, "ix_incidents_model_name_opened_at_id")])
def test_a_page_of_the_incident_register_reads_its_index(gateway: Gateway, query: dict[str, str], index: str) -> None:
    for _ in range(3):
        open_incident(gateway.client, gateway.auth("admin"))
    auditor = gateway.auth("auditor")
    first = gateway.client.get("/v1/incidents", headers=auditor, query_string={"limit": 1, **query}).get_json()
    with captured(gateway) as found:
        resp = gateway.client.get("/v1/incidents", headers=auditor,
                                  query_string={"limit": 1, "after": first["next_after"], **query})
    assert resp.status_code == 200 and len(resp.get_json()["incidents"]) == 1
    check_page(gateway, found, "incidents", index)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_page_of_an_agencys_batches_reads_the_models_index(gateway: Gateway) -> None:
    url = "/v1/models/german-credit/decision-batches"
    agency = gateway.auth("agency_a")
    for i in range(3):
        row = {"idempotency_key": f"plan-batch-{i}", **copy.deepcopy(gateway.sample)}
        assert gateway.client.post(url, json={"rows": [row]}, headers=agency).status_code == 202
    first = gateway.client.get(url, headers=agency, query_string={"limit": 1}).get_json()
    with captured(gateway) as found:
        resp = gateway.client.get(url, headers=agency, query_string={"limit": 1, "after": first["next_after"]})
    assert resp.status_code == 200 and len(resp.get_json()["batches"]) == 1
    check_page(gateway, found, "decision_batches", "ix_decision_batches_model_name_created_at_id")


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_page_of_the_model_register_and_its_count_read_the_serving_index(gateway: Gateway) -> None:
    with captured(gateway) as found:
        resp = gateway.client.get("/v1/models", query_string={"limit": 1})
    assert resp.status_code == 200 and resp.get_json()["total"] == 1
    check_page(gateway, found, "scoring_models", "ix_scoring_models_status_name_registered_at")
