"""The decision notice by email: a real SMTP server (aiosmtpd) receives it, in the person's language."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway
from tests.notifications.conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    Dispatch,
    SMTPServer,
    as_utc,
    row,
    rows,
)

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

# Sentences every notice must carry, in each language (the catalogs' own words).
EXPECTED = {
    "kk": {
        "greeting": "Сәлеметсіз бе!",
        "automated": "автоматтандырылған (алгоритмдік) жүйе қолданылды",
        "sole_basis": "Жүйенің нәтижесі шешімнің жалғыз негізі болды",
        "free": "Өтініш тегін",
        "subject": "Автоматтандырылған шешім туралы хабарлама",
        "month": {11: "қараша", 12: "желтоқсан", 1: "қаңтар"},
    },
    "ru": {
        "greeting": "Здравствуйте!",
        "automated": "была применена автоматизированная (алгоритмическая) система",
        "sole_basis": "Результат работы системы стал единственным основанием решения",
        "free": "Запрос бесплатный",
        "subject": "Уведомление об автоматизированном решении",
        "month": {11: "ноября", 12: "декабря", 1: "января"},
    },
    "en": {
        "greeting": "Hello,",
        "automated": "An automated (algorithmic) system was applied to make a decision about you.",
        "sole_basis": "The system's result was the sole basis of the decision",
        "free": "The request is free of charge.",
        "subject": "Notice of an automated decision",
        "month": {11: "November", 12: "December", 1: "January"},
    },
}
OUTCOME_LABELS = {"approved": {"kk": "Мақұлданды", "ru": "Одобрено", "en": "Approved"},
                  "declined": {"kk": "Бас тартылды", "ru": "Отказано", "en": "Declined"}}


def _decide(gw: Gateway, lang: str = "kk", contact: dict[str, str] | None = None) -> dict[str, Any]:
    body = copy.deepcopy(gw.sample)
    body["subject"]["language"] = lang
    if contact is not None:
        body["subject"]["contact"] = contact
    resp = gw.decide(body)
    assert resp.status_code == 201, resp.get_json()
    created: dict[str, Any] = resp.get_json()
    return created


def _parts(message: Any) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    return text.get_content(), html.get_content()


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_the_decision_notice_arrives_by_email_with_every_element_in_the_persons_language(dispatch: Dispatch, gateway: Gateway, smtp_server: SMTPServer, lang: str) -> None:
    decision = _decide(gateway, lang)
    did = decision["decision_id"]
    assert dispatch(gateway, **smtp_server.config()).run_once() == 1

    assert len(smtp_server.received) == 1
    got = smtp_server.received[0]
    note = row(gateway)
    mail = got.message
    # Envelope and headers.
    assert got.rcpt_tos == ["citizen@example.kz"] and mail["To"] == "citizen@example.kz"
    assert got.mail_from == "notices@gateway.test" and mail["From"] == "notices@gateway.test"
    assert mail["Message-ID"] == f"<{note.id}@gateway.test>"
    assert mail["Content-Language"] == lang and mail["Auto-Submitted"] == "auto-generated"
    outcome = OUTCOME_LABELS[decision["outcome"]][lang]
    expected = EXPECTED[lang]
    assert mail["Subject"] == f"{expected['subject']}: {outcome}"
    assert mail["Date"] is not None
    text, html = _parts(mail)
    assert f'<html lang="{lang}">' in html

    # Every element of the notice, in the plain text and in the HTML.
    links = decision["links"]
    decided = as_utc(dt.datetime.fromisoformat(decision["created_at"]))
    deadline = decided.astimezone(ZoneInfo("Asia/Almaty")).date() + dt.timedelta(days=30)
    with gateway.app.app_context():
        manifest = db.session.execute(sa.text("SELECT manifest FROM scoring_models")).scalar_one()
    if isinstance(manifest, str):
        manifest = json.loads(manifest)
    notice = manifest["notice"]
    # The rights are exercised on pages, reached through the person's own link (…&next=explanation|review).
    # (the person's link reaches the person only: it is read from the notice, the agency never had it)
    personal = re.search(r"https://gateway\.test/d/" + did + r"\?token=gwc_[^\s<\"&]+", text)
    assert personal is not None, text
    pages = {"explanation": personal.group(0) + "&next=explanation", "review": personal.group(0) + "&next=review"}
    for body in (text, html.replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")):
        assert expected["greeting"] in body
        assert expected["automated"] in body  # an automated (algorithmic) system was applied
        assert "german-credit" in body and "1.0.0" in body  # which system
        assert (notice["owner"].get(lang) or notice["owner"]["ru"]) in body  # whose
        assert (notice["purpose"].get(lang) or notice["purpose"]["ru"]) in body  # its purpose
        assert outcome in body  # the outcome
        assert expected["sole_basis"] in body  # the role of the system
        assert pages["explanation"] in body and pages["review"] in body  # how to use the rights
        # How the system works: the version that decided, in the notice's language.
        assert f"https://gateway.test/register/german-credit/1.0.0?lang={lang}" in body
        assert expected["free"] in body
        assert str(deadline.day) in body and expected["month"][deadline.month] in body and str(deadline.year) in body
        assert notice["contact"] in body  # the contact
        assert did in body  # the decision id
    for url in pages.values():
        assert f'href="{url.replace("&", "&amp;")}"' in html
    assert "citizen@example.kz" not in text  # the body does not repeat the address

    # The links work: the person's own link (its token opens the decision and the explanation), the
    # explanation and the decision for the agency, and the review link is the review endpoint.
    citizen = re.search(r"https://gateway\.test/d/" + did + r"\?token=(gwc_[^\s<\"&]+)", text)
    assert citizen is not None and citizen.group(0) in html
    person = {"Authorization": f"Bearer {citizen.group(1)}"}
    assert gateway.client.get(f"/v1/decisions/{did}/explanation", headers=person).status_code == 200
    auth = gateway.auth("agency_a")
    for url in (links["explanation"], links["decision"]):
        assert url.startswith("https://gateway.test/")
        assert gateway.client.get(urlsplit(url).path, headers=auth).status_code == 200, url
    gateway.app.url_map.bind("gateway.test").match(urlsplit(links["review"]).path, method="POST")  # raises if none
    # And the pages: each link starts the person's session and lands on its page.
    for name, url in pages.items():
        browser = gateway.app.test_client()
        parts = urlsplit(url)
        landed = browser.get(f"{parts.path}?{parts.query}")
        assert landed.status_code == 303 and landed.headers["Location"] == f"/d/{did}/{name}"
        assert browser.get(landed.headers["Location"]).status_code == 200
    assert gateway.client.get("/register/german-credit/1.0.0").status_code == 200

    # The agency sees the delivery.
    view = gateway.client.get(f"/v1/decisions/{did}", headers=auth).get_json()
    (shown,) = view["notifications"]
    assert shown["status"] == "delivered" and shown["attempts"] == 1 and shown["next_attempt_at"] is None
    assert shown["delivered_at"] is not None and shown["last_error"] is None


def test_starttls_with_credentials(dispatch: Dispatch, gateway: Gateway, tls_smtp_server: tuple[SMTPServer, Any]) -> None:
    server, ca_file = tls_smtp_server
    _decide(gateway, "ru")
    config = server.config(SMTP_SECURITY="starttls", SMTP_CA_FILE=str(ca_file), SMTP_USERNAME=SMTP_USER,
                           SMTP_PASSWORD=SMTP_PASSWORD)
    dispatch(gateway, **config).run_once()
    assert row(gateway).status == "delivered", row(gateway).last_error
    assert server.logins == [SMTP_USER] and len(server.received) == 1


def test_a_wrong_password_is_retried_not_given_up(dispatch: Dispatch, gateway: Gateway, tls_smtp_server: tuple[SMTPServer, Any]) -> None:
    server, ca_file = tls_smtp_server
    _decide(gateway)
    dispatch(gateway, **server.config(SMTP_SECURITY="starttls", SMTP_CA_FILE=str(ca_file), SMTP_USERNAME=SMTP_USER,
                                        SMTP_PASSWORD="wrong")).run_once()
    note = row(gateway)
    assert note.status == "retrying" and note.last_error.startswith("SMTP reply 535")
    assert server.received == []


def test_an_unverifiable_certificate_is_not_trusted(dispatch: Dispatch, gateway: Gateway, tls_smtp_server: tuple[SMTPServer, Any]) -> None:
    server, _ca_file = tls_smtp_server
    _decide(gateway)
    dispatch(gateway, **server.config(SMTP_SECURITY="starttls", SMTP_USERNAME=SMTP_USER,
                                        SMTP_PASSWORD=SMTP_PASSWORD)).run_once()
    note = row(gateway)
    assert note.status == "retrying" and "CERTIFICATE_VERIFY_FAILED" in note.last_error
    assert server.logins == [] and server.received == []


def test_a_refused_mailbox_is_dead_and_the_address_is_stored_nowhere(dispatch: Dispatch, gateway: Gateway) -> None:
    server = SMTPServer(refuse="550 5.1.1 <citizen@example.kz>: no such mailbox").start()
    try:
        _decide(gateway)
        dispatch(gateway, **server.config()).run_once()
    finally:
        server.stop()
    note = row(gateway)
    assert note.status == "dead" and note.attempts == 1
    assert note.last_error == "SMTP server refused the recipient (reply 550)"
    with gateway.app.app_context():
        dumped = "\n".join(repr(tuple(r)) for t in db.metadata.sorted_tables for r in db.session.execute(sa.select(t)))
    assert "citizen@example.kz" not in dumped


def test_a_temporary_refusal_is_retried(dispatch: Dispatch, gateway: Gateway) -> None:
    server = SMTPServer(refuse="450 4.2.1 mailbox busy, try later").start()
    try:
        _decide(gateway)
        dispatch(gateway, **server.config()).run_once()
    finally:
        server.stop()
    assert row(gateway).status == "retrying"


def test_an_unreachable_server_schedules_the_first_retry_about_five_seconds_later(dispatch: Dispatch, gateway: Gateway) -> None:
    from tests.notifications.conftest import free_port

    _decide(gateway)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    dispatch(gateway, SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), SMTP_SECURITY="none").run_once(now=now)
    note = row(gateway)
    assert note.status == "retrying" and note.attempts == 1 and note.claimed_by is None
    assert re.match(r"SMTP (ConnectionRefusedError|OSError)", note.last_error), note.last_error
    delay = (as_utc(note.next_attempt_at) - now).total_seconds()
    assert 4.5 <= delay <= 5.5


def test_without_smtp_settings_email_notices_wait(dispatch: Dispatch, gateway: Gateway) -> None:
    _decide(gateway)
    dispatch(gateway).run_once()
    note = row(gateway)
    assert note.status == "retrying" and "GATEWAY_SMTP_HOST" in note.last_error
    view = gateway.client.get(f"/v1/decisions/{note.decision_id}", headers=gateway.auth("agency_a")).get_json()
    (shown,) = view["notifications"]
    assert shown["status"] == "retrying" and shown["next_attempt_at"] is not None
    assert "GATEWAY_SMTP_HOST" in shown["last_error"]


@pytest.mark.gateway_config(WEBHOOK_ALLOW_PRIVATE=True)  # the receiver is local: a lab deployment (issue 11)
def test_email_and_webhook_contacts_get_one_notice_each(dispatch: Dispatch, gateway: Gateway, smtp_server: SMTPServer) -> None:
    from tests.notifications.conftest import SECRET_A
    from tests.notifications.receiver import WebhookReceiver

    with WebhookReceiver(SECRET_A) as receiver:
        _decide(gateway, "ru", {"email": "citizen@example.kz", "webhook": receiver.url})
        dispatch(gateway, **smtp_server.config(), WEBHOOK_ALLOW_PRIVATE=True,
                   WEBHOOK_SECRETS={"Agency A": SECRET_A}).run_once()
        notes = {n.channel: n for n in rows(gateway)}
        assert {c: n.status for c, n in notes.items()} == {"email": "delivered", "webhook": "delivered"}
        assert len(smtp_server.received) == 1 and receiver.accepted() == 1
        assert smtp_server.received[0].message["Message-ID"] == f"<{notes['email'].id}@gateway.test>"
        assert receiver.deliveries[0].webhook_id == notes["webhook"].id
