"""The person withdraws an open review request (POST …/reviews/{r}/withdraw); late requests are flagged."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.citizens import notice_token

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
REQUEST = {"point_of_view": "Деректер ескірген.", "contest_grounds": ["wrong_data"]}


def person(gw: Gateway, iin: str = "921029350851") -> tuple[str, dict[str, str]]:
    body = gw.sample | {"subject": gw.sample["subject"] | {"iin": iin}}
    created = gw.decide(body).get_json()
    token = notice_token(gw, created["decision_id"])  # the person's link comes with the notice
    return created["decision_id"], {"Authorization": f"Bearer {token}"}


def requested(gw: Gateway, did: str, who: dict[str, str]) -> dict[str, Any]:
    resp = gw.client.post(f"/v1/decisions/{did}/reviews", json=REQUEST, headers=who)
    assert resp.status_code == 201, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def rows(gw: Gateway, sql: str, **params: Any) -> list[Any]:
    with gw.app.app_context():
        return list(db.session.execute(sa.text(sql), params).all())


def test_the_person_withdraws_an_open_review(gateway: Gateway) -> None:
    did, me = person(gateway)
    review = requested(gateway, did, me)
    assert review["late"] is False
    resp = gateway.client.post(f"/v1/decisions/{did}/reviews/{review['review_id']}/withdraw", headers=me)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "withdrawn" and body["review_id"] == review["review_id"]
    # One notice per channel, and one audit leaf naming who withdrew it, written with the change.
    notices = rows(gateway, "SELECT kind, context FROM notifications WHERE decision_id = :d AND kind = 'review_withdrawn'", d=did)
    assert len(notices) == 1
    context = notices[0].context if isinstance(notices[0].context, dict) else json.loads(notices[0].context)
    assert context["review_id"] == review["review_id"]  # (with the deadline it announced, as every review notice)
    leaves = rows(gateway, "SELECT record FROM log_leaves WHERE kind = 'review:withdrawn' AND object_id = :r", r=review["review_id"])
    assert len(leaves) == 1 and json.loads(leaves[0].record)["previous_status"] == "queued"
    # Not open any more: a second withdrawal conflicts; the queue no longer offers it; a new request may be made.
    again = gateway.client.post(f"/v1/decisions/{did}/reviews/{review['review_id']}/withdraw", headers=me)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "invalid_transition"
    assert rows(gateway, "SELECT count(*) FROM log_leaves WHERE kind = 'review:withdrawn'")[0][0] == 1
    assert gateway.client.post("/v1/reviews/claim", json={}, headers=gateway.auth("reviewer")).status_code == 204
    assert gateway.client.post(f"/v1/decisions/{did}/reviews", json=REQUEST, headers=me).status_code == 201


def test_a_claimed_review_can_be_withdrawn_and_the_reviewer_can_no_longer_resolve_it(gateway: Gateway) -> None:
    did, me = person(gateway)
    review = requested(gateway, did, me)
    case = gateway.client.post("/v1/reviews/claim", json={}, headers=gateway.auth("reviewer")).get_json()
    assert case["review_id"] == review["review_id"]
    assert gateway.client.post(f"/v1/decisions/{did}/reviews/{review['review_id']}/withdraw", headers=me).status_code == 200
    resolve = gateway.client.post(f"/v1/reviews/{review['review_id']}/resolve", headers=gateway.auth("reviewer"), json={
        "fencing_token": case["fencing_token"], "outcome": "upheld", "reasons": {"kk": "Дұрыс."},
        "point_of_view_considered": True})
    assert resolve.status_code == 409 and resolve.get_json()["error"]["code"] == "invalid_transition"


def test_a_resolved_review_cannot_be_withdrawn(gateway: Gateway) -> None:
    did, me = person(gateway)
    review = requested(gateway, did, me)
    case = gateway.client.post("/v1/reviews/claim", json={}, headers=gateway.auth("reviewer")).get_json()
    assert gateway.client.post(f"/v1/reviews/{review['review_id']}/resolve", headers=gateway.auth("reviewer"), json={
        "fencing_token": case["fencing_token"], "outcome": "upheld", "reasons": {"kk": "Дұрыс."},
        "point_of_view_considered": True}).status_code == 200
    resp = gateway.client.post(f"/v1/decisions/{did}/reviews/{review['review_id']}/withdraw", headers=me)
    assert resp.status_code == 409
    assert resp.get_json()["error"] == {"code": "invalid_transition", "message": "cannot withdraw a review that is resolved",
                                        "details": {"status": "resolved"}}


def test_only_the_person_withdraws_everyone_else_gets_404_or_403(gateway: Gateway) -> None:
    did, me = person(gateway)
    other_did, other = person(gateway, "061211600012")
    review = requested(gateway, did, me)
    url = f"/v1/decisions/{did}/reviews/{review['review_id']}/withdraw"
    missing = gateway.client.post(f"/v1/decisions/{did}/reviews/rev_AAAAAAAAAAAAAAAAAAAAAA/withdraw", headers=me)
    assert missing.status_code == 404
    for who in (other, gateway.auth("agency_b"), gateway.auth("admin")):
        resp = gateway.client.post(url, headers=who)
        assert resp.status_code == 404 and resp.data == missing.data
    # The agency that made it and the staff see the review but may not withdraw the person's request.
    for who in ("agency_a", "reviewer", "auditor"):
        assert gateway.client.post(url, headers=gateway.auth(who)).status_code == 403
    # A review named under another decision is not found, even for its own person.
    assert gateway.client.post(f"/v1/decisions/{other_did}/reviews/{review['review_id']}/withdraw",
                               headers=me).status_code == 404
    assert gateway.client.post(url).status_code == 401
    assert rows(gateway, "SELECT status FROM reviews WHERE id = :r", r=review["review_id"])[0][0] == "queued"


def test_a_request_after_the_window_in_the_notice_is_accepted_and_flagged_late(gateway: Gateway) -> None:
    did, me = person(gateway)
    window = int(gateway.app.config["REVIEW_REQUEST_WINDOW_DAYS"])
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE decisions SET created_at = :at WHERE id = :d"),
                           {"at": dt.datetime.now(dt.UTC) - dt.timedelta(days=window + 2), "d": did})
        db.session.commit()
    review = requested(gateway, did, me)
    assert review["late"] is True
    assert gateway.client.get(f"/v1/reviews/{review['review_id']}", headers=gateway.auth("agency_a")).get_json()["late"] is True
    leaf = rows(gateway, "SELECT record FROM log_leaves WHERE kind = 'review:requested' AND object_id = :r", r=review["review_id"])
    assert json.loads(leaf[0].record)["late"] is True
