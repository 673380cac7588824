"""Findings 9 and 10: IPv6 forms that embed IPv4 passed the webhook guard; a host the HTTP client refused
landed in logs and last_error. The tests try both again: at intake (422), at the channel, and through the
dispatcher (scanning every log record and the stored last_error)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import random
import socket
from typing import Any

import pytest
import sqlalchemy as sa

from gateway import decisions
from gateway.auth import Principal
from gateway.config import DEFAULTS
from gateway.extensions import db
from gateway.notifications import Dispatcher
from gateway.notifications.channels import CHANNELS
from gateway.notifications.channels.base import Message, PermanentFailure
from gateway.notifications.channels.webhook import AddressRefused, WebhookChannel, is_public
from tests.conftest import Gateway

SECRET = "whsec_" + base64.b64encode(b"agency A signs its webhooks with this").decode()
CONFIG = {**DEFAULTS, "PUBLIC_BASE_URL": "https://gateway.test", "WEBHOOK_SECRETS": {"Agency A": SECRET}}
EMBEDDED = ["::127.0.0.1", "::10.0.0.1", "::169.254.169.254", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1", "2002:a00:1::", "fec0::1", "::ffff:192.168.0.1", "2001:0:4136:e378:8000:63bf:f5ff:fffe"]


def message(recipient: str) -> Message:
    return Message(id="ntf_security00000000000001", kind="decision_notice", language="ru", recipient=recipient,
                   agency="Agency A", subject="Уведомление", text="Текст\n", html="<p>Текст</p>",
                   payload={"type": "notification.decision_notice", "data": {}},
                   created_at=dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.UTC))


@pytest.mark.parametrize("address", EMBEDDED)
def test_ipv6_forms_that_embed_a_private_ipv4_address_are_not_public(address: str) -> None:
    assert is_public(address) is False


@pytest.mark.parametrize("address", ["2002:5db8:d822::1", "64:ff9b::5db8:d822", "2a00:1450:4001:81b::200e"])
def test_an_embedded_public_address_stays_public(address: str) -> None:
    assert is_public(address) is True


@pytest.mark.parametrize("address", EMBEDDED)
def test_the_channel_refuses_a_literal_embedded_address(address: str) -> None:
    channel = WebhookChannel(CONFIG)
    try:
        with pytest.raises(PermanentFailure, match="loopback, private"):
            channel.send(message(f"https://[{address}]/hook"))
    finally:
        channel.close()


@pytest.mark.parametrize("url", [*(f"https://[{a}]/hook" for a in EMBEDDED), "http://example.kz/hook",
                                 "https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://localhost/hook",
                                 "https://⒈.example/hook"])
def test_the_intake_refuses_what_can_never_be_delivered(gateway: Gateway, url: str) -> None:
    body = gateway.sample | {"subject": gateway.sample["subject"] | {"contact": {"webhook": url}}}
    resp = gateway.decide(body)
    assert resp.status_code == 422, resp.get_json()
    assert [d["field"] for d in resp.get_json()["error"]["details"]] == ["subject.contact.webhook"]
    assert url not in resp.get_data(as_text=True)


@pytest.mark.gateway_config(WEBHOOK_ALLOW_PRIVATE=True)
def test_a_lab_deployment_may_allow_private_targets(gateway: Gateway) -> None:
    body = gateway.sample | {"subject": gateway.sample["subject"] | {"contact": {"webhook": "http://127.0.0.1:9/h"}}}
    assert gateway.decide(body).status_code == 201


HOST = "⒈.example"
URL = f"https://{HOST}/hooks/person-4242?who=citizen-77"


def test_a_host_the_http_client_refuses_never_reaches_logs_or_last_error(
        gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Stored before the intake refused such hosts: the service takes plain values, as the CLI does.
    with gateway.app.app_context():
        client = db.session.execute(sa.text("SELECT id, name, body FROM api_clients WHERE name = 'agency_a'")).one()
        decisions.record_decision(
            Principal(client.id, client.name, client.body, "agency"), "german-credit",
            decisions.DecisionInput(iin=gateway.sample["subject"]["iin"], language="ru", contact={"webhook": URL},
                                    features=gateway.sample["features"]),
            idempotency_key="idna-host", request_hash="x")
    gateway.app.config.update(WEBHOOK_SECRETS={"Agency A": SECRET})
    dispatcher = Dispatcher(gateway.app, rng=random.Random(7), name="security")
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    with gateway.app.app_context():
        errors = [r.last_error for r in db.session.execute(sa.text("SELECT last_error FROM notifications")).all()]
    assert errors and all(errors)
    seen: list[Any] = [*errors, *(r.getMessage() for r in caplog.records), *(str(r.exc_info) for r in caplog.records)]
    seen += [r.exc_text or "" for r in caplog.records]
    parts = [URL, HOST, "xn--", "person-4242", "citizen-77", "/hooks", "⒈", "\\u2488", "U+2488"]
    leaks = [(part, line) for line in seen for part in parts if part.lower() in str(line).lower()]
    assert not leaks, leaks[:3]


class _QuotingChannel:
    """A channel plug-in with a bug whose exception quotes the address (and chains one that does too)."""

    name = "webhook"

    def __init__(self, config: Any) -> None:
        self.config = config

    def send(self, message: Message) -> None:
        try:
            raise OSError(f"connect to {message.recipient} failed")
        except OSError as exc:
            raise RuntimeError(f"cannot post to {message.recipient.split('/')[2]} ({message.recipient})") from exc

    def close(self) -> None:
        pass


def test_an_unexpected_error_that_quotes_the_address_is_logged_without_it(
        gateway: Gateway, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher's last line of defence: whatever a channel raises, the log and last_error hold no part of
    the address (a traceback printed as is would carry the exception's text)."""
    url = "https://hooks.example.kz/person-4242?who=citizen-77"
    body = gateway.sample | {"subject": gateway.sample["subject"] | {"contact": {"webhook": url}}}
    assert gateway.decide(body).status_code == 201
    monkeypatch.setitem(CHANNELS, "webhook", _QuotingChannel)
    caplog.set_level(logging.DEBUG)
    dispatcher = Dispatcher(gateway.app, rng=random.Random(7), name="security")
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    with gateway.app.app_context():
        errors = [r.last_error for r in db.session.execute(sa.text("SELECT last_error FROM notifications "
                                                                   "WHERE channel = 'webhook'")).all()]
    assert errors and all("RuntimeError" in e for e in errors), errors
    logged = [f"{r.getMessage()}\n{caplog.handler.format(r)}" for r in caplog.records]  # with any traceback
    assert any("unexpected error" in line and "RuntimeError" in line and "OSError" in line for line in logged)
    parts = [url, "hooks.example.kz", "example.kz", "person-4242", "citizen-77"]
    leaks = [(part, line) for line in [*errors, *logged] for part in parts if part in line]
    assert not leaks, leaks[:3]


def test_a_host_name_that_resolves_to_a_private_address_is_refused_at_connect_time() -> None:
    """No literal to refuse at intake: the address DNS answers is checked when connecting (same unwrapping)."""
    host = socket.gethostname()
    try:
        addresses = {str(i[4][0]) for i in socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        pytest.skip(f"this machine's host name {host!r} does not resolve")
    if any(is_public(a) for a in addresses):
        pytest.skip(f"{host!r} resolves to a public address here")
    channel = WebhookChannel(CONFIG)
    try:
        with pytest.raises(AddressRefused, match="resolves to a loopback, private"):
            channel.send(message(f"https://{host}/hook"))
    finally:
        channel.close()
