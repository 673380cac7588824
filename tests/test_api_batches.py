"""Decision batches over the API: intake, the batch job kind, results, bad uploads, idempotent rows, access."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask.cli import ScriptInfo

from gateway.batches.task import BatchKind
from gateway.cli import main
from gateway.extensions import db
from gateway.oversight import monitored_values
from gateway.settings import current_settings
from tests.conftest import Gateway
from tests.oversight.test_confirmation import register_low_autonomy
from tests.support.gateway_server import valid_iin
from tests.support.registration import open_incident

pytestmark = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                     indirect=True)
URL = "/v1/models/german-credit/decision-batches"
FLAT_SUBJECT = ("idempotency_key", "iin", "language", "email", "reference")


def rows(gw: Gateway, n: int, prefix: str = "row") -> list[dict[str, Any]]:
    """`n` valid rows: the sample's features with the duration varied, one person each."""
    out = []
    for i in range(n):
        features = copy.deepcopy(gw.sample["features"])
        features["duration_months"] = 6 + (i * 7) % 60
        out.append({"idempotency_key": f"{prefix}-{i}", "features": features, "reference": f"app-{i}",
                    "subject": {"iin": valid_iin(i), "language": "ru", "contact": {"email": f"p{i}@example.kz"}}})
    return out


def flat(gw: Gateway, body_rows: list[dict[str, Any]]) -> pd.DataFrame:
    records = [{"idempotency_key": r["idempotency_key"], "iin": r["subject"]["iin"],
                "language": r["subject"]["language"], "email": r["subject"]["contact"]["email"],
                "reference": r["reference"], **r["features"]} for r in body_rows]
    return pd.DataFrame.from_records(records)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def submit(gw: Gateway, who: str = "agency_a", **kwargs: Any) -> Any:
    return gw.client.post(URL, headers=gw.auth(who), **kwargs)


def run_batches(gw: Gateway) -> int:
    """Work off every open batch with the batch kind, in this process (the kind a worker runs)."""
    kind = BatchKind(gw.app)
    total = 0
    while (claimed := kind.run_once()) > 0:
        total += claimed
    return total


def batch(gw: Gateway, batch_id: str, who: str = "agency_a", **query: Any) -> Any:
    return gw.client.get(f"{URL}/{batch_id}", headers=gw.auth(who), query_string=query)


def count(gw: Gateway, sql: str) -> int:
    with gw.app.app_context():
        found = int(db.session.execute(sa.text(sql)).scalar_one())
        db.session.commit()
    return found


