"""Lists that grow are paged by keyset: `after` is the previous page's `next_after`, and the pages join up."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from gateway.ids import encode_cursor, utcnow
from gateway.manifest import load_manifest
from tests.conftest import Gateway
from tests.support.citizens import IdentityProvider
from tests.support.registration import open_incident

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
IIN = "921029350851"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gateway_extra(idp: IdentityProvider) -> dict[str, Any]:
    return idp.config()


def pages(gw: Gateway, url: str, headers: dict[str, str], key: str, limit: int) -> list[list[Any]]:
    found, after = [], None
    while True:
        query: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        resp = gw.client.get(url, headers=headers, query_string=query)
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        found.append(body[key])
        after = body["next_after"]
        if after is None:
            return found


def test_my_decisions_and_the_access_log_page_by_keyset(gateway: Gateway, idp: IdentityProvider) -> None:
    made = []
    for i in range(7):
        body = copy.deepcopy(gateway.sample)
        body["subject"]["iin"] = IIN
        resp = gateway.decide(body, key=f"keyset-{i}")
        assert resp.status_code == 201
        made.append(resp.get_json()["decision_id"])
    citizen = {"Authorization": f"Bearer {idp.token(IIN, exp=int(time.time()) + 3600)}"}

    by_offset = gateway.client.get("/v1/me/decisions", headers=citizen, query_string={"limit": 100}).get_json()
    keyset = pages(gateway, "/v1/me/decisions", citizen, "decisions", limit=3)
    assert [len(p) for p in keyset] == [3, 3, 1]
    assert [d["decision_id"] for p in keyset for d in p] == [d["decision_id"] for d in by_offset["decisions"]]
    assert sorted(d["decision_id"] for d in by_offset["decisions"]) == sorted(made)

    did = made[0]
    for _ in range(4):
        assert gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("auditor")).status_code == 200
    whole = gateway.client.get(f"/v1/decisions/{did}/access-log", headers=gateway.auth("auditor"),
                               query_string={"limit": 100}).get_json()["events"]
    log_pages = pages(gateway, f"/v1/decisions/{did}/access-log", gateway.auth("auditor"), "events", limit=2)
    # Each page read is itself recorded (after the page): the pages hold at least what the whole read saw.
    joined = [e for p in log_pages for e in p]
    assert joined[:len(whole)] == whole and len(joined) >= len(whole) >= 4

    bad = gateway.client.get("/v1/me/decisions", headers=citizen, query_string={"after": "yesterday"})
    assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["field"] == "after"


# --- every other list: the review and confirmation queues, the register, the incident register ---------------

def _register_as(gw: Gateway, german_manifest: Path, name: str, **changes: Any) -> None:
    """The example's model registered and activated under another name (its blobs are stored already)."""
    m, _ = load_manifest(german_manifest)
    body = m.model_dump(mode="json") | {"name": name, "activate": True} | changes
    for key in [k for k, v in changes.items() if v is None]:  # None: leave the field out (its default)
        body.pop(key)
    resp = gw.client.post("/v1/models", json=body, headers=gw.auth("admin"))
    assert resp.status_code == 201, resp.get_json()


def _review_queue(gw: Gateway, n: int) -> list[str]:
    made = []
    for _ in range(n):
        did = gw.decide().get_json()["decision_id"]
        resp = gw.client.post(f"/v1/decisions/{did}/reviews", headers=gw.auth("agency_a"),
                              json={"point_of_view": "Менің табысым жоғарырақ.", "contest_grounds": ["wrong_data"]})
        assert resp.status_code == 201, resp.get_json()
        made.append(resp.get_json()["review_id"])
    return made


def test_the_review_queue_pages_by_keyset_in_due_order_and_inserts_do_not_shift_pages(gateway: Gateway) -> None:
    made = _review_queue(gateway, 5)
    with gateway.app.app_context():  # two cases share one due date: the request time and id break the tie
        db.session.execute(sa.text("UPDATE reviews SET due_at = (SELECT due_at FROM reviews WHERE id = :a) "
                                   "WHERE id = :b"), {"a": made[1], "b": made[3]})
        db.session.commit()
    reviewer = gateway.auth("reviewer")
    whole = gateway.client.get("/v1/reviews", headers=reviewer, query_string={"limit": 100}).get_json()
    assert whole["next_after"] is None and sorted(r["review_id"] for r in whole["reviews"]) == sorted(made)

    first = gateway.client.get("/v1/reviews", headers=reviewer, query_string={"limit": 2}).get_json()
    _review_queue(gateway, 1)  # a new case lands at the queue's end (due last): the next pages do not shift
    rest = pages(gateway, "/v1/reviews", reviewer, "reviews", limit=2)
    assert [r["review_id"] for r in first["reviews"]] == [r["review_id"] for r in rest[0]]
    rest = [[r["review_id"] for r in p] for p in rest]
    assert [i for p in rest for i in p][:5] == [r["review_id"] for r in whole["reviews"]]
    assert [len(p) for p in rest] == [2, 2, 2] and len({i for p in rest for i in p}) == 6
    after = gateway.client.get("/v1/reviews", headers=reviewer,
                               query_string={"limit": 2, "after": first["next_after"]}).get_json()
    assert [r["review_id"] for r in after["reviews"]] == [r["review_id"] for r in whole["reviews"][2:4]]
    assert after["total"] == 6  # the total counts the whole queue, not what is after the cursor


