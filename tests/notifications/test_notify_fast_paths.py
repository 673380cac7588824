"""The dispatcher's cheaper paths say exactly what the standard ones say.

- ``EmailChannel.build_bytes`` writes the email directly; the standard library's ``build(...).as_bytes()`` is
  the oracle: parsed back, both have the same headers (but the boundary), the same parts, charsets and text.
- A batch's notices are rendered from data read once per batch, with the templates' ``_()`` bound to the
  notice's language: the text and HTML are the ones Flask-Babel's own ``gettext`` renders, word for word.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from typing import Any

import flask_babel
import pytest
from flask import render_template
from flask_babel import force_locale

from gateway import registry
from gateway.config import DEFAULTS
from gateway.extensions import db
from gateway.models import Decision
from gateway.notifications import render
from gateway.notifications.channels import EmailChannel, Message
from tests.conftest import Gateway
from tests.notifications.conftest import rows

CONFIG = {**DEFAULTS, "PUBLIC_BASE_URL": "https://gateway.test"}
LONG_RU = "Решение принято автоматизированной системой; вы вправе запросить пересмотр человеком. " * 3
LONG_EN = "An automated (algorithmic) system was applied to make a decision about you, and you may ask " * 2


def _message(*, recipient: str = "citizen@example.kz", subject: str, text: str, html: str,
             language: str = "ru") -> Message:
    return Message(id="ntf_fastpath0000000000001", kind="decision_notice", language=language, recipient=recipient,
                   agency="Agency A", subject=subject, text=text, html=html, payload={},
                   created_at=dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.UTC))


def _parsed(raw: bytes) -> tuple[list[tuple[str, str]], str, list[tuple[str, str | None, str]]]:
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    headers = [(name, str(value)) for name, value in mail.items() if name != "Content-Type"]
    parts = [(p.get_content_type(), p.get_content_charset(), p.get_content().replace("\r\n", "\n"))
             for p in mail.iter_parts()]
    return headers, mail.get_content_type(), parts


MESSAGES = {
    "russian, long lines (base64)": _message(subject="Уведомление об автоматизированном решении: Отказано " * 2,
                                              text=f"Здравствуйте!\n\n{LONG_RU}\n", html=f"<p>{LONG_RU}</p>"),
    "kazakh, short lines": _message(subject="Хабарлама", text="Сәлеметсіз бе!\nӨтініш тегін.\n",
                                    html="<p>Сәлеметсіз бе!</p>", language="kk"),
    "english, short lines (7bit)": _message(subject="Notice", text="Hello,\n\nDecision: Approved\n",
                                            html="<p>Hello</p>\n<p>Approved</p>", language="en"),
    "english, long lines": _message(subject="Notice of an automated decision: Approved",
                                    text=f"Hello,\n{LONG_EN}\n", html=f"<p>{LONG_EN}</p>", language="en"),
    "a line like a boundary": _message(subject="x", text="--=_\n--\n.\n", html="<p>.</p>", language="en"),
    "non-ASCII local part (the standard path)": _message(recipient="гражданин@example.kz", subject="Уведомление",
                                                         text="Текст\n", html="<p>Текст</p>"),
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_the_email_written_directly_is_the_standard_librarys(name: str) -> None:
    channel = EmailChannel(CONFIG)
    message = MESSAGES[name]
    fast, standard = channel.build_bytes(message), channel.build(message).as_bytes()
    assert _parsed(fast) == _parsed(standard)
    assert all(len(line) <= 78 for line in fast.split(b"\r\n")) and b"\n" not in fast.replace(b"\r\n", b"")
    boundary = email.message_from_bytes(fast, policy=email.policy.default).get_boundary()
    assert fast == standard or fast.count(f"\r\n--{boundary}".encode()) == 3  # two parts, the closing one


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_notices_render_as_flask_babel_renders_them(gateway: Gateway, lang: str) -> None:
    body = {**gateway.sample, "subject": {**gateway.sample["subject"], "language": lang}}
    assert gateway.decide(body).status_code == 201
    (note,) = rows(gateway)
    with gateway.app.app_context():
        job = render.Job(note.id, note.decision_id, note.kind, note.channel, note.language, 0,
                         dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.UTC))
        prefetched = render.Prefetched.of([job])
        message = render.message_for(job, prefetched)
        decision = db.session.get(Decision, job.decision_id)
        assert decision is not None
        # The very content the notice was rendered from (its links carry a signed, time-stamped token).
        content: dict[str, Any] = {k: v for k, v in message.payload["data"].items() if k not in ("subject", "text")}
        assert content == render.content_for(job, decision, registry.manifest_of(decision.model_id), None, lang) | {
            "links": content["links"], "rights": content["rights"]}
        with force_locale(lang):  # Flask-Babel's gettext, looked up per call: the reference
            text = render_template(f"notices/{job.kind}.txt", c=content, subject=message.subject)
            html = render_template(f"notices/{job.kind}.html", c=content, subject=message.subject)
            subject = flask_babel.gettext("Notice of an automated decision: %(outcome)s",
                                          outcome=content["outcome"]["label"])
    assert message.text.strip() == re.sub(r"\n{3,}", "\n\n", text).strip()
    assert message.html == html and message.subject == subject
    assert message.recipient == "citizen@example.kz" and message.agency == prefetched.agencies[decision.client_id]