@pytest.mark.gateway_config(BATCH_CHUNK_SIZE=2)
def test_a_json_batch_decides_every_valid_row_as_a_single_decision_would(gateway: Gateway) -> None:
    body_rows = rows(gateway, 5)
    body_rows[3]["subject"]["iin"] = "921029350850"  # a wrong check digit: that row's error, not the batch's
    body_rows[4]["features"]["age"] = 7  # under the feature's minimum
    resp = submit(gateway, json={"rows": body_rows})
    assert resp.status_code == 202, resp.get_json()
    created = resp.get_json()
    assert created["total_rows"] == 5 and created["invalid_rows"] == 2 and created["status"] == "queued"
    assert resp.headers["Location"] == created["links"]["batch"]
    assert count(gateway, "SELECT count(*) FROM decisions") == 0  # decided by the jobs engine, not the request

    assert run_batches(gateway) == 1
    view = batch(gateway, created["batch_id"]).get_json()
    assert view["status"] == "done" and view["processed_rows"] == 5
    assert (view["decided_rows"], view["replayed_rows"], view["invalid_rows"]) == (3, 0, 2)
    by_index = {r["index"]: r for r in view["rows"]}
    assert [by_index[i]["status"] for i in range(5)] == ["decided"] * 3 + ["invalid"] * 2
    assert by_index[3]["errors"][0]["field"] == "subject.iin"
    assert by_index[4]["errors"] == [{"field": "features.age", "rule": "min", "message": "must be at least 18, got 7"}]

    for i in range(3):
        row = by_index[i]
        decision = gateway.client.get(f"/v1/decisions/{row['decision_id']}", headers=gateway.auth("agency_a")).get_json()
        assert decision["outcome"] == row["outcome"] and decision["score"] == row["score"]
        assert decision["reference"] == f"app-{i}"
        explanation = gateway.client.get(f"/v1/decisions/{row['decision_id']}/explanation",
                                         headers=gateway.auth("agency_a"))
        assert explanation.status_code == 200
    ids = "', '".join(by_index[i]["decision_id"] for i in range(3))
    assert count(gateway, f"SELECT count(*) FROM explanations WHERE status = 'ready' AND decision_id IN ('{ids}')") == 3
    assert count(gateway, f"SELECT count(*) FROM notifications WHERE kind = 'decision_notice' AND decision_id IN ('{ids}')") == 3
    assert count(gateway, f"SELECT count(*) FROM log_leaves WHERE kind = 'decision:recorded' AND object_id IN ('{ids}')") == 3
    assert count(gateway, "SELECT count(*) FROM log_leaves WHERE kind LIKE 'decision_batch:%'") == 2  # submitted, done
    # No raw IIN and, once decided, no contact or inputs kept on the batch's rows.
    assert count(gateway, "SELECT count(*) FROM decision_batch_rows WHERE status = 'decided' AND "
                          "(contact_ciphertext IS NOT NULL OR features IS NOT NULL)") == 0
    with gateway.app.app_context():
        dump = json.dumps([list(r) for r in db.session.execute(sa.text("SELECT * FROM decision_batch_rows")).all()],
                          default=str)
    assert all(valid_iin(i) not in dump for i in range(3))

    # The row's key is its Idempotency-Key: the same request made singly replays the batch's decision.
    single = {k: v for k, v in body_rows[0].items() if k != "idempotency_key"}
    replay = gateway.decide(single, key="row-0")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["decision_id"] == by_index[0]["decision_id"]


def test_a_resubmitted_batch_decides_no_row_twice(gateway: Gateway) -> None:
    body_rows = rows(gateway, 4)
    first = submit(gateway, json={"rows": body_rows[:3]}).get_json()
    run_batches(gateway)
    assert count(gateway, "SELECT count(*) FROM decisions") == 3
    single = {k: v for k, v in body_rows[3].items() if k != "idempotency_key"}
    assert gateway.decide(single, key="row-3").status_code == 201  # one row decided singly before the batch

    changed = copy.deepcopy(body_rows)
    changed[2]["features"]["credit_amount"] = 1000  # the same key with another request: refused, not decided
    second = submit(gateway, json={"rows": changed}).get_json()
    run_batches(gateway)
    view = batch(gateway, second["batch_id"]).get_json()
    assert (view["decided_rows"], view["replayed_rows"], view["invalid_rows"]) == (0, 3, 1)
    assert count(gateway, "SELECT count(*) FROM decisions") == 4
    statuses = {r["index"]: r for r in view["rows"]}
    earlier = {r["index"]: r["decision_id"] for r in batch(gateway, first["batch_id"]).get_json()["rows"]}
    assert statuses[0]["decision_id"] == earlier[0] and statuses[1]["decision_id"] == earlier[1]
    assert statuses[2]["status"] == "invalid" and statuses[2]["errors"][0]["rule"] == "same_body"
    assert statuses[3]["status"] == "replayed"

    duplicate = submit(gateway, json={"rows": [body_rows[0], body_rows[0]]}).get_json()
    assert duplicate["invalid_rows"] == 1  # the same key twice in one batch: the second row is refused


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "multipart"])
def test_files_decide_like_json_rows_and_the_results_download(gateway: Gateway, fmt: str) -> None:
    body_rows = rows(gateway, 3)
    frame = flat(gateway, body_rows)
    if fmt == "csv":
        resp = submit(gateway, data=csv_bytes(frame), content_type="text/csv")
    elif fmt == "jsonl":
        data = "".join(json.dumps(r) + "\n" for r in body_rows).encode()
        resp = submit(gateway, data=data, content_type="application/x-ndjson")
    elif fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        resp = submit(gateway, data=buffer.getvalue(), content_type="application/vnd.apache.parquet")
    else:
        resp = submit(gateway, data={"file": (io.BytesIO(csv_bytes(frame)), "people.csv")},
                      content_type="multipart/form-data")
    assert resp.status_code == 202, resp.get_json()
    batch_id = resp.get_json()["batch_id"]
    assert resp.get_json()["invalid_rows"] == 0
    run_batches(gateway)
    view = batch(gateway, batch_id).get_json()
    assert view["decided_rows"] == 3 and view["source"] == ("csv" if fmt == "multipart" else fmt)

    results = gateway.client.get(f"{URL}/{batch_id}/results", headers=gateway.auth("agency_a"))
    assert results.status_code == 200 and results.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(results.get_data(as_text=True))))
    assert [r["idempotency_key"] for r in table] == ["row-0", "row-1", "row-2"]
    assert [r["decision_id"] for r in table] == [r["decision_id"] for r in view["rows"]]
    lines = gateway.client.get(f"{URL}/{batch_id}/results?format=jsonl", headers=gateway.auth("agency_a"))
    assert lines.mimetype == "application/x-ndjson"
    assert [json.loads(x)["decision_id"] for x in lines.get_data(as_text=True).splitlines()] == \
        [r["decision_id"] for r in view["rows"]]


