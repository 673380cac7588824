"""Human review over HTTP, on SQLite and PostgreSQL: request, queue, claim, resolve, extend."""

from __future__ import annotations

import copy
import datetime as dt
import json
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.manifest import load_manifest
from gateway.workdays import WorkCalendar
from tests.conftest import Gateway

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
ALMATY = zoneinfo.ZoneInfo("Asia/Almaty")
REQUEST = {"point_of_view": "Менің табысым жоғарырақ, деректер ескірген.", "contest_grounds": ["wrong_data"],
           "corrected_data": {"savings": "500_to_1000"}}


def decided(gw: Gateway, **changes: Any) -> str:
    body = copy.deepcopy(gw.sample) | changes
    resp = gw.decide(body)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["decision_id"])


def request(gw: Gateway, did: str, body: dict[str, Any] | None = None, who: str = "agency_a") -> Any:
    return gw.client.post(f"/v1/decisions/{did}/reviews", json=body or REQUEST, headers=gw.auth(who))


def claim(gw: Gateway, who: str = "reviewer", **body: Any) -> Any:
    return gw.client.post("/v1/reviews/claim", json=body, headers=gw.auth(who))


def act(gw: Gateway, rid: str, action: str, body: dict[str, Any], who: str = "reviewer") -> Any:
    return gw.client.post(f"/v1/reviews/{rid}/{action}", json=body, headers=gw.auth(who))


def rows(gw: Gateway, sql: str, **params: Any) -> list[Any]:
    with gw.app.app_context():
        return list(db.session.execute(sa.text(sql), params).all())


def resolution(token: int, **changes: Any) -> dict[str, Any]:
    return {"fencing_token": token, "outcome": "changed", "new_outcome": "approved",
            "reasons": {"kk": "Жинақ шотының деректері түзетілді; табыс жеткілікті."},
            "point_of_view_considered": True} | changes


def second_reviewer(gw: Gateway) -> None:
    with gw.app.app_context(), write_transaction():
        _, gw.keys["reviewer_2"] = create_key(name=f"reviewer-2-{id(gw)}", role="reviewer", body="Review office")


def test_a_request_is_queued_with_its_deadline_notice_and_audit_leaf(gateway: Gateway) -> None:
    did = decided(gateway)
    resp = request(gateway, did)
    assert resp.status_code == 201, resp.get_json()
    review = resp.get_json()
    assert review["status"] == "queued" and review["contest_grounds"] == ["wrong_data"] and review["overdue"] is False
    requested = dt.datetime.fromisoformat(review["requested_at"].replace("Z", "+00:00"))
    due_day = WorkCalendar().add_working_days(requested.astimezone(ALMATY).date(), 15)
    expected = dt.datetime.combine(due_day + dt.timedelta(days=1), dt.time(0), tzinfo=ALMATY).astimezone(dt.UTC)
    assert review["due_at"] == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")
    notes = rows(gateway, "SELECT kind, channel, language, context FROM notifications WHERE kind = 'review_received'")
    assert [(n.kind, n.channel, n.language) for n in notes] == [("review_received", "email", "kk")]
    context = notes[0].context if isinstance(notes[0].context, dict) else json.loads(notes[0].context)
    # Issue 11 (finding 3): the announced deadline is stored with the notice (its last day, and the instant).
    assert context == {"review_id": review["review_id"], "due_at": expected.isoformat(),
                       "due_on": due_day.isoformat()}
    assert rows(gateway, "SELECT object_id FROM log_leaves WHERE kind = 'review:requested'")[0].object_id == review["review_id"]
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert view["reviews"][0]["review_id"] == review["review_id"] and view["reviews"][0]["due_at"] == review["due_at"]


def test_one_open_review_per_decision(gateway: Gateway) -> None:
    did = decided(gateway)
    first = request(gateway, did).get_json()
    again = request(gateway, did)
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "review_open"
    assert again.get_json()["error"]["details"] == {"review_id": first["review_id"]}


def test_only_the_decisions_side_may_request(gateway: Gateway) -> None:
    did = decided(gateway)
    for who in ("agency_b", "reviewer", "admin"):  # they don't see it: the same 404 as for no decision
        assert request(gateway, did, who=who).status_code == 404
    assert request(gateway, did, who="auditor").status_code == 403  # sees every decision, read-only


