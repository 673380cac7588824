"""Autonomy low end to end: the decision is held, an officer confirms it with a fencing token, then the person's
notice goes (a person decided with the system's help) and the agency hears the final outcome by a signed callback
received by a real local HTTP server."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from gateway.manifest import load_manifest
from gateway.notifications import Dispatcher
from tests.conftest import Gateway

SECRET_A = "whsec_" + base64.b64encode(b"agency A signs its webhooks with this").decode()
pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True),
    pytest.mark.gateway_config(WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_SECRETS={"Agency A": SECRET_A}),
]


class Receiver:
    """Keeps every POST to `path`, verified with the agency's Standard Webhooks secret (500 on a bad signature)."""

    def __init__(self, server: HTTPServer, path: str) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.url = server.url_for(path)
        server.expect_request(path, method="POST").respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(Webhook(SECRET_A).verify(body, headers))
        self.headers.append(headers)
        return Response("", status=204)


def register_low_autonomy(gw: Gateway, german_manifest: Path) -> None:
    m, folder = load_manifest(german_manifest)
    body = m.model_dump(mode="json") | {"version": "2.0.0", "autonomy": "low", "activate": True}
    body.pop("role_of_ai")  # follows from autonomy: supports_officer
    admin = gw.auth("admin")
    for data in ((folder / str(m.artifact)).read_bytes(), (folder / str(m.explanation.background)).read_bytes()):
        sha = hashlib.sha256(data).hexdigest()
        gw.client.put(f"/v1/blobs/{sha}", data=data, headers={**admin, "Content-Type": "application/octet-stream"})
    resp = gw.client.post("/v1/models", json=body, headers=admin)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["oversight"].startswith("autonomy low: every decision waits")


def claim(gw: Gateway) -> Any:
    return gw.client.post("/v1/confirmations/claim", json={}, headers=gw.auth("reviewer"))


def test_a_low_autonomy_decision_waits_for_an_officer_then_the_person_and_the_agency_hear(
        gateway: Gateway, german_manifest: Path, httpserver: HTTPServer) -> None:
    person = Receiver(httpserver, "/hooks/person")
    agency = Receiver(httpserver, "/hooks/agency")
    gateway.app.extensions["gateway.settings"] = gateway.app.extensions["gateway.settings"].replace(
        agency_callback_urls={"Agency A": agency.url})
    register_low_autonomy(gateway, german_manifest)
    body = copy.deepcopy(gateway.sample)
    body["subject"]["contact"] = {"webhook": person.url}
    body["subject"]["language"] = "en"

    created = gateway.decide(body)
    assert created.status_code == 201, created.get_json()
    decided = created.get_json()
    assert decided["confirmation"] == "pending_confirmation" and decided["outcome"] == "declined"
    did = decided["decision_id"]
    dispatcher = Dispatcher(gateway.app, name="test")
    assert dispatcher.run_once() == 0 and person.received == []  # recorded, explained, no notice
    assert gateway.count("notifications") == 0 and gateway.count("explanations") == 1
    polled = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert polled["confirmation"] == "pending_confirmation" and polled["notifications"] == []
    assert polled["role_of_ai"] == "supports_officer" and polled["reviews"] == []
    # The person cannot contest what is not yet decided (and the reviewers' own queue does not show it).
    listed = gateway.client.get("/v1/reviews", headers=gateway.auth("reviewer")).get_json()
    assert listed["total"] == 0
    queue = gateway.client.get("/v1/confirmations", headers=gateway.auth("reviewer")).get_json()
    assert queue["total"] == 1 and queue["reviews"][0]["kind"] == "confirmation"

    case = claim(gateway)
    assert case.status_code == 200
    case_body = case.get_json()
    cid, token = case_body["review_id"], case_body["fencing_token"]
    assert case_body["decision"]["decision_id"] == did and case_body["explanation"] is not None
    assert claim(gateway).status_code == 204  # nothing else waiting
    # A stale token (the lease was taken over: token + 1 is the next holder's) is refused.
    stale = gateway.client.post(f"/v1/reviews/{cid}/confirm", json={"fencing_token": token + 1, "outcome": "confirmed"},
                                headers=gateway.auth("reviewer"))
    assert stale.status_code == 409 and stale.get_json()["error"]["code"] == "stale_lease"
    # A confirmation is not a review: resolving it as one is refused.
    wrong = gateway.client.post(f"/v1/reviews/{cid}/resolve", headers=gateway.auth("reviewer"), json={
        "fencing_token": token, "outcome": "upheld", "reasons": {"en": "x"}, "point_of_view_considered": True})
    assert wrong.status_code == 409 and wrong.get_json()["error"]["code"] == "invalid_transition"

    done = gateway.client.post(f"/v1/reviews/{cid}/confirm", json={"fencing_token": token, "outcome": "confirmed"},
                               headers=gateway.auth("reviewer"))
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "resolved" and done.get_json()["outcome"] == "confirmed"
    again = gateway.client.post(f"/v1/reviews/{cid}/confirm", json={"fencing_token": token, "outcome": "confirmed"},
                                headers=gateway.auth("reviewer"))
    assert again.status_code == 409

    assert dispatcher.run_once() == 2
    [notice] = person.received
    assert notice["type"] == "notification.decision_notice"
    assert notice["data"]["confirmed_by_officer"] is True and notice["data"]["sole_basis"] is False
    assert "used by an officer, who made the decision" in notice["data"]["text"]
    [callback] = agency.received
    assert callback["type"] == "decision.confirmed"
    assert callback["data"]["decision_id"] == did and callback["data"]["effective_outcome"] == "declined"
    assert callback["data"]["confirmation"] == "confirmed" and "citizen" not in callback["data"]["links"]
    assert agency.headers[0]["webhook-signature"].startswith("v1,")
    polled = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert polled["confirmation"] == "confirmed" and polled["effective_outcome_set_by"] == cid
    assert [n["status"] for n in polled["notifications"]] == ["delivered", "delivered"]


