"""A decision records the official who operated it by identity (operator_id), and that official never gets
its review: over the API, in the console (one-time links and OIDC), and for the rows of a batch."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.citizens import notice_token
from tests.support.gateway_server import valid_iin
from tests.test_api_batches import URL as BATCHES
from tests.test_api_batches import run_batches
from tests.web.console_support import official
from tests.web.support import text
from tests.web.test_console import take_next

BACKENDS = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                   indirect=True)
REQUEST = {"point_of_view": "Деректер ескірген.", "contest_grounds": ["wrong_data"]}


def rows(gw: Gateway, sql: str, **params: Any) -> list[Any]:
    with gw.app.app_context():
        found = list(db.session.execute(sa.text(sql), params).all())
        db.session.commit()
    return found


def client_id(gw: Gateway, name: str) -> str:
    return str(rows(gw, "SELECT id FROM api_clients WHERE name = :n", n=name)[0][0])


def add_reviewer(gw: Gateway, name: str) -> str:
    """A second reviewer key (and its name), for the API; its client id is returned."""
    with gw.app.app_context(), write_transaction():
        client, gw.keys[name] = create_key(name=name, role="reviewer", body="Review office")
        return client.id


def decide(gw: Gateway, **changes: Any) -> Any:
    return gw.decide(copy.deepcopy(gw.sample) | changes)


def contested(gw: Gateway, **changes: Any) -> tuple[str, str]:
    """A decision with `changes` and the review the agency requested for it: (decision id, review id)."""
    resp = decide(gw, **changes)
    assert resp.status_code == 201, resp.get_json()
    did = resp.get_json()["decision_id"]
    review = gw.client.post(f"/v1/decisions/{did}/reviews", json=REQUEST, headers=gw.auth("agency_a"))
    assert review.status_code == 201, review.get_json()
    return did, review.get_json()["review_id"]


def claim(gw: Gateway, who: str, **body: Any) -> Any:
    return gw.client.post("/v1/reviews/claim", json=body, headers=gw.auth(who))


# --- the API ----------------------------------------------------------------------------------------------

@BACKENDS
def test_the_operating_reviewer_is_skipped_and_refused_and_another_gets_the_case(gateway: Gateway) -> None:
    a = client_id(gateway, "reviewer")
    add_reviewer(gateway, "reviewer_b")
    did, rid = contested(gateway, operator="Aigerim Officer", operator_id=a)
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("auditor")).get_json()
    assert view["operator_id"] == a and view["operator"] == "Aigerim Officer"  # shown to auditors
    leaf = json.loads(rows(gateway, "SELECT record FROM log_leaves WHERE kind = 'decision:recorded'")[0][0])
    assert leaf["operator_id"] == a and leaf["operator"] == "Aigerim Officer"
    assert rows(gateway, "SELECT operator_id FROM decisions")[0][0] == a

    assert claim(gateway, "reviewer").status_code == 204  # A's take-next skips the case A operated
    named = claim(gateway, "reviewer", review_id=rid)
    assert named.status_code == 403
    assert named.get_json()["error"] == {"code": "reviewer_is_operator",
                                         "message": "a reviewer may not review a decision they operated", "details": None}
    assert rows(gateway, "SELECT status, claimed_by FROM reviews")[0] == ("queued", None)
    taken = claim(gateway, "reviewer_b")  # B gets it
    assert taken.status_code == 200 and taken.get_json()["review_id"] == rid


@BACKENDS
def test_a_recorded_identity_supersedes_the_free_text_name(gateway: Gateway) -> None:
    """The free-text operator is a display name: with operator_id present, only the identity counts."""
    b = add_reviewer(gateway, "reviewer_b")
    # Named "reviewer" (A's key name) in free text, but operated by B: A may review it, B may not.
    _, rid = contested(gateway, operator="reviewer", operator_id=b)
    assert claim(gateway, "reviewer_b").status_code == 204
    assert claim(gateway, "reviewer_b", review_id=rid).status_code == 403
    taken = claim(gateway, "reviewer")
    assert taken.status_code == 200 and taken.get_json()["review_id"] == rid


@BACKENDS
def test_take_next_passes_over_many_own_cases_to_the_next_one(gateway: Gateway) -> None:
    a = client_id(gateway, "reviewer")
    for _ in range(3):
        contested(gateway, operator_id=a)
    _, other = contested(gateway)
    taken = claim(gateway, "reviewer")
    assert taken.status_code == 200 and taken.get_json()["review_id"] == other
    assert claim(gateway, "reviewer").status_code == 204


@BACKENDS
@pytest.mark.parametrize("named", ["agency", "revoked", "unknown_client", "unknown_subject", "a_name"])
def test_an_operator_id_that_names_no_known_official_is_refused(gateway: Gateway, named: str) -> None:
    if named == "agency":  # an agency's own key is a system, not an official
        value = client_id(gateway, "agency_a")
    elif named == "revoked":
        value = add_reviewer(gateway, "gone")
        with gateway.app.app_context():
            db.session.execute(sa.text("UPDATE api_clients SET revoked_at = CURRENT_TIMESTAMP WHERE id = :i"), {"i": value})
            db.session.commit()
    elif named == "unknown_client":
        value = "cli_nobodyHasThisId0000"
    elif named == "unknown_subject":
        value = "oidc:never-signed-in"  # no official with this subject has signed in
    else:
        value = "Aigerim Officer"  # free text belongs in `operator`
    resp = decide(gateway, operator_id=value)
    assert resp.status_code == 422, resp.get_json()
    details = resp.get_json()["error"]["details"]
    assert [d["field"] for d in details] == ["operator_id"]
    if named != "a_name":  # a free-text value is refused by the schema's pattern, before any look-up
        assert details[0]["rule"] == "known_official" and repr(value) in details[0]["message"]
    assert gateway.count("decisions") == 0


# --- batches ----------------------------------------------------------------------------------------------

@BACKENDS
def test_batch_rows_record_their_operator_and_an_unknown_one_is_the_rows_error(gateway: Gateway) -> None:
    a = client_id(gateway, "reviewer")
    body = []
    for i, operator_id in enumerate((a, "cli_nobodyHasThisId0000", None)):
        row: dict[str, Any] = {"idempotency_key": f"op-{i}", "features": copy.deepcopy(gateway.sample["features"]),
                               "subject": {"iin": valid_iin(i), "language": "ru",
                                           "contact": {"email": f"p{i}@example.kz"}}}
        if operator_id is not None:
            row["operator_id"] = operator_id
        body.append(row)
    resp = gateway.client.post(BATCHES, json={"rows": body}, headers=gateway.auth("agency_a"))
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["invalid_rows"] == 1
    run_batches(gateway)
    view = gateway.client.get(f"{BATCHES}/{resp.get_json()['batch_id']}", headers=gateway.auth("agency_a")).get_json()
    by_index = {r["index"]: r for r in view["rows"]}
    assert [by_index[i]["status"] for i in range(3)] == ["decided", "invalid", "decided"]
    assert by_index[1]["errors"][0]["field"] == "operator_id" and by_index[1]["errors"][0]["rule"] == "known_official"
    recorded = dict(rows(gateway, "SELECT id, operator_id FROM decisions"))
    assert recorded == {by_index[0]["decision_id"]: a, by_index[2]["decision_id"]: None}
    leaf = json.loads(rows(gateway, "SELECT record FROM log_leaves WHERE kind = 'decision:recorded' AND object_id = :d",
                           d=by_index[0]["decision_id"])[0][0])
    assert leaf["operator_id"] == a
    # The reviewer who operated the batch row never gets its review.
    did = by_index[0]["decision_id"]
    assert gateway.client.post(f"/v1/decisions/{did}/reviews", json=REQUEST, headers=gateway.auth("agency_a")).status_code == 201
    assert claim(gateway, "reviewer").status_code == 204


@BACKENDS
def test_a_batch_file_has_an_operator_id_column(gateway: Gateway) -> None:
    a = client_id(gateway, "reviewer")
    features = gateway.sample["features"]
    header = ["idempotency_key", "iin", "language", "email", "operator", "operator_id", *features]
    lines = [",".join(header)]
    for i, operator_id in enumerate((a, "oidc:nobody")):
        lines.append(",".join([f"csv-{i}", valid_iin(i), "ru", f"p{i}@example.kz", "Officer", operator_id,
                               *(str(v) for v in features.values())]))
    resp = gateway.client.post(BATCHES, data="\n".join(lines).encode(), headers={**gateway.auth("agency_a"),
                                                                                "Content-Type": "text/csv"})
    assert resp.status_code == 202, resp.get_json()
    run_batches(gateway)
    view = gateway.client.get(f"{BATCHES}/{resp.get_json()['batch_id']}", headers=gateway.auth("agency_a")).get_json()
    by_index = {r["index"]: r for r in view["rows"]}
    assert [by_index[i]["status"] for i in range(2)] == ["decided", "invalid"]
    assert by_index[1]["errors"][0]["field"] == "operator_id"
    assert rows(gateway, "SELECT operator, operator_id FROM decisions") == [("Officer", a)]


# --- the console: one-time links --------------------------------------------------------------------------

def person_contests(gw: Gateway, decision_id: str) -> None:
    browser = gw.app.test_client()
    assert browser.get(f"/d/{decision_id}?token={notice_token(gw, decision_id)}").status_code == 303
    page = browser.get(f"/d/{decision_id}/review").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert browser.post(f"/d/{decision_id}/review", data={"csrf_token": csrf, "point_of_view": "Нет.",
                                                          "contest_grounds": ["other"], "language": "ru"}).status_code == 303


def named_claim(browser: FlaskClient, review_id: str) -> Any:
    page = browser.get(f"/console/cases/{review_id}?lang=en").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return browser.post(f"/console/cases/{review_id}/claim", data={"csrf_token": csrf})


@BACKENDS
def test_in_the_console_the_operator_never_gets_the_case_and_another_reviewer_does(gateway: Gateway) -> None:
    a = client_id(gateway, "reviewer")
    with gateway.app.app_context(), write_transaction():
        create_key(name="reviewer_b", role="reviewer", body="Review office")
    resp = decide(gateway, operator="Aigerim Officer", operator_id=a)
    assert resp.status_code == 201, resp.get_json()
    person_contests(gateway, resp.get_json()["decision_id"])
    review_id = rows(gateway, "SELECT id FROM reviews")[0][0]

    reviewer_a = official(gateway, "reviewer")
    assert take_next(reviewer_a) == "/console?none=1"
    refused = named_claim(reviewer_a, review_id)
    assert refused.status_code == 403 and "You operated this decision" in text(refused)
    assert rows(gateway, "SELECT status FROM reviews")[0][0] == "queued"

    reviewer_b = official(gateway, "reviewer_b")
    assert take_next(reviewer_b) == f"/console/cases/{review_id}"
    page = reviewer_b.get(f"/console/cases/{review_id}")
    assert f'<code id="operator-id">{a}</code>' in page.get_data(as_text=True)
    assert rows(gateway, "SELECT status, claimed_by FROM reviews")[0] == ("claimed", client_id(gateway, "reviewer_b"))
    auditor = official(gateway, "auditor")  # auditors see who operated it, by name and identity
    audit_page = auditor.get(f"/audit/decisions/{resp.get_json()['decision_id']}").get_data(as_text=True)
    assert f'Aigerim Officer <code id="operator-id">{a}</code>' in audit_page