@pytest.mark.parametrize(
    ("change", "field"),
    [({"corrected_data": {"shoe_size": 40}}, "corrected_data.shoe_size"),
     ({"corrected_data": {"age": 300}}, "corrected_data.age"),
     ({"contest_grounds": ["bad_luck"]}, "contest_grounds.0"),
     ({"contest_grounds": []}, "contest_grounds"),
     ({"point_of_view": ""}, "point_of_view")],
)
def test_invalid_requests_are_422(gateway: Gateway, change: dict[str, Any], field: str) -> None:
    resp = request(gateway, decided(gateway), REQUEST | change)
    assert resp.status_code == 422
    assert field in [d["field"] for d in resp.get_json()["error"]["details"]]


def test_claim_gives_the_reviewer_everything_needed_to_decide(gateway: Gateway) -> None:
    did = decided(gateway)
    rid = request(gateway, did).get_json()["review_id"]
    resp = claim(gateway)
    assert resp.status_code == 200
    case = resp.get_json()
    assert case["review_id"] == rid and case["status"] == "claimed" and case["fencing_token"] == 1
    assert case["point_of_view"] == REQUEST["point_of_view"] and case["corrected_data"] == REQUEST["corrected_data"]
    assert case["decision"]["inputs"] == gateway.sample["features"] and case["decision"]["outcome"] == "declined"
    assert set(case["explanation"]["attributions"]) >= {"existing_credits", "age"}  # reviewers see everything (withheld too)
    assert case["notice"]["contact"] and case["outcomes"] == ["approved", "declined"]
    assert claim(gateway).status_code == 204  # nothing else waiting


def test_the_case_renders_in_the_reviewers_language(gateway: Gateway, german_manifest: Path) -> None:
    """?lang=, then Accept-Language, then Russian: the reviewer's language, not the person's (nor always Russian)."""
    manifest, _ = load_manifest(german_manifest)
    did = decided(gateway)
    rid = request(gateway, did).get_json()["review_id"]
    person = gateway.sample["subject"]["language"]

    def labels(case: dict[str, Any], lang: str) -> list[str]:
        explanation = case["explanation"]
        assert explanation["language"] == lang and explanation["factors"], explanation
        assert case["language"] == person  # the request keeps the person's own language
        want = [manifest.feature(f["feature"]).labels.get(lang) for f in explanation["factors"]]
        assert [f["label"] for f in explanation["factors"]] == want
        return want

    reviewer = gateway.auth("reviewer")
    case = gateway.client.post("/v1/reviews/claim?lang=en", json={}, headers=reviewer).get_json()
    english = labels(case, "en")
    token = {"fencing_token": case["fencing_token"]}
    kazakh = labels(gateway.client.post(f"/v1/reviews/{rid}/renew", json=token,
                                        headers={**reviewer, "Accept-Language": "kk"}).get_json(), "kk")
    russian = labels(gateway.client.post(f"/v1/reviews/{rid}/renew", json=token, headers=reviewer).get_json(), "ru")
    assert len({tuple(english), tuple(kazakh), tuple(russian)}) == 3


@pytest.mark.parametrize(("who", "status"), [("agency_a", 403), ("auditor", 403), ("admin", 404)])
def test_only_reviewers_work_the_queue(gateway: Gateway, who: str, status: int) -> None:
    rid = request(gateway, decided(gateway)).get_json()["review_id"]
    assert claim(gateway, who).status_code == 403
    # 403 for those who see the case (its agency, the auditor), the 404 of a missing case for the others
    assert act(gateway, rid, "resolve", resolution(1), who).status_code == status