def test_rows_page_by_keyset(gateway: Gateway) -> None:
    batch_id = submit(gateway, json={"rows": rows(gateway, 5)}).get_json()["batch_id"]
    first = batch(gateway, batch_id, limit=2).get_json()
    assert [r["index"] for r in first["rows"]] == [0, 1] and first["next_after"] == 1
    second = batch(gateway, batch_id, limit=2, after=first["next_after"]).get_json()
    assert [r["index"] for r in second["rows"]] == [2, 3]
    last = batch(gateway, batch_id, limit=2, after=second["next_after"]).get_json()
    assert [r["index"] for r in last["rows"]] == [4] and last["next_after"] is None
    assert all(r["status"] == "pending" for r in first["rows"])


def _error(resp: Any) -> dict[str, Any]:
    error: dict[str, Any] = resp.get_json()["error"]
    return error


@pytest.mark.gateway_config(BATCH_MAX_ROWS=4, BATCH_MAX_BYTES=20_000)
def test_bad_uploads_are_refused_naming_the_problem(gateway: Gateway) -> None:
    frame = flat(gateway, rows(gateway, 3))

    wrong = frame.drop(columns=["age"]).assign(shoe_size=42)
    resp = submit(gateway, data=csv_bytes(wrong), content_type="text/csv")
    assert resp.status_code == 422 and _error(resp)["code"] == "batch_columns"
    assert "missing columns: age" in _error(resp)["message"] and "unknown columns: shoe_size" in _error(resp)["message"]

    no_contact = frame.drop(columns=["email"])
    resp = submit(gateway, data=csv_bytes(no_contact), content_type="text/csv")
    assert resp.status_code == 422 and "email or a webhook column" in _error(resp)["message"]

    bad_types = frame.astype({"credit_amount": object})
    bad_types.loc[1, "credit_amount"] = "a lot"
    resp = submit(gateway, data=csv_bytes(bad_types), content_type="text/csv")
    assert resp.status_code == 422 and _error(resp)["code"] == "batch_types"
    assert _error(resp)["details"] == [{"field": "rows[1].credit_amount", "rule": "type",
                                        "message": "must be a number, got 'a lot'"}]

    too_many = flat(gateway, rows(gateway, 5))
    resp = submit(gateway, data=csv_bytes(too_many), content_type="text/csv")
    assert resp.status_code == 413 and "at most 4" in _error(resp)["message"]
    assert _error(resp)["code"] == "batch_too_large"  # as the README names it
    resp = submit(gateway, data=b"x" * 20_001, content_type="text/csv")
    assert resp.status_code == 413 and "20000 bytes" in _error(resp)["message"]
    assert _error(resp)["code"] == "batch_too_large"

    resp = submit(gateway, data=b"<rows/>", content_type="application/xml")
    assert resp.status_code == 415 and _error(resp)["code"] == "batch_format_unknown"
    assert "text/csv" in _error(resp)["message"] and "application/xml" in _error(resp)["message"]

    resp = submit(gateway, data=b"not parquet at all", content_type="application/vnd.apache.parquet")
    assert resp.status_code == 400 and "Parquet" in _error(resp)["message"]
    resp = submit(gateway, data=b'{"idempotency_key": "a"}\n{oops\n', content_type="application/x-ndjson")
    assert resp.status_code == 400 and "line 2" in _error(resp)["message"]
    resp = submit(gateway, data=b"idempotency_key,iin\n", content_type="text/csv")
    assert resp.status_code == 422

    resp = submit(gateway, json={"rows": []})
    assert resp.status_code == 422 and _error(resp)["details"][0]["field"] == "rows"
    resp = submit(gateway, json={"rows": [{"idempotency_key": "k", "subject": "me"}]})
    assert resp.status_code == 422
    assert count(gateway, "SELECT count(*) FROM decision_batches") == 0


