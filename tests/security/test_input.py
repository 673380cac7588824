"""Findings 5, 6 and 14 (first part): inputs that reached the database or the interpreter's limits and came
back as 503 or 500. Each test sends the attack again and expects the 4xx naming the field."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.security.support import REVIEW, claimed, decided, query, requested
from tests.web.console_support import official, post_form, waiting_case
from tests.web.support import CSRF, person

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
HUGE = 10**309  # above the largest double (1.8e308); JSON has no limit, Python's int neither


def fields(resp: Any) -> list[str]:
    return [d["field"] for d in resp.get_json()["error"]["details"]]


def post(gw: Gateway, url: str, body: Any, who: str, **headers: str) -> Any:
    return gw.client.post(url, data=body if isinstance(body, str | bytes) else json.dumps(body),
                          content_type="application/json", headers={**gw.auth(who), **headers})


@pytest.mark.parametrize(("field", "value"), [("reference", "app\x00-1"), ("operator", "officer\x00"),
                                              ("reference", "line\nbreak"), ("operator", "\x1b[31m")])
def test_control_characters_in_a_decision_are_refused(gateway: Gateway, field: str, value: str) -> None:
    resp = gateway.decide(gateway.sample | {field: value})
    assert resp.status_code == 422, resp.get_json()
    assert fields(resp) == [field]
    assert gateway.count("decisions") == 0


def test_control_characters_in_a_review_are_refused_where_text_is_kept(gateway: Gateway) -> None:
    did = decided(gateway)["decision_id"]
    url = f"/v1/decisions/{did}/reviews"
    nul = post(gateway, url, REVIEW | {"point_of_view": "my income\x00 is higher"}, "agency_a")
    assert nul.status_code == 422 and fields(nul) == ["point_of_view"]
    # A multi-line point of view keeps its line breaks and tabs.
    ok = post(gateway, url, REVIEW | {"point_of_view": "Line one\r\nline two\tend"}, "agency_a")
    assert ok.status_code == 201, ok.get_json()
    rid = ok.get_json()["review_id"]
    token = claimed(gateway, rid)
    resolve = post(gateway, f"/v1/reviews/{rid}/resolve", {
        "fencing_token": token, "outcome": "upheld", "reasons": {"kk": "Шешім\x00 дұрыс."},
        "point_of_view_considered": True}, "reviewer")
    assert resolve.status_code == 422 and fields(resolve) == ["reasons.kk"]
    until = (dt.date.today() + dt.timedelta(days=40)).isoformat()
    extend = post(gateway, f"/v1/reviews/{rid}/extend",
                  {"fencing_token": token, "until": until, "reason": "expert\x00"}, "reviewer")
    assert extend.status_code == 422 and fields(extend) == ["reason"]
    listing = gateway.client.get("/v1/reviews?model=german%00credit", headers=gateway.auth("reviewer"))
    assert listing.status_code == 422 and fields(listing) == ["model"]


def test_a_number_beyond_a_double_is_refused_naming_the_feature(gateway: Gateway) -> None:
    body = json.dumps(gateway.sample | {"features": gateway.sample["features"] | {"credit_amount": HUGE}})
    resp = post(gateway, "/v1/models/german-credit/decisions", body, "agency_a", **{"Idempotency-Key": "huge-1"})
    assert resp.status_code == 422, resp.data[:300]
    assert fields(resp) == ["features.credit_amount"]
    did = decided(gateway)["decision_id"]
    review = json.dumps(REVIEW | {"corrected_data": {"credit_amount": HUGE}})
    resp = post(gateway, f"/v1/decisions/{did}/reviews", review, "agency_a")
    assert resp.status_code == 422, resp.data[:300]
    assert fields(resp) == ["corrected_data.credit_amount"]


@pytest.mark.parametrize("url", ["/v1/models/german-credit/decisions", "/v1/reviews/claim", "/v1/models"])
def test_a_deeply_nested_body_is_refused_as_malformed(gateway: Gateway, url: str) -> None:
    who = "admin" if url == "/v1/models" else ("reviewer" if "reviews" in url else "agency_a")
    for depth in (100_000, 2_000, 40):
        body = '{"features": ' + "[" * depth + "]" * depth + "}"
        resp = post(gateway, url, body, who, **{"Idempotency-Key": f"deep-{depth}"})
        assert resp.status_code == 400, (depth, resp.status_code, resp.data[:200])
        assert resp.get_json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
def test_the_review_queue_at_the_ends_of_the_calendar(gateway: Gateway, day: str) -> None:
    requested(gateway, decided(gateway)["decision_id"])  # one open case, due in a few weeks
    resp = gateway.client.get("/v1/reviews", query_string={"due_before": day}, headers=gateway.auth("reviewer"))
    # A schema-valid date is answered (schemathesis): nothing is due before the calendar's first days, the case
    # is due before its last.
    assert resp.status_code == 200, resp.data[:300]
    assert resp.get_json()["total"] == (1 if day.startswith("9999") else 0)


def test_extending_to_the_end_of_the_calendar_is_refused_naming_until(gateway: Gateway) -> None:
    rid = requested(gateway, decided(gateway)["decision_id"])
    token = claimed(gateway, rid)
    for day in ("9999-12-31", "0001-01-01"):
        resp = post(gateway, f"/v1/reviews/{rid}/extend",
                    {"fencing_token": token, "until": day, "reason": "Expert opinion"}, "reviewer")
        assert resp.status_code == 422, resp.data[:300]
        assert fields(resp) == ["until"]


@pytest.mark.parametrize("body", ['"{\\"review_id\\": null}"', "[]", "1", '"x"'])
def test_a_body_that_is_not_an_object_is_refused(gateway: Gateway, body: str) -> None:
    resp = post(gateway, "/v1/reviews/claim", body, "reviewer")
    assert resp.status_code == 422, resp.data[:300]
    assert fields(resp) == ["body"]


BATCHES = "/v1/models/german-credit/decision-batches"


@pytest.mark.parametrize("form", ["jsonl", "json-file", "json-body"])
def test_a_deeply_nested_batch_is_refused_as_malformed(gateway: Gateway, form: str) -> None:
    """A batch of rows is an authenticated JSON body too, whether sent as JSON lines, a JSON file or a body."""
    for depth in (100_000, 40):
        row = b'{"idempotency_key": "deep", "features": ' + b"[" * depth + b"]" * depth + b"}"
        if form == "jsonl":
            resp = gateway.client.post(BATCHES, headers=gateway.auth("agency_a"), data=row + b"\n",
                                       content_type="application/x-ndjson")
        elif form == "json-file":
            upload = (io.BytesIO(b'{"rows": [' + row + b"]}"), "people.json")
            resp = gateway.client.post(BATCHES, headers=gateway.auth("agency_a"), data={"file": upload},
                                       content_type="multipart/form-data")
        else:
            resp = post(gateway, BATCHES, b'{"rows": [' + row + b"]}", "agency_a")
        assert resp.status_code == 400, (depth, resp.status_code, resp.data[:200])
        assert resp.get_json()["error"]["code"] == "malformed_json"
    assert gateway.count("decision_batches") == 0


def test_control_characters_in_the_persons_review_form_are_refused(gateway: Gateway) -> None:
    """The person's web form reaches the same use case as the API: the same refusal, never the database's."""
    me = person(gateway, language="ru")
    form = {"csrf_token": me.csrf(f"/d/{me.decision_id}/review"), "point_of_view": "Мой доход\x00 вырос.",
            "contest_grounds": ["wrong_data"], "language": "ru"}
    resp = me.browser.post(f"/d/{me.decision_id}/review", data=form)
    assert resp.status_code == 422, resp.status_code
    assert 'id="point_of_view-error"' in resp.get_data(as_text=True)
    assert gateway.count("reviews") == 0


def test_control_characters_in_the_reviewers_forms_are_refused(gateway: Gateway) -> None:
    waiting_case(gateway)
    reviewer = official(gateway)
    page = reviewer.get("/console").get_data(as_text=True)
    taken = reviewer.post("/console/next", data={"csrf_token": CSRF.search(page).group(1)})  # type: ignore[union-attr]
    assert taken.status_code == 303, taken.status_code
    location = str(taken.headers["Location"])
    review_id = location.rsplit("/", 1)[1]
    until = (dt.date.today() + dt.timedelta(days=40)).isoformat()
    extend = post_form(reviewer, location, f"/console/cases/{review_id}/extend", until=until, reason="Экспертиза\x00")
    assert extend.status_code == 422 and 'id="reason-error"' in extend.get_data(as_text=True)
    resolve = post_form(reviewer, location, f"/console/cases/{review_id}/resolve", outcome="upheld",
                        reasons_kk="Себептері\x00.", reasons_ru="Причины.", point_of_view_considered="yes")
    assert resolve.status_code == 422, resolve.status_code
    assert query(gateway, "SELECT status, extended_until, extension_reason FROM reviews")[0] == ("claimed", None, None)
    assert query(gateway, "SELECT count(*) FROM log_leaves WHERE kind IN ('review:resolved', 'review:extended')")[0][0] == 0
