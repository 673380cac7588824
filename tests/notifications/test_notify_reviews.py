"""Review notices (received, extended, outcome): rows as the review service writes them, delivered by email."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from gateway.db import write_transaction
from gateway.extensions import db
from gateway.models import Decision, Notification, ReviewRequest
from tests.conftest import Gateway
from tests.notifications.conftest import Dispatch, SMTPServer, rows

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
REQUESTED = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
DUE = dt.datetime(2026, 12, 22, 18, 59, 59, tzinfo=dt.UTC)  # 23:59:59 in Almaty
EXTENDED = dt.datetime(2027, 1, 29, 18, 59, 59, tzinfo=dt.UTC)
RESOLVED = dt.datetime(2027, 1, 10, 8, 0, tzinfo=dt.UTC)


def _review_notice(gw: Gateway, kind: str, lang: str, **review: Any) -> str:
    """Decide, then write a review and its notification row the way the review service does."""
    body = copy.deepcopy(gw.sample)
    body["subject"]["language"] = lang
    resp = gw.decide(body)
    assert resp.status_code == 201
    did = resp.get_json()["decision_id"]
    values: dict[str, Any] = {
        "id": "rev_" + kind, "decision_id": did, "status": "queued", "point_of_view": "Мой доход вырос.",
        "contest_grounds": ["data_wrong"], "language": lang, "requested_by": "subject", "requested_at": REQUESTED,
        "due_at": DUE, "fencing_token": 0, **review,
    }
    now = dt.datetime.now(dt.UTC)
    with gw.app.app_context(), write_transaction() as session:
        session.execute(Notification.__table__.update().values(status="delivered"))  # the decision notice: done
        session.add(ReviewRequest(**values))
        session.flush()
        session.add(Notification(id="ntf_" + kind, decision_id=did, kind=kind, channel="email", language=lang,
                                 status="pending", attempts=0, next_attempt_at=now, created_at=now,
                                 context={"review_id": values["id"]}))
    return str(did)


def _deliver(dispatch: Dispatch, gw: Gateway, smtp: SMTPServer) -> tuple[Any, str, str]:
    assert dispatch(gw, **smtp.config()).run_once() == 1
    note = next(n for n in rows(gw) if n.id.startswith("ntf_review"))
    assert note.status == "delivered", note.last_error
    (got,) = smtp.received
    text = got.message.get_body(("plain",)).get_content()
    html = got.message.get_body(("html",)).get_content()
    return got.message, _spaces(text), _spaces(html)


def _spaces(text: str) -> str:
    """CLDR dates use narrow no-break spaces ("2026\u202fг."): compare them as plain spaces."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


def test_review_received_in_russian(dispatch: Dispatch, gateway: Gateway, smtp_server: SMTPServer) -> None:
    did = _review_notice(gateway, "review_received", "ru")
    mail, text, html = _deliver(dispatch, gateway, smtp_server)
    assert mail["Subject"] == f"Ваш запрос на пересмотр решения {did} человеком получен"
    assert mail["Message-ID"] == "<ntf_review_received@gateway.test>"
    for body in (text, html):
        assert "Мы получили ваш запрос от 1 декабря 2026 г. на пересмотр решения" in body
        assert "рассмотрит человек, не участвовавший в принятии первоначального решения" in body
        assert "Вы получите результат не позднее 22 декабря 2026 г." in body  # the due date, local
        assert "Номер запроса на пересмотр: rev_review_received" in body
        assert "appeals@example.kz" in body and did in body


def test_review_extended_in_kazakh(dispatch: Dispatch, gateway: Gateway, smtp_server: SMTPServer) -> None:
    reason = "Қосымша құжаттар сұратылды."
    _review_notice(gateway, "review_extended", "kk", extended_until=EXTENDED, extension_reason=reason,
                   extended_by="reviewer", extended_at=REQUESTED + dt.timedelta(days=2))
    mail, text, html = _deliver(dispatch, gateway, smtp_server)
    assert _spaces(mail["Subject"]) == "Шешіміңізді қайта қарау мерзімі ұзартылды, жаңа мерзім: 2027 ж. 29 қаңтар"
    for body in (text, html):
        assert "Нәтижені алудың соңғы мерзімі: 2027 ж. 29 қаңтар." in body  # the new date
        assert f"Мерзімді ұзарту себебі: {reason}" in body  # and the reason
        assert "appeals@example.kz" in body


@pytest.mark.parametrize(("outcome", "new_outcome", "expected"), [
    ("upheld", None, "Результат пересмотра: решение оставлено в силе. Оно остаётся прежним: {original}."),
    ("changed", "approved", "Результат пересмотра: решение изменено. Новое решение: Одобрено."),
    ("annulled", None, "Результат пересмотра: решение отменено и больше не действует."),
])
def test_review_outcome_in_russian(dispatch: Dispatch, gateway: Gateway, smtp_server: SMTPServer, outcome: str,
                                   new_outcome: str | None, expected: str) -> None:
    reasons = {"ru": "Доход подтверждён справкой с места работы.", "kk": "Табыс жұмыс орнынан анықтамамен расталды."}
    did = _review_notice(gateway, "review_outcome", "ru", status="resolved", outcome=outcome, new_outcome=new_outcome,
                         reasons=reasons, point_of_view_considered=True, resolved_by="reviewer", resolved_at=RESOLVED)
    mail, text, html = _deliver(dispatch, gateway, smtp_server)
    with gateway.app.app_context():
        decision = db.session.get(Decision, did)
        assert decision is not None
        original = decision.outcome
    labels = {"approved": "Одобрено", "declined": "Отказано"}
    assert mail["Subject"] == f"Результат пересмотра решения {did} человеком"
    for body in (text, html):
        assert expected.format(original=labels[original]) in body
        assert reasons["ru"] in body and reasons["kk"] not in body  # the reasons in the person's language
        assert "При пересмотре была рассмотрена ваша позиция." in body
        assert "Дата пересмотра: 10 января 2027 г." in body
        assert "в том числе в суде" in body
        assert "Вопросы и жалобы: appeals@example.kz" in body


def test_review_withdrawn_in_kazakh(dispatch: Dispatch, gateway: Gateway, smtp_server: SMTPServer) -> None:
    did = _review_notice(gateway, "review_withdrawn", "kk", status="withdrawn")
    mail, text, html = _deliver(dispatch, gateway, smtp_server)
    assert mail["Subject"] == f"{did} шешімін адамның қайта қарауы туралы өтінішіңіз кері қайтарылды"
    for body in (text, html):
        assert "2026 ж. 1 желтоқсан күнгі өтінішіңіз сіздің сұрауыңыз бойынша кері қайтарылды" in _spaces(body)
        assert "Шешім өзгеріссіз қалады." in body
        assert "rev_review_withdrawn" in body and "appeals@example.kz" in body