def test_another_agency_and_other_roles_get_404_for_a_batch(gateway: Gateway) -> None:
    batch_id = submit(gateway, json={"rows": rows(gateway, 1)}).get_json()["batch_id"]
    missing = "bat_AAAAAAAAAAAAAAAAAAAAAA"
    for suffix in ("", "/results"):
        assert gateway.client.get(f"{URL}/{batch_id}{suffix}", headers=gateway.auth("agency_a")).status_code == 200
        for who in ("agency_b", "reviewer", "auditor", "admin"):
            hit = gateway.client.get(f"{URL}/{batch_id}{suffix}", headers=gateway.auth(who))
            miss = gateway.client.get(f"{URL}/{missing}{suffix}", headers=gateway.auth(who))
            assert hit.status_code == 404, who
            assert (hit.status_code, hit.data) == (miss.status_code, miss.data)
        other_model = gateway.client.get(f"/v1/models/other/decision-batches/{batch_id}{suffix}",
                                         headers=gateway.auth("agency_a"))
        assert other_model.status_code == 404
    assert submit(gateway, who="reviewer", json={"rows": rows(gateway, 1)}).status_code == 403


def test_a_suspended_model_stops_the_batch(gateway: Gateway) -> None:
    batch_id = submit(gateway, json={"rows": rows(gateway, 2)}).get_json()["batch_id"]
    incident = open_incident(gateway.client, gateway.auth("admin"))
    resp = gateway.client.post("/v1/models/german-credit/suspend", json={"reason": "audit", "incident_id": incident},
                               headers=gateway.auth("admin"))
    assert resp.status_code == 200, resp.get_json()
    run_batches(gateway)
    view = batch(gateway, batch_id).get_json()
    assert view["status"] == "stopped" and "suspended" in view["last_error"]
    assert view["decided_rows"] == 0 and count(gateway, "SELECT count(*) FROM decisions") == 0


def test_gateway_decide_runs_a_file_with_a_summary_and_results(gateway: Gateway, tmp_path: Path) -> None:
    body_rows = rows(gateway, 4, prefix="cli")
    body_rows[1]["features"]["purpose"] = "spaceship"
    path = tmp_path / "people.csv"
    path.write_bytes(csv_bytes(flat(gateway, body_rows)))
    out = tmp_path / "results.jsonl"
    info = ScriptInfo(create_app=lambda: gateway.app)
    result = CliRunner().invoke(main, ["decide", "--model", "german-credit", "--client", "agency_a", "--results",
                                       str(out), str(path)], obj=info)
    assert result.exit_code == 0, result.output
    assert "done" in result.stdout and "3 decided, 0 replayed (decided before), 1 not decided" in result.stdout
    assert "row 1 (cli-1): features.purpose: must be one of" in result.stderr
    assert "4/4" in result.stderr  # the progress bar reached the end
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in results] == ["decided", "invalid", "decided", "decided"]
    assert count(gateway, "SELECT count(*) FROM decisions") == 3

    again = CliRunner().invoke(main, ["decide", "--model", "german-credit", "--client", "agency_a", str(path)], obj=info)
    assert again.exit_code == 0 and "0 decided, 3 replayed" in again.stdout  # the same file again: nothing twice
    assert count(gateway, "SELECT count(*) FROM decisions") == 3

    wrong = CliRunner().invoke(main, ["decide", "--model", "german-credit", "--client", "reviewer", str(path)], obj=info)
    assert wrong.exit_code != 0 and "no active agency client is named 'reviewer'" in wrong.output
    bad = tmp_path / "people.txt"
    bad.write_text("x")
    unknown = CliRunner().invoke(main, ["decide", "--model", "german-credit", "--client", "agency_a", str(bad)], obj=info)
    assert unknown.exit_code != 0 and "cannot read a decision batch from a file named 'people.txt'" in unknown.output