def test_an_officer_changes_the_outcome_and_a_later_review_supersedes_it(
        gateway: Gateway, german_manifest: Path, httpserver: HTTPServer) -> None:
    agency = Receiver(httpserver, "/hooks/agency")
    gateway.app.extensions["gateway.settings"] = gateway.app.extensions["gateway.settings"].replace(
        agency_callback_urls={"Agency A": agency.url})
    register_low_autonomy(gateway, german_manifest)
    did = gateway.decide().get_json()["decision_id"]
    case = claim(gateway).get_json()
    reasons_missing = gateway.client.post(f"/v1/reviews/{case['review_id']}/confirm", headers=gateway.auth("reviewer"),
                                          json={"fencing_token": case["fencing_token"], "outcome": "changed",
                                                "new_outcome": "approved"})
    assert reasons_missing.status_code == 422
    changed = gateway.client.post(f"/v1/reviews/{case['review_id']}/confirm", headers=gateway.auth("reviewer"), json={
        "fencing_token": case["fencing_token"], "outcome": "changed", "new_outcome": "approved",
        "reasons": {"kk": "Табысы расталды."}})
    assert changed.status_code == 200, changed.get_json()
    decision = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    assert decision["outcome"] == "declined" and decision["effective_outcome"] == "approved"
    assert decision["confirmation"] == "changed"

    # The person asks for a review (here through their agency); the reviewer annuls: the agency hears that too.
    review = gateway.client.post(f"/v1/decisions/{did}/reviews", headers=gateway.auth("agency_a"),
                                 json={"point_of_view": "Қайта қараңыз.", "contest_grounds": ["other"]})
    assert review.status_code == 201, review.get_json()
    held = gateway.client.post("/v1/reviews/claim", json={}, headers=gateway.auth("reviewer")).get_json()
    resolved = gateway.client.post(f"/v1/reviews/{held['review_id']}/resolve", headers=gateway.auth("reviewer"), json={
        "fencing_token": held["fencing_token"], "outcome": "annulled", "reasons": {"kk": "Күші жойылды."},
        "point_of_view_considered": True})
    assert resolved.status_code == 200, resolved.get_json()
    Dispatcher(gateway.app, name="test").run_once()
    events = sorted(c["type"] for c in agency.received)
    assert events == ["decision.changed", "decision.superseded_by_review"]
    superseded = next(c for c in agency.received if c["type"] == "decision.superseded_by_review")
    assert superseded["data"]["effective_outcome"] == "annulled"
    assert json.dumps(superseded).count(did) >= 1