def test_the_resolution_supersedes_the_outcome_and_keeps_the_original(gateway: Gateway) -> None:
    did = decided(gateway)
    rid = request(gateway, did).get_json()["review_id"]
    token = claim(gateway).get_json()["fencing_token"]
    resp = act(gateway, rid, "resolve", resolution(token))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["outcome"] == "changed" and resp.get_json()["status"] == "resolved"
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert view["outcome"] == "declined" and view["effective_outcome"] == "approved"
    assert view["effective_outcome_set_by"] == rid
    assert view["reviews"][0]["reasons"] == resolution(token)["reasons"]
    assert view["reviews"][0]["resolved_by"] and view["reviews"][0]["resolved_at"]
    assert [n.kind for n in rows(gateway, "SELECT kind FROM notifications WHERE kind = 'review_outcome'")] == ["review_outcome"]
    leaf = json.loads(rows(gateway, "SELECT record FROM log_leaves WHERE kind = 'review:resolved'")[0].record)
    assert leaf["previous_effective_outcome"] == "declined" and leaf["effective_outcome"] == "approved"
    again = act(gateway, rid, "resolve", resolution(token, outcome="upheld", new_outcome=None))
    assert again.status_code == 409 and again.get_json()["error"]["details"] == {"status": "resolved"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"point_of_view_considered": False}, "point_of_view_considered"),
     ({"reasons": {"en": "Data corrected."}}, "reasons.kk"),
     ({"new_outcome": "declined"}, "new_outcome"),
     ({"new_outcome": "maybe"}, "new_outcome"),
     ({"outcome": "upheld"}, "new_outcome"),
     ({"outcome": "annulled"}, "new_outcome")],
)
def test_a_resolution_must_be_complete_and_consistent(gateway: Gateway, changes: dict[str, Any], field: str) -> None:
    did = decided(gateway)
    rid = request(gateway, did).get_json()["review_id"]
    token = claim(gateway).get_json()["fencing_token"]
    resp = act(gateway, rid, "resolve", resolution(token, **changes))
    assert resp.status_code == 422 and field in [d["field"] for d in resp.get_json()["error"]["details"]]
    assert rows(gateway, "SELECT status FROM reviews")[0].status == "claimed"  # nothing changed
    annulled = act(gateway, rid, "resolve", resolution(token, outcome="annulled", new_outcome=None))
    assert annulled.status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()["effective_outcome"] == "annulled"


def test_a_holder_whose_lease_ran_out_cannot_resolve(gateway: Gateway) -> None:
    second_reviewer(gateway)
    did = decided(gateway)
    rid = request(gateway, did).get_json()["review_id"]
    first = claim(gateway, lease_seconds=30).get_json()["fencing_token"]
    assert claim(gateway, "reviewer_2", review_id=rid).status_code == 409  # held, lease running
    with gateway.app.app_context():  # the first reviewer is paused past the lease
        db.session.execute(sa.text("UPDATE reviews SET lease_expires_at = :t"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)})
        db.session.commit()
    assert act(gateway, rid, "renew", {"fencing_token": first}).get_json()["error"]["code"] == "stale_lease"
    taken = claim(gateway, "reviewer_2")
    assert taken.status_code == 200 and taken.get_json()["fencing_token"] == first + 1
    stale = act(gateway, rid, "resolve", resolution(first))
    assert stale.status_code == 409 and stale.get_json()["error"]["code"] == "stale_lease"
    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert view["effective_outcome"] == "declined" and view["reviews"][0]["status"] == "claimed"
    assert act(gateway, rid, "resolve", resolution(first + 1), "reviewer_2").status_code == 200


def test_release_renew_and_invalid_transitions(gateway: Gateway) -> None:
    rid = request(gateway, decided(gateway)).get_json()["review_id"]
    queued = act(gateway, rid, "renew", {"fencing_token": 1})
    assert queued.status_code == 409 and queued.get_json()["error"] == {
        "code": "invalid_transition", "message": "cannot renew a review that is queued", "details": {"status": "queued"}}
    token = claim(gateway).get_json()["fencing_token"]
    renewed = act(gateway, rid, "renew", {"fencing_token": token, "lease_seconds": 600})
    assert renewed.status_code == 200 and renewed.get_json()["fencing_token"] == token
    assert act(gateway, rid, "release", {"fencing_token": token}).get_json()["status"] == "queued"
    assert claim(gateway).get_json()["fencing_token"] == token + 1
    assert act(gateway, "rev_nothing", "release", {"fencing_token": 1}).status_code == 404


