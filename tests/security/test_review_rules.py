"""Findings 7 and 8: extending a review skipped the lease and the operator rule; the operator rule compared
names as exact strings. Each test tries the attack again."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway
from tests.security.support import claimed, decided, new_key, query, requested

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def extend(gw: Gateway, review_id: str, who: str, **body: object) -> object:
    until = (dt.date.today() + dt.timedelta(days=40)).isoformat()
    return gw.client.post(f"/v1/reviews/{review_id}/extend", headers=gw.auth(who),
                          json={"until": until, "reason": "Expert opinion requested"} | body)


def test_a_reviewer_who_does_not_hold_the_case_cannot_extend_it(gateway: Gateway) -> None:
    new_key(gateway, "reviewer-2", "reviewer", "Review office")
    rid = requested(gateway, decided(gateway)["decision_id"])
    # Queued (nobody holds it): no lease, no extension.
    assert extend(gateway, rid, "reviewer-2").status_code == 422  # fencing_token is required
    assert extend(gateway, rid, "reviewer-2", fencing_token=1).status_code == 409
    token = claimed(gateway, rid)  # the first reviewer holds it now
    stolen = extend(gateway, rid, "reviewer-2", fencing_token=token)
    assert stolen.status_code == 409 and stolen.get_json()["error"]["code"] == "stale_lease"
    ok = extend(gateway, rid, "reviewer", fencing_token=token)
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["extended_until"] is not None


def test_the_decisions_operator_cannot_extend_their_own_case(gateway: Gateway) -> None:
    new_key(gateway, "officer-7", "reviewer", "Review office")
    decision = decided(gateway, operator="officer-7")
    rid = requested(gateway, decision["decision_id"])
    token = claimed(gateway, rid)
    # Even with the holder's token in hand, the operator is refused before the lease is looked at.
    refused = extend(gateway, rid, "officer-7", fencing_token=token)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "reviewer_is_operator"
    named = gateway.client.post("/v1/reviews/claim", json={"review_id": rid}, headers=gateway.auth("officer-7"))
    assert named.status_code == 403 and named.get_json()["error"]["code"] == "reviewer_is_operator"
    # The operator holding a running lease of their own (taken before the rule knew them): still never acts.
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE reviews SET claimed_by = (SELECT id FROM api_clients WHERE name = 'officer-7'),"
                                   " lease_expires_at = :later WHERE id = :r"),
                           {"later": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10), "r": rid})
        db.session.commit()
    held = {"fencing_token": token}
    for action, body in (("extend", None), ("resolve", {"outcome": "upheld", "reasons": {"kk": "Себеп.", "ru": "Причина."},
                                                        "point_of_view_considered": True}), ("rescore", {}),
                         ("renew", {})):
        resp = (extend(gateway, rid, "officer-7", **held) if body is None else
                gateway.client.post(f"/v1/reviews/{rid}/{action}", json=held | body, headers=gateway.auth("officer-7")))
        assert resp.status_code == 403, (action, resp.get_json())
        assert resp.get_json()["error"]["code"] == "reviewer_is_operator"
    assert query(gateway, "SELECT status, extended_until FROM reviews WHERE id = :r", r=rid)[0] == ("claimed", None)
    assert query(gateway, "SELECT count(*) FROM notifications WHERE kind = 'review_extended'")[0][0] == 0


@pytest.mark.parametrize("written", ["Reviewer-2", " reviewer-2", "reviewer-2 ", "REVIEWER-2", "ｒｅｖｉｅｗｅｒ-2",
                                     "reviewer\u200b-2", "Reviewer-2\t"])
def test_the_operator_rule_compares_normalised_identities(gateway: Gateway, written: str) -> None:
    new_key(gateway, "reviewer-2", "reviewer", "Review office")
    # The operator's name as the agency's system wrote it (tabs are refused at intake: give it a line).
    operator = written.replace("\t", " ")
    rid = requested(gateway, decided(gateway, operator=operator)["decision_id"])
    named = gateway.client.post("/v1/reviews/claim", json={"review_id": rid}, headers=gateway.auth("reviewer-2"))
    assert named.status_code == 403, named.get_json()
    assert named.get_json()["error"]["code"] == "reviewer_is_operator"
    # Claiming "the next case" must skip it too, and leave it to another reviewer.
    assert gateway.client.post("/v1/reviews/claim", json={}, headers=gateway.auth("reviewer-2")).status_code == 204
    assert claimed(gateway, rid, "reviewer") >= 1
