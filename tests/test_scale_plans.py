"""The queries whose cost must not grow with the record read their rows in index order (issue 17).

bench/record_scale.py measures them at 10^6 decisions; here the statements the app actually runs are captured
and explained: a person's page of decisions and the review claim each read one index in order, with no sort of
the person's decisions or of the review queue (which grows with the record and made them linear).
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


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_page_of_my_decisions_reads_the_persons_index_in_order(gateway: Gateway, idp: IdentityProvider) -> None:
    for i in range(5):
        body = copy.deepcopy(gateway.sample)
        body["subject"]["iin"] = IIN
        assert gateway.decide(body, key=f"plan-{i}").status_code == 201
    citizen = {"Authorization": f"Bearer {idp.token(IIN, exp=int(time.time()) + 3600)}"}
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