def test_the_reviewer_may_not_be_the_operator(gateway: Gateway) -> None:
    did = decided(gateway, operator="reviewer")  # the reviewer key's name
    rid = request(gateway, did).get_json()["review_id"]
    assert claim(gateway).status_code == 204  # the next-case claim skips it
    named = claim(gateway, review_id=rid)
    assert named.status_code == 403 and named.get_json()["error"]["code"] == "reviewer_is_operator"


def test_the_deadline_is_extended_once_within_two_months(gateway: Gateway) -> None:
    rid = request(gateway, decided(gateway)).get_json()["review_id"]
    # Issue 11 (finding 7): extending is an action after a claim, with the holder's fencing token.
    token = claim(gateway, review_id=rid).get_json()["fencing_token"]
    review = gateway.client.get("/v1/reviews", headers=gateway.auth("reviewer")).get_json()["reviews"][0]
    requested = dt.datetime.fromisoformat(review["requested_at"].replace("Z", "+00:00")).astimezone(ALMATY).date()
    month = requested.month + 2
    latest = dt.date(requested.year + (month - 1) // 12, (month - 1) % 12 + 1, min(requested.day, 28))
    too_late = act(gateway, rid, "extend", {"fencing_token": token, "until": (latest + dt.timedelta(days=4)).isoformat(), "reason": "x"})
    assert too_late.status_code == 422 and too_late.get_json()["error"]["details"][0]["field"] == "until"
    too_early = act(gateway, rid, "extend", {"fencing_token": token, "until": requested.isoformat(), "reason": "x"})
    assert too_early.status_code == 422
    ok = act(gateway, rid, "extend", {"fencing_token": token, "until": latest.isoformat(), "reason": "Expert opinion requested"})
    assert ok.status_code == 200 and ok.get_json()["extension_reason"] == "Expert opinion requested"
    assert ok.get_json()["effective_due_at"] == ok.get_json()["extended_until"] != ok.get_json()["due_at"]
    assert [n.kind for n in rows(gateway, "SELECT kind FROM notifications WHERE kind = 'review_extended'")] == ["review_extended"]
    twice = act(gateway, rid, "extend", {"fencing_token": token, "until": latest.isoformat(), "reason": "again"})
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "already_extended"


def test_the_queue_is_ordered_by_due_date_and_shows_overdue_cases(gateway: Gateway) -> None:
    ids = [request(gateway, decided(gateway)).get_json()["review_id"] for _ in range(3)]
    with gateway.app.app_context():  # make the last one overdue
        db.session.execute(sa.text("UPDATE reviews SET due_at = :t WHERE id = :i"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(days=1), "i": ids[2]})
        db.session.commit()
    listing = gateway.client.get("/v1/reviews?status=queued", headers=gateway.auth("reviewer")).get_json()
    assert [r["review_id"] for r in listing["reviews"]] == [ids[2], ids[0], ids[1]]
    assert [r["overdue"] for r in listing["reviews"]] == [True, False, False]
    assert listing["total"] == 3 and listing["overdue_total"] == 1
    late = gateway.client.get("/v1/reviews?overdue=true", headers=gateway.auth("auditor")).get_json()
    assert [r["review_id"] for r in late["reviews"]] == [ids[2]]
    page = gateway.client.get("/v1/reviews?limit=1&offset=1", headers=gateway.auth("reviewer")).get_json()
    assert [r["review_id"] for r in page["reviews"]] == [ids[0]] and page["total"] == 3
    assert gateway.client.get("/v1/reviews?limit=1000", headers=gateway.auth("reviewer")).status_code == 422
    assert gateway.client.get("/v1/reviews", headers=gateway.auth("agency_a")).status_code == 403
    assert claim(gateway).get_json()["review_id"] == ids[2]  # the most urgent case first


def test_metrics_show_open_and_overdue_reviews(gateway: Gateway) -> None:
    ids = [request(gateway, decided(gateway)).get_json()["review_id"] for _ in range(2)]
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE reviews SET due_at = :t WHERE id = :i"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), "i": ids[0]})
        db.session.commit()
    text = gateway.client.get("/metrics", headers=gateway.auth("auditor")).get_data(as_text=True)  # a key: issue 11
    assert 'gateway_reviews{model="german-credit",status="queued"} 2.0' in text
    assert 'gateway_reviews_overdue{model="german-credit"} 1.0' in text
