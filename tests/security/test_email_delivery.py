"""Findings 4 and 14 (subject): notices to internationalised domains died on relays without SMTPUTF8; the
Russian subject lost a space between encoded words. A real SMTP server (aiosmtpd) receives them."""

from __future__ import annotations

import copy
import email
import random
from collections.abc import Iterator
from email.header import decode_header, make_header
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from gateway.extensions import db
from gateway.notifications import Dispatcher
from gateway.notifications.channels.email import encoded_subject
from tests.conftest import Gateway
from tests.notifications.conftest import SMTPServer, free_port


class Relay(SMTPServer):
    """The tests' SMTP server, with SMTPUTF8 offered or not."""

    smtputf8: bool = False

    def start(self) -> Relay:
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=self.smtputf8)
        self._controller.start()
        return self


@pytest.fixture(params=[False, True], ids=["no-smtputf8", "smtputf8"])
def relay(request: pytest.FixtureRequest) -> Iterator[Relay]:
    server = Relay()
    server.smtputf8 = request.param
    server.start()
    yield server
    server.stop()


def deliver(gw: Gateway, relay: Relay, address: str) -> Any:
    body = copy.deepcopy(gw.sample)
    body["subject"]["contact"] = {"email": address}
    body["subject"]["language"] = "ru"
    resp = gw.decide(body)
    assert resp.status_code == 201, resp.get_json()
    gw.app.config.update(relay.config())
    dispatcher = Dispatcher(gw.app, rng=random.Random(7), name="security")
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    with gw.app.app_context():
        return db.session.execute(sa.text("SELECT status, last_error FROM notifications")).one()


@pytest.mark.parametrize("address", ["citizen@xn--e1afmkfd.xn--80ao21a", "citizen@пример.қаз"])
def test_an_internationalised_domain_is_sent_in_its_ascii_form(gateway: Gateway, relay: Relay, address: str) -> None:
    note = deliver(gateway, relay, address)
    assert note.status == "delivered", note.last_error
    got = relay.received[0]
    assert got.rcpt_tos == ["citizen@xn--e1afmkfd.xn--80ao21a"]
    assert got.message["To"] == "citizen@xn--e1afmkfd.xn--80ao21a"


def test_a_non_ascii_local_part_needs_smtputf8_and_says_so(gateway: Gateway, relay: Relay) -> None:
    note = deliver(gateway, relay, "гражданин@пример.қаз")
    if relay.smtputf8:
        assert note.status == "delivered", note.last_error
        assert relay.received[0].rcpt_tos == ["гражданин@xn--e1afmkfd.xn--80ao21a"]
    else:
        assert note.status == "retrying" and "SMTPUTF8" in note.last_error
        assert "гражданин" not in note.last_error and not relay.received


def client_subject(raw: bytes) -> str:
    """The subject as a mail client reads it: RFC 2047, whitespace between encoded words ignored."""
    return str(make_header(decode_header(email.message_from_bytes(raw)["Subject"])))


@pytest.mark.parametrize("subject", [
    "Уведомление об автоматизированном решении: Отказано",
    "Ваш запрос на рассмотрение человеком решения dec_SYZEbo8D5OdoWd1_1CI2fg получен",
    "Рассмотрение вашего решения человеком продлено до 8 января 2027 г.",
    "Результат рассмотрения человеком решения dec_SYZEbo8D5OdoWd1_1CI2fg по вашей заявке о кредите",
    "Notice of an automated decision: Declined",
    # Folded by Python 3.11's policy at the space before "Ваш", which RFC 2047 readers then drop ("январяВаш").
    "запрос человеком заявке рассмотрение решении автоматизированном в января Ваш решении решении",
])
def test_the_subject_reads_back_with_every_space(subject: str) -> None:
    from email.message import EmailMessage
    from email.policy import SMTP

    mail = EmailMessage(policy=SMTP)
    mail.set_raw("Subject", encoded_subject(subject))
    mail.set_content("x")
    assert client_subject(mail.as_bytes()) == subject


def test_random_russian_subjects_keep_their_spaces() -> None:
    from email.message import EmailMessage
    from email.policy import SMTP

    words = ["Уведомление", "об", "автоматизированном", "решении", "отказано", "одобрено", "в", "предоставлении", "кредита", "по", "заявке", "Ваш", "запрос", "на", "рассмотрение", "человеком", "получен", "до", "января", "2027", "г.", "dec_SYZEbo8D5"]
    rng = random.Random(11)
    for _ in range(300):
        subject = " ".join(rng.choice(words) for _ in range(rng.randint(2, 16)))
        mail = EmailMessage(policy=SMTP)
        mail.set_raw("Subject", encoded_subject(subject))
        mail.set_content("x")
        assert client_subject(mail.as_bytes()) == subject


def test_the_delivered_notice_subject_reads_back_as_rendered(gateway: Gateway, relay: Relay) -> None:
    deliver(gateway, relay, "citizen@example.kz")
    raw = relay.received[0].raw
    assert client_subject(raw) == str(relay.received[0].message["Subject"])
    assert "  " not in client_subject(raw) and client_subject(raw).startswith("Уведомление об автоматизированном")
