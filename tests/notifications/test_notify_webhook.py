"""Webhook notices: a real HTTP receiver (pytest-httpserver) verifies the Standard Webhooks signature."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug import Request, Response

from gateway.extensions import db
from gateway.notifications.channels.webhook import url_sha256
from tests.conftest import Gateway
from tests.notifications.conftest import SECRET_A, SECRET_B, Dispatch, as_utc, row, rows

pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True),
    # The receivers listen on 127.0.0.1 over http://: a lab deployment, whose intake accepts them (issue 11).
    pytest.mark.gateway_config(WEBHOOK_ALLOW_PRIVATE=True),
]
SETTINGS = {"WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_SECRETS": {"Agency A": SECRET_A, "Agency B": SECRET_B}}


class Receiver:
    """Answers with the given statuses in turn (the last one repeats); verifies and keeps every request."""

    def __init__(self, server: HTTPServer, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses) or [204]
        self.headers = headers or {}
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.verified: list[Any] = []
        self.url = server.url_for("/hooks/citizens")
        server.expect_request("/hooks/citizens", method="POST").respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((body, headers))
        self.verified.append(Webhook(SECRET_A).verify(body, headers))  # raises (500) on a bad signature
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        return Response("", status=status, headers=self.headers)


def _decide(gw: Gateway, url: str, lang: str = "ru", who: str = "agency_a") -> str:
    body = copy.deepcopy(gw.sample)
    body["subject"]["language"] = lang
    body["subject"]["contact"] = {"webhook": url}
    resp = gw.decide(body, who=who)
    assert resp.status_code == 201, resp.get_json()
    decision_id: str = resp.get_json()["decision_id"]
    return decision_id


def test_the_notice_is_posted_signed_and_verifies_with_standardwebhooks(
        dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, 200)
    did = _decide(gateway, receiver.url, "kk")
    dispatch(gateway, **SETTINGS).run_once()

    note = row(gateway)
    assert note.status == "delivered" and note.attempts == 1, note.last_error
    (body, headers), (payload,) = receiver.requests[0], receiver.verified
    assert headers["webhook-id"] == note.id
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert abs(int(headers["webhook-timestamp"]) - dt.datetime.now(dt.UTC).timestamp()) < 60
    assert payload["type"] == "notification.decision_notice"
    data = payload["data"]
    assert data["notification_id"] == note.id and data["decision_id"] == did and data["language"] == "kk"
    assert data["automated"] is True and data["sole_basis"] is True and data["role_of_ai"] == "sole_basis"
    assert data["system"]["name"] == "german-credit" and data["system"]["version"] == "1.0.0"
    assert data["system"]["owner"].startswith("«Example Bank» АҚ") and data["system"]["purpose"].startswith("ТЕК МЫСАЛ")
    assert data["outcome"]["code"] in ("approved", "declined") and data["outcome"]["label"] in ("Мақұлданды", "Бас тартылды")
    assert data["rights"]["explanation_url"] == data["links"]["citizen"] + "&next=explanation"  # a page, via the personal link
    assert data["rights"]["review_url"] == data["links"]["citizen"] + "&next=review"
    assert data["links"]["explanation"] == f"https://gateway.test/v1/decisions/{did}/explanation"  # API links stay
    assert data["rights"]["review_free"] is True
    decided = dt.datetime.fromisoformat(data["decided_at"])
    assert dt.date.fromisoformat(data["rights"]["review_request_by"]) - decided.date() in (dt.timedelta(days=30),
                                                                                           dt.timedelta(days=31))
    assert data["contact"] == "appeals@example.kz"
    assert "автоматтандырылған (алгоритмдік) жүйе қолданылды" in data["text"] and did in data["text"]
    assert data["subject"].startswith("Автоматтандырылған шешім туралы хабарлама")
    assert json.loads(body) == payload


def test_a_tampered_body_or_a_stale_timestamp_fails_verification(
        dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, 200)
    _decide(gateway, receiver.url)
    sender = dispatch(gateway, **SETTINGS)
    sender.run_once()
    body, headers = receiver.requests[0]
    verifier = Webhook(SECRET_A)
    verifier.verify(body, headers)

    tampered = body.replace(b'"sole_basis":true', b'"sole_basis":false')
    assert tampered != body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verifier.verify(tampered, headers)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 600)})
    # Correctly signed, but ten minutes ago (a replay): still refused.
    channel = sender.channel("webhook")
    from gateway.notifications.channels.base import Message

    message = Message(id=headers["webhook-id"], kind="decision_notice", language="ru", recipient=receiver.url,
                      agency="Agency A", subject="", text="", html="", payload=json.loads(body),
                      created_at=dt.datetime.now(dt.UTC))
    stale = channel.headers(message, body, at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))  # type: ignore[attr-defined]
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(body, stale)
    with pytest.raises(WebhookVerificationError):  # another agency's secret does not verify it
        Webhook(SECRET_B).verify(body, headers)


def test_each_agency_signs_with_its_own_secret(dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    seen: list[tuple[bytes, dict[str, str]]] = []

    def handler(request: Request) -> Response:
        seen.append((request.get_data(), {k.lower(): v for k, v in request.headers.items()}))
        return Response("", status=200)

    httpserver.expect_request("/b", method="POST").respond_with_handler(handler)
    _decide(gateway, httpserver.url_for("/b"), who="agency_b")
    dispatch(gateway, **SETTINGS).run_once()
    assert row(gateway).status == "delivered"
    Webhook(SECRET_B).verify(*seen[0])
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(*seen[0])


def test_every_attempt_carries_the_same_webhook_id_and_body(
        dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, 500, 503, 200)
    _decide(gateway, receiver.url)
    sender = dispatch(gateway, **SETTINGS)
    now = dt.datetime.now(dt.UTC)
    for _ in range(3):
        sender.run_once(now=now)
        note = row(gateway)
        now = as_utc(note.next_attempt_at)
    note = row(gateway)
    assert note.status == "delivered" and note.attempts == 3
    assert {h["webhook-id"] for _, h in receiver.requests} == {note.id}
    # The same payload every time, but for the person's capability token, which is signed when sent.
    assert len({re.sub(rb"token=gwc_[^\"\\\s]+", b"token=T", b) for b, _ in receiver.requests}) == 1


def test_a_410_disables_the_endpoint(dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, 410)
    first = _decide(gateway, receiver.url)
    sender = dispatch(gateway, **SETTINGS)
    sender.run_once()
    (note,) = rows(gateway)
    assert note.status == "dead" and note.attempts == 1 and "410" in note.last_error
    with gateway.app.app_context():
        endpoints = db.session.execute(sa.text("SELECT url_sha256, reason FROM webhook_endpoints")).all()
    assert [e.url_sha256 for e in endpoints] == [url_sha256(receiver.url)] and "410" in endpoints[0].reason
    assert receiver.url not in repr(endpoints)

    second = _decide(gateway, receiver.url)  # nothing more is sent to that endpoint
    sender.run_once()
    later = [n for n in rows(gateway) if n.decision_id == second]
    assert [n.status for n in later] == ["dead"] and "disabled" in later[0].last_error
    assert len(receiver.requests) == 1
    assert first != second


def test_a_client_error_is_permanent(dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, 400)
    _decide(gateway, receiver.url)
    dispatch(gateway, **SETTINGS).run_once()
    note = row(gateway)
    assert note.status == "dead" and note.last_error == "webhook answered HTTP 400"


@pytest.mark.parametrize("status", [429, 408])
def test_rate_limits_and_timeouts_are_retried_honouring_retry_after(
        dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer, status: int) -> None:
    receiver = Receiver(httpserver, status, headers={"Retry-After": "120"})
    _decide(gateway, receiver.url)
    now = dt.datetime.now(dt.UTC)
    dispatch(gateway, **SETTINGS).run_once(now=now)
    note = row(gateway)
    assert note.status == "retrying" and note.last_error == f"webhook answered HTTP {status}"
    assert 120 <= (as_utc(note.next_attempt_at) - now).total_seconds() <= 121


def test_without_a_secret_for_the_agency_nothing_unsigned_is_sent(
        dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, 200)
    _decide(gateway, receiver.url)
    dispatch(gateway, WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_SECRETS={"Agency B": SECRET_B}).run_once()
    note = row(gateway)
    assert note.status == "retrying" and "no webhook secret is configured for 'Agency A'" in note.last_error
    assert receiver.requests == []


def test_loopback_is_refused_unless_the_deployment_allows_it(
        dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, 200)
    https_url = receiver.url.replace("http://", "https://")
    _decide(gateway, https_url)  # accepted while the deployment allowed it; then it stops allowing it
    dispatch(gateway, WEBHOOK_ALLOW_PRIVATE=False, WEBHOOK_SECRETS={"Agency A": SECRET_A}).run_once()
    note = row(gateway)
    assert note.status == "dead" and "loopback, private, link-local or reserved" in note.last_error
    assert receiver.requests == []