def test_monitor_only_values_ride_with_their_rows_and_never_reach_the_model(gateway: Gateway) -> None:
    """As in a single decision: the rows' monitor-only values (JSON `monitoring`, or a file's optional column)
    are stored encrypted with each decision for the oversight report, and a wrong one is that row's error."""
    body_rows = rows(gateway, 3, prefix="mon")
    for i, r in enumerate(body_rows):
        r["monitoring"] = {"sex": ("female", "male")[i % 2]}
    body_rows[2]["monitoring"] = {"sex": "unknown"}  # not a declared category: the row's error
    resp = submit(gateway, json={"rows": body_rows})
    assert resp.status_code == 202, resp.get_json()
    files = flat(gateway, rows(gateway, 2, prefix="mon-csv")).assign(sex=["male", "female"])
    resp_csv = submit(gateway, data=csv_bytes(files), content_type="text/csv")
    assert resp_csv.status_code == 202, resp_csv.get_json()
    run_batches(gateway)
    view = batch(gateway, resp.get_json()["batch_id"]).get_json()
    by_index = {r["index"]: r for r in view["rows"]}
    assert [by_index[i]["status"] for i in range(3)] == ["decided", "decided", "invalid"]
    assert by_index[2]["errors"][0]["field"] == "monitoring.sex", by_index[2]["errors"]
    from_csv = {r["index"]: r for r in batch(gateway, resp_csv.get_json()["batch_id"]).get_json()["rows"]}
    expected = {by_index[0]["decision_id"]: "female", by_index[1]["decision_id"]: "male",
                from_csv[0]["decision_id"]: "male", from_csv[1]["decision_id"]: "female"}
    with gateway.app.app_context():
        found = monitored_values(list(expected), current_settings())
        stored = db.session.execute(sa.text("SELECT ciphertext FROM monitoring_values")).scalars().all()
        inputs = db.session.execute(sa.text("SELECT inputs FROM decisions")).scalars().all()
        db.session.commit()
    assert {d: v["sex"] for d, v in found.items()} == expected
    assert all(b"female" not in bytes(c) and b"male" not in bytes(c) for c in stored)  # encrypted at rest
    assert not any("sex" in (i if isinstance(i, dict) else json.loads(i)) for i in inputs)  # never a model input
    assert count(gateway, "SELECT count(*) FROM decision_batch_rows WHERE monitoring_ciphertext IS NOT NULL") == 0


def test_a_low_autonomy_model_never_decides_alone_in_a_batch_either(gateway: Gateway, german_manifest: Path) -> None:
    """Rows of a batch for a model whose decisions wait for an officer are held like single decisions: recorded
    as pending confirmation with a confirmation case each, and no notice until an officer confirms."""
    register_low_autonomy(gateway, german_manifest)
    resp = submit(gateway, json={"rows": rows(gateway, 3, prefix="low")})
    assert resp.status_code == 202, resp.get_json()
    run_batches(gateway)
    view = batch(gateway, resp.get_json()["batch_id"]).get_json()
    assert view["decided_rows"] == 3, view
    ids = "', '".join(r["decision_id"] for r in view["rows"])
    assert count(gateway, f"SELECT count(*) FROM decisions WHERE confirmation = 'pending_confirmation' "
                          f"AND model_version = '2.0.0' AND id IN ('{ids}')") == 3
    assert count(gateway, f"SELECT count(*) FROM reviews WHERE kind = 'confirmation' "
                          f"AND status = 'queued' AND decision_id IN ('{ids}')") == 3
    assert count(gateway, f"SELECT count(*) FROM notifications WHERE decision_id IN ('{ids}')") == 0
    stored = gateway.client.get(f"/v1/decisions/{view['rows'][0]['decision_id']}", headers=gateway.auth("agency_a"))
    assert stored.get_json()["confirmation"] == "pending_confirmation"
