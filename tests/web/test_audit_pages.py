"""The auditors' pages: search, the read-only decision, streamed CSV and Parquet exports, the access log."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway
from tests.web.console_support import official, waiting_case
from tests.web.support import IIN_2, decide

ROW = re.compile(r'data-decision-id="(dec_[\w-]+)"')


pytestmark = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                     indirect=True)

def count(gw: Gateway, sql: str, **params: object) -> int:
    with gw.app.app_context():
        return int(db.session.execute(sa.text(sql), params).scalar_one())


def test_an_auditor_searches_and_every_read_is_logged(gateway: Gateway) -> None:
    first = decide(gateway)["decision_id"]
    second = decide(gateway, iin=IIN_2)["decision_id"]
    auditor = official(gateway, "auditor")
    page = auditor.get("/audit")
    assert page.status_code == 200
    assert ROW.findall(page.get_data(as_text=True)) == [second, first]  # newest first
    assert count(gateway, "SELECT count(*) FROM access_events WHERE what = 'audit_search' AND principal_kind = 'auditor'") == 2
    assert ROW.findall(auditor.get("/audit?model=german-credit&reference=application-0001").get_data(as_text=True)) == [second, first]
    assert ROW.findall(auditor.get("/audit?reference=none-such").get_data(as_text=True)) == []
    assert ROW.findall(auditor.get("/audit?reviewed=yes").get_data(as_text=True)) == []
    assert ROW.findall(auditor.get("/audit?from=2000-01-01&to=2000-12-31").get_data(as_text=True)) == []
    bad = auditor.get("/audit?from=yesterday")
    assert bad.status_code == 200 and 'id="error-summary"' in bad.get_data(as_text=True)


def test_the_search_pages_by_keyset(gateway: Gateway) -> None:
    made = [decide(gateway)["decision_id"] for _ in range(3)]
    from gateway.web import audit

    original = audit.PAGE
    audit.PAGE = 2
    try:
        auditor = official(gateway, "auditor")
        body = auditor.get("/audit").get_data(as_text=True)
        assert ROW.findall(body) == made[::-1][:2]
        nxt = re.search(r'id="next-page" href="([^"]+)"', body)
        assert nxt
        rest = auditor.get(nxt.group(1).replace("&amp;", "&")).get_data(as_text=True)
        assert ROW.findall(rest) == made[:1] and 'id="next-page"' not in rest
    finally:
        audit.PAGE = original


def test_an_auditor_opens_a_decision_read_only_with_everything(gateway: Gateway) -> None:
    me = waiting_case(gateway)
    auditor = official(gateway, "auditor")
    page = auditor.get(f"/audit/decisions/{me.decision_id}")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    for part in ('id="decision"', 'id="inputs"', 'id="explanation"', 'id="notices"', 'id="reviews"', 'id="access-log"'):
        assert part in body, part
    assert 'class="withheld" data-feature=' in body
    assert body.count("<form") == 1 and 'id="signout-form"' in body  # read-only: no form but signing out
    assert count(gateway, "SELECT count(*) FROM access_events WHERE decision_id = :d AND what = 'audit_decision'",
                 d=me.decision_id) == 1
    assert count(gateway, "SELECT count(*) FROM access_events WHERE decision_id = :d AND what = 'access_log' "
                          "AND principal_kind = 'auditor'", d=me.decision_id) == 1


def test_exports_stream_the_same_rows_as_csv_and_parquet(gateway: Gateway) -> None:
    made = {decide(gateway)["decision_id"] for _ in range(3)}
    auditor = official(gateway, "auditor")
    csv_resp = auditor.get("/audit/export.csv")
    assert csv_resp.status_code == 200 and csv_resp.is_streamed
    assert csv_resp.headers["Content-Disposition"].startswith("attachment;")
    frame = pd.read_csv(io.BytesIO(csv_resp.get_data()), keep_default_na=False)
    parquet = auditor.get("/audit/export.parquet")
    assert parquet.status_code == 200 and parquet.is_streamed
    table = pd.read_parquet(io.BytesIO(parquet.get_data()))
    assert set(frame["decision_id"]) == made == set(table["decision_id"])
    assert list(frame.columns) == list(table.columns)
    assert frame["score"].round(9).tolist() == table["score"].round(9).tolist()
    assert count(gateway, "SELECT count(*) FROM access_events WHERE what = 'audit_export'") == 6


def copy_decisions(gw: Gateway, template_id: str, n: int) -> set[str]:
    """Copies of a real decision under new ids and times (test data for the export's volume)."""
    import datetime as dt

    from gateway.models import Decision, table

    decisions = table(Decision)
    with gw.app.app_context():  # through the table's types, as the gateway writes them
        row = dict(db.session.execute(sa.select(decisions).where(decisions.c.id == template_id)).mappings().one())
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        ids = set()
        batch = []
        for i in range(n):
            new = dict(row, id=f"dec_copy{i:06d}", created_at=start + dt.timedelta(seconds=i), score=i / n)
            ids.add(new["id"])
            batch.append(new)
        db.session.execute(sa.insert(decisions), batch)
        db.session.commit()
    return ids


def test_ten_thousand_rows_export_page_by_page(gateway: Gateway) -> None:
    template = decide(gateway)["decision_id"]
    made = copy_decisions(gateway, template, 10_000) | {template}
    auditor = official(gateway, "auditor")
    resp = auditor.get("/audit/export.csv")
    chunks = [c for c in resp.response if c]  # the body as the server streams it
    assert len(chunks) >= 11  # a header and one chunk per keyset page of 1,000 rows: never one block
    frame = pd.read_csv(io.BytesIO(b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)), keep_default_na=False)
    parquet = auditor.get("/audit/export.parquet")
    parts = [c for c in parquet.response if c]
    assert len(parts) >= 11
    table = pd.read_parquet(io.BytesIO(b"".join(parts)))
    assert len(frame) == len(table) == 10_001 and set(frame["decision_id"]) == made == set(table["decision_id"])
    merged = frame.merge(table, on="decision_id", suffixes=("_csv", "_pq"))
    assert (merged["score_csv"].round(12) == merged["score_pq"].round(12)).all()
    assert (merged["created_at_csv"] == merged["created_at_pq"]).all()
    assert frame["decision_id"].tolist() == table["decision_id"].tolist()  # the same order: newest first
