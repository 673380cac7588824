"""The incident register: a regulator-report clock per severity, statuses, and the kill switch naming an incident."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import Gateway
from tests.support.registration import open_incident


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.gateway_config(INCIDENT_REPORT_HOURS={"high": 48})
def test_an_incident_has_a_report_deadline_and_moves_through_its_statuses(gateway: Gateway) -> None:
    created = gateway.client.post("/v1/incidents", headers=gateway.auth("auditor"), json={
        "model": "german-credit", "version": "1.0.0", "severity": "high", "description": "declines doubled overnight"})
    assert created.status_code == 201, created.get_json()
    incident = created.get_json()
    assert created.headers["Location"] == f"/v1/incidents/{incident['incident_id']}"
    assert incident["status"] == "open" and not incident["report_overdue"]
    assert parse(incident["report_due_at"]) - parse(incident["opened_at"]) == dt.timedelta(hours=48)
    critical = gateway.client.post("/v1/incidents", headers=gateway.auth("admin"), json={
        "model": "german-credit", "severity": "critical", "description": "scores out of range"}).get_json()
    assert parse(critical["report_due_at"]) - parse(critical["opened_at"]) == dt.timedelta(hours=24)  # the default

    iid = incident["incident_id"]
    reported = gateway.client.post(f"/v1/incidents/{iid}/status", json={"status": "reported"}, headers=gateway.auth("admin"))
    assert reported.status_code == 200 and reported.get_json()["reported_at"] is not None
    again = gateway.client.post(f"/v1/incidents/{iid}/status", json={"status": "reported"}, headers=gateway.auth("admin"))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "invalid_transition"
    closed = gateway.client.post(f"/v1/incidents/{iid}/status", json={"status": "closed"}, headers=gateway.auth("admin"))
    assert closed.get_json()["status"] == "closed"
    listed = gateway.client.get("/v1/incidents?status=open", headers=gateway.auth("auditor")).get_json()["incidents"]
    assert [i["incident_id"] for i in listed] == [critical["incident_id"]]
    assert gateway.count("log_leaves") >= 4  # opened twice, reported, closed: each an audit leaf


def test_incidents_are_for_the_owner_and_the_auditor(gateway: Gateway) -> None:
    body = {"model": "german-credit", "severity": "low", "description": "x"}
    assert gateway.client.post("/v1/incidents", json=body, headers=gateway.auth("agency_a")).status_code == 403
    assert gateway.client.post("/v1/incidents", json=body, headers=gateway.auth("reviewer")).status_code == 403
    assert gateway.client.post("/v1/incidents", json=body).status_code == 401
    unknown = gateway.client.post("/v1/incidents", json=body | {"model": "nothing"}, headers=gateway.auth("admin"))
    assert unknown.status_code == 404


def test_suspending_a_model_names_an_incident_of_that_model(gateway: Gateway) -> None:
    admin = gateway.auth("admin")
    missing = gateway.client.post("/v1/models/german-credit/suspend", json={"reason": "drift"}, headers=admin)
    assert missing.status_code == 422 and "incident_id" in {d["field"] for d in missing.get_json()["error"]["details"]}
    ghost = gateway.client.post("/v1/models/german-credit/suspend", headers=admin,
                                json={"reason": "drift", "incident_id": "inc_AAAAAAAAAAAAAAAAAAAAAA"})
    assert ghost.status_code == 404 and ghost.get_json()["error"]["code"] == "incident_not_found"
    assert gateway.decide().status_code == 201  # still serving
    incident = open_incident(gateway.client, admin)
    done = gateway.client.post("/v1/models/german-credit/suspend", json={"reason": "drift", "incident_id": incident},
                               headers=admin)
    assert done.status_code == 200 and done.get_json()["status"] == "suspended"
    assert gateway.decide().status_code == 409