def test_the_confirmation_queue_pages_by_keyset(gateway: Gateway, german_manifest: Path) -> None:
    _register_as(gateway, german_manifest, "german-credit", version="2.0.0", autonomy="low", role_of_ai=None)
    for _ in range(3):
        made = gateway.decide()
        assert made.get_json()["confirmation"] == "pending_confirmation"
    reviewer = gateway.auth("reviewer")
    whole = gateway.client.get("/v1/confirmations", headers=reviewer).get_json()["reviews"]
    paged = pages(gateway, "/v1/confirmations", reviewer, "reviews", limit=2)
    assert [len(p) for p in paged] == [2, 1]
    assert [r["review_id"] for p in paged for r in p] == [r["review_id"] for r in whole]


def test_the_model_register_pages_by_keyset_in_name_order(gateway: Gateway, german_manifest: Path) -> None:
    for name in ("gc-b", "gc-a", "gc-c"):
        _register_as(gateway, german_manifest, name)
    paged = pages(gateway, "/v1/models", {}, "models", limit=2)
    assert [len(p) for p in paged] == [2, 2]
    assert [m["name"] for p in paged for m in p] == ["gc-a", "gc-b", "gc-c", "german-credit"]
    listing = gateway.client.get("/v1/models", query_string={"limit": 3}).get_json()
    assert listing["total"] == 4 and listing["next_after"] is not None


def test_the_incident_register_pages_by_keyset_oldest_first(gateway: Gateway) -> None:
    made = [open_incident(gateway.client, gateway.auth("admin")) for _ in range(5)]
    paged = pages(gateway, "/v1/incidents", gateway.auth("auditor"), "incidents", limit=2)
    assert [len(p) for p in paged] == [2, 2, 1]
    assert [i["incident_id"] for p in paged for i in p] == made


def test_an_agencys_batches_page_by_keyset_newest_first(gateway: Gateway) -> None:
    url = "/v1/models/german-credit/decision-batches"
    made = []
    for i in range(5):
        row = {"idempotency_key": f"keyset-batch-{i}", **copy.deepcopy(gateway.sample)}
        resp = gateway.client.post(url, json={"rows": [row]}, headers=gateway.auth("agency_a"))
        assert resp.status_code == 202, resp.get_json()
        made.append(resp.get_json()["batch_id"])
    paged = pages(gateway, url, gateway.auth("agency_a"), "batches", limit=2)
    assert [len(p) for p in paged] == [2, 2, 1]
    assert [b["batch_id"] for p in paged for b in p] == made[::-1]
    assert paged[0][0]["status"] == "queued" and paged[0][0]["total_rows"] == 1
    assert pages(gateway, url, gateway.auth("agency_b"), "batches", limit=2) == [[]]  # another agency's: none


@pytest.mark.parametrize("url", ["/v1/reviews", "/v1/confirmations", "/v1/models", "/v1/incidents",
                                 "/v1/models/german-credit/decision-batches"])
def test_a_bad_cursor_or_limit_is_refused_naming_the_field(gateway: Gateway, url: str) -> None:
    auditor = gateway.auth("agency_a" if "decision-batches" in url else "auditor")
    # Not cursors, and cursors of another list (the register's is a name; the others' a time and an id).
    foreign = encode_cursor("german-credit") if url != "/v1/models" else encode_cursor(utcnow(), "inc_x")
    bad_cursors = ["yesterday!", "eA", "bm90IGpzb24", foreign, "WyJ0MTIzIiwic3giLCJzeSIsInN6Il0", "WyJpMSIsImkyIiwiaTMiXQ"]
    for cursor in bad_cursors:
        resp = gateway.client.get(url, headers=auditor, query_string={"after": cursor})
        assert resp.status_code == 422, (cursor, resp.get_json())
        assert resp.get_json()["error"]["details"][0]["field"] == "after"
    for limit in (0, 101, "many"):
        resp = gateway.client.get(url, headers=auditor, query_string={"limit": limit})
        assert resp.status_code == 422 and resp.get_json()["error"]["details"][0]["field"] == "limit"
    assert gateway.count("access_events") == 0  # nothing recorded on a refused read
