"""What /openapi.json documents is what is served: every documented success response, exercised and validated.

A scenario walks the whole API as its callers would (agency, person, reviewer, auditor, admin, operators);
every JSON answer is validated against the schema the document gives for its operation and status (the
response models forbid undocumented fields, so a field served but not documented fails here), and every
documented success status of every operation must have been seen at least once.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from werkzeug.routing import RequestRedirect
from werkzeug.test import TestResponse

from gateway.auditlog.sequencer import SequenceKind
from gateway.batches.task import BatchKind
from gateway.extensions import db
from gateway.models import ScoringModel
from tests.conftest import Gateway
from tests.support.citizens import IdentityProvider, notice_token, valid_iin

# Documented successes exercised elsewhere because this scenario's model is explained exactly, at once.
ELSEWHERE = {
    ("/v1/decisions/{decision_id}/explanation", "get", "202"): "tests/test_api_explanations.py (model-agnostic)",
    ("/v1/decisions/{decision_id}/explanation.svg", "get", "202"): "tests/test_api_explanations.py (model-agnostic)",
    ("/v1/decisions/{decision_id}/recourse", "get", "202"): "tests/test_api_recourse.py (the recourse job)",
}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gateway_extra(idp: IdentityProvider) -> dict[str, Any]:
    return idp.config()


class Recorder:
    """Calls the app and validates each JSON answer against the document's schema for it."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.spec: dict[str, Any] = gw.client.get("/openapi.json").get_json()
        self.seen: set[tuple[str, str, str]] = set()
        self.adapter = gw.app.url_map.bind("gateway.test")

    def template(self, method: str, path: str) -> str:
        try:
            rule, _ = self.adapter.match(path.split("?")[0], method=method, return_rule=True)
        except RequestRedirect:  # pragma: no cover - no redirects in the API
            raise
        return re.sub(r"<([^<:]+:)?([^>]+)>", r"{\2}", rule.rule)

    def __call__(self, method: str, path: str, who: str | None = None, *, token: str | None = None,
                 **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers |= self.gw.auth(who)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        resp = self.gw.client.open(path, method=method, headers=headers, **kwargs)
        self.check(method, path, resp)
        return resp

    def check(self, method: str, path: str, resp: TestResponse) -> None:
        template, status = self.template(method, path), str(resp.status_code)
        operation = self.spec["paths"][template][method.lower()]
        assert status in operation["responses"], f"{method} {template} answered {status}, which is not documented"
        self.seen.add((template, method.lower(), status))
        content = operation["responses"][status].get("content", {})
        if resp.mimetype != "application/json":
            assert not content or resp.mimetype in content, (template, status, resp.mimetype)
            return
        pointer = "/".join(p.replace("~", "~0").replace("/", "~1")
                           for p in ("paths", template, method.lower(), "responses", status, "content",
                                     "application/json", "schema"))
        schema = {"$ref": f"#/{pointer}", "paths": self.spec["paths"], "components": self.spec["components"]}
        try:
            jsonschema.Draft202012Validator(schema).validate(resp.get_json())
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{method} {template} {status}: the body does not match its documented schema: {exc.message} "
                        f"at {list(exc.absolute_path)}")


def test_every_documented_response_is_served_as_documented(gateway: Gateway, idp: IdentityProvider) -> None:
    call = Recorder(gateway)
    # Operations and the register.
    assert call("GET", "/healthz").status_code == 200
    assert call("GET", "/readyz").status_code == 200
    assert call("GET", "/v1/models").status_code == 200
    detail = call("GET", "/v1/models/german-credit").get_json()
    assert call("GET", "/v1/models/nope").status_code == 404

    # Admin: upload (new and again), register a new version (then again: not created), no suspension yet.
    data = b"registration notes\n"
    sha = hashlib.sha256(data).hexdigest()
    put = {"data": data, "headers": {"Content-Type": "application/octet-stream"}}
    assert call("PUT", f"/v1/blobs/{sha}", "admin", **put).status_code == 201
    assert call("PUT", f"/v1/blobs/{sha}", "admin", **put).status_code == 200
    with gateway.app.app_context():
        manifest = copy.deepcopy(db.session.query(ScoringModel).one().manifest)
    manifest["version"] = "1.0.1-contract"
    assert call("POST", "/v1/models", "admin", json=manifest).status_code == 201
    assert call("POST", "/v1/models", "admin", json=manifest).status_code == 200
    assert detail["name"] == "german-credit"

    # The agency decides; the person, the agency and (later) staff read it.
    person = valid_iin("92102935085")
    body = copy.deepcopy(gateway.sample)
    body["subject"]["iin"] = person
    # The officer who operated it: a display name, and their recorded identity (an official the gateway knows).
    with gateway.app.app_context():
        operator_id = db.session.execute(sa.text("SELECT id FROM api_clients WHERE name = 'auditor'")).scalar_one()
        db.session.commit()
    body["operator"], body["operator_id"] = "Aigerim Officer", "cli_nobodyHasThisId0000"
    unknown = call("POST", "/v1/models/german-credit/decisions", "agency_a", json=body,
                   headers={"Idempotency-Key": "contract-0"})
    assert unknown.status_code == 422 and unknown.get_json()["error"]["details"][0]["field"] == "operator_id"
    body["operator_id"] = operator_id
    created = call("POST", "/v1/models/german-credit/decisions", "agency_a", json=body,
                   headers={"Idempotency-Key": "contract-1"})
    assert created.status_code == 201, created.get_json()
    did = created.get_json()["decision_id"]
    assert call("GET", f"/v1/decisions/{did}", "auditor").get_json()["operator_id"] == operator_id
    citizen = notice_token(gateway, did)  # the person's link comes with the notice, never in the agency's answer
    assert call("GET", f"/v1/decisions/{did}", "agency_a").status_code == 200
    assert call("GET", f"/v1/decisions/{did}", token=citizen).status_code == 200
    assert call("GET", f"/v1/decisions/{did}/explanation?lang=kk", token=citizen).status_code == 200
    assert call("GET", f"/v1/decisions/{did}/explanation.svg", token=citizen).status_code == 200
    options = call("GET", f"/v1/decisions/{did}/recourse?lang=ru", token=citizen)
    assert options.status_code == 200 and options.get_json()["options"], options.get_json()  # an adverse decision
    assert call("GET", f"/v1/decisions/{did}/access-log", token=citizen).status_code == 200
    assert call("GET", "/v1/me/decisions", token=idp.token(person)).status_code == 200
    assert call("GET", f"/v1/decisions/{did}", "agency_b").status_code == 404
    assert call("GET", f"/v1/decisions/{did}").status_code == 401
    # The agency hands a link on (a counter clerk), then revokes it (issue 11, finding 2).
    handover = call("POST", f"/v1/decisions/{did}/handover-links", "agency_a")
    assert handover.status_code == 201, handover.get_json()
    hid = handover.get_json()["handover_id"]
    assert call("DELETE", f"/v1/decisions/{did}/handover-links/{hid}", "agency_a").status_code == 204

    # The person asks for a review with corrected data; the reviewer works the case to its end.
    review = call("POST", f"/v1/decisions/{did}/reviews", token=citizen,
                  json={"point_of_view": "Менің жинағым көбірек.", "contest_grounds": ["wrong_data"],
                        "corrected_data": {"savings": "500_to_1000"}})
    assert review.status_code == 201, review.get_json()
    rid = review.get_json()["review_id"]
    assert call("GET", f"/v1/reviews/{rid}", token=citizen).status_code == 200
    assert call("GET", "/v1/reviews?status=queued", "reviewer").status_code == 200
    case = call("POST", "/v1/reviews/claim?lang=en", "reviewer", json={})
    assert case.status_code == 200 and case.get_json()["explanation"]["language"] == "en"
    token = case.get_json()["fencing_token"]
    assert call("POST", f"/v1/reviews/{rid}/renew", "reviewer", json={"fencing_token": token}).status_code == 200
    assert call("POST", f"/v1/reviews/{rid}/rescore", "reviewer", json={"fencing_token": token}).status_code == 201
    assert call("POST", f"/v1/reviews/{rid}/release", "reviewer", json={"fencing_token": token}).status_code == 200
    token = call("POST", "/v1/reviews/claim", "reviewer", json={}).get_json()["fencing_token"]
    assert call("POST", "/v1/reviews/claim", "reviewer", json={}).status_code == 204
    until = review.get_json()["due_at"][:10]
    extend = call("POST", f"/v1/reviews/{rid}/extend", "reviewer",
                  json={"fencing_token": token, "until": _later(until), "reason": "Банктен растау күтілуде."})
    assert extend.status_code == 200, extend.get_json()
    resolved = call("POST", f"/v1/reviews/{rid}/resolve", "reviewer",
                    json={"fencing_token": token, "outcome": "changed", "new_outcome": "approved",
                          "reasons": {"kk": "Жинақ туралы деректер түзетілді."}, "point_of_view_considered": True})
    assert resolved.status_code == 200, resolved.get_json()
    assert call("GET", f"/v1/decisions/{did}", "auditor").get_json()["effective_outcome"] == "approved"
    assert call("GET", f"/v1/decisions/{did}/access-log", "auditor").status_code == 200

    # A second decision: the person asks for a review, then withdraws it.
    second = call("POST", "/v1/models/german-credit/decisions", "agency_a", json=body,
                  headers={"Idempotency-Key": "contract-3"}).get_json()
    token2 = notice_token(gateway, second["decision_id"])
    asked = call("POST", f"/v1/decisions/{second['decision_id']}/reviews", token=token2,
                 json={"point_of_view": "Қате есептелді.", "contest_grounds": ["wrong_assessment"]}).get_json()
    withdrawn = call("POST", f"/v1/decisions/{second['decision_id']}/reviews/{asked['review_id']}/withdraw", token=token2)
    assert withdrawn.status_code == 200 and withdrawn.get_json()["status"] == "withdrawn"

    # The audit log: a receipt is pending until the sequencer ran, then proves the decision is in the log.
    assert call("GET", f"/v1/decisions/{did}/receipt", token=citizen).status_code == 202
    gateway.app.config["LOG_CHECKPOINT_INTERVAL_S"] = 0
    with gateway.app.app_context():
        assert SequenceKind(gateway.app, settings=SequenceKind.read_settings(gateway.app.config)).run_once() > 0
    assert call("GET", f"/v1/decisions/{did}/receipt", token=citizen).status_code == 200
    assert call("GET", "/v1/log/key").status_code == 200
    assert call("GET", "/v1/log/checkpoint").status_code == 200
    assert call("GET", "/v1/log/proof/inclusion?index=0&size=2").status_code == 200
    assert call("GET", "/v1/log/proof/consistency?first=1&second=2").status_code == 200
    assert call("GET", "/v1/log/leaves?start=0&end=5", "auditor").status_code == 200

    # A decision batch: submitted (202), decided by the batch job kind, read with its rows, results downloaded.
    rows = [{"idempotency_key": f"contract-batch-{i}", "subject": {**body["subject"], "iin": iin},
             "features": body["features"]} for i, iin in enumerate(("921029350851", "061211600012"))]
    submitted = call("POST", "/v1/models/german-credit/decision-batches", "agency_a", json={"rows": rows})
    assert submitted.status_code == 202, submitted.get_json()
    with gateway.app.app_context():
        assert BatchKind(gateway.app).run_once() == 1
    batch_url = submitted.get_json()["links"]["batch"].removeprefix("https://gateway.test")
    shown = call("GET", batch_url, "agency_a")
    assert shown.status_code == 200 and shown.get_json()["decided_rows"] == 2
    assert call("GET", f"{batch_url}/results", "agency_a").status_code == 200
    assert call("GET", f"{batch_url}/results?format=jsonl", "agency_a").status_code == 200
    listed = call("GET", "/v1/models/german-credit/decision-batches?limit=1", "agency_a").get_json()
    assert listed["batches"][0]["batch_id"] == submitted.get_json()["batch_id"] and listed["next_after"] is None

    # Oversight: the agency posts the true outcome; the auditor reads the report; an incident is registered.
    truth = call("POST", f"/v1/decisions/{did}/ground-truth", "agency_a", json={"positive": True})
    assert truth.status_code == 201, truth.get_json()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    report = call("GET", f"/v1/reports/oversight?model=german-credit&from={today}&to={today}", "auditor")
    assert report.status_code == 200 and report.get_json()["volume"]["decisions"] >= 2
    incident = call("POST", "/v1/incidents", "admin",
                    json={"model": "german-credit", "severity": "high", "description": "contract test"})
    assert incident.status_code == 201, incident.get_json()
    iid = incident.get_json()["incident_id"]
    assert call("GET", "/v1/incidents?model=german-credit", "auditor").status_code == 200
    # Keyset pages (tests/test_keyset_pages.py): a next_after, then the page after it, as documented.
    second = call("POST", "/v1/incidents", "admin", json={"model": "german-credit", "severity": "low",
                                                           "description": "contract test, second"})
    assert second.status_code == 201
    page = call("GET", "/v1/incidents?limit=1", "auditor").get_json()
    assert page["next_after"] is not None
    assert call("GET", f"/v1/incidents?limit=1&after={page['next_after']}", "auditor").get_json()["incidents"]
    assert call("GET", "/v1/incidents?after=not-a-cursor", "auditor").status_code == 422
    assert call("GET", "/v1/reviews?limit=1", "reviewer").status_code == 200
    assert call("GET", "/v1/models?limit=1", "reviewer").get_json()["next_after"] is None
    assert call("GET", f"/v1/incidents/{iid}", "auditor").status_code == 200
    assert call("POST", f"/v1/incidents/{iid}/status", "admin", json={"status": "reported"}).status_code == 200

    # Autonomy low: a version whose decisions wait for an officer, confirmed through the confirmation queue.
    low = copy.deepcopy(manifest) | {"version": "1.0.2-low", "autonomy": "low", "activate": True}
    low.pop("role_of_ai")
    assert call("POST", "/v1/models", "admin", json=low).status_code == 201
    held = call("POST", "/v1/models/german-credit/decisions", "agency_a", json=body,
                headers={"Idempotency-Key": "contract-4"})
    assert held.status_code == 201 and held.get_json()["confirmation"] == "pending_confirmation"
    assert call("GET", "/v1/confirmations", "reviewer").get_json()["total"] == 1
    claimed = call("POST", "/v1/confirmations/claim", "reviewer", json={})
    assert claimed.status_code == 200, claimed.get_json()
    assert call("POST", "/v1/confirmations/claim", "reviewer", json={}).status_code == 204
    confirmed = call("POST", f"/v1/reviews/{claimed.get_json()['review_id']}/confirm", "reviewer",
                     json={"fencing_token": claimed.get_json()["fencing_token"], "outcome": "confirmed"})
    assert confirmed.status_code == 200, confirmed.get_json()

    # Retention: an auditor sets a legal hold on the decision, then clears it, saying why.
    assert call("POST", f"/v1/decisions/{did}/hold", "auditor", json={"reason": "Court case"}).status_code == 200
    assert call("DELETE", f"/v1/decisions/{did}/hold?reason=Closed", "auditor").status_code == 200

    # The kill switch (naming the incident), then the refusal it causes.
    assert call("POST", "/v1/models/german-credit/suspend", "admin",
                json={"reason": "contract test", "incident_id": iid}).status_code == 200
    refused = call("POST", "/v1/models/german-credit/decisions", "agency_a", json=body,
                   headers={"Idempotency-Key": "contract-2"})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "model_suspended"

    documented = {(path, method, status)
                  for path, operations in call.spec["paths"].items()
                  for method, operation in operations.items()
                  for status in operation.get("responses", {}) if status.startswith("2")}
    missing = sorted(documented - call.seen - set(ELSEWHERE))
    assert missing == [], f"documented success responses this scenario never produced: {missing}"


def _later(due: str) -> str:
    """A day two weeks after the due date (within the two months an extension may reach)."""
    return (dt.date.fromisoformat(due) + dt.timedelta(days=14)).isoformat()
