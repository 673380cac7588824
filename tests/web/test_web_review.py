"""The review request form and withdrawal: server-side checks in the person's language, CSRF, nothing half-recorded."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any

import sqlalchemy as sa
from babel.dates import format_date

from gateway.extensions import db
from tests.conftest import Gateway
from tests.web.support import Person, person, text


def count(gw: Gateway, sql: str, **params: Any) -> int:
    with gw.app.app_context():
        return int(db.session.execute(sa.text(sql), params).scalar_one())


def recorded(gw: Gateway, decision_id: str) -> tuple[int, int, int]:
    """Reviews, review notices and review audit leaves of the decision: all must stay 0 after a refusal."""
    return (count(gw, "SELECT count(*) FROM reviews WHERE decision_id = :d", d=decision_id),
            count(gw, "SELECT count(*) FROM notifications WHERE decision_id = :d AND kind <> 'decision_notice'", d=decision_id),
            count(gw, "SELECT count(*) FROM log_leaves WHERE kind LIKE 'review:%'"))


def send(me: Person, **fields: Any) -> Any:
    form = {"csrf_token": me.csrf(f"/d/{me.decision_id}/review"), "point_of_view": "Менің табысым өсті.",
            "contest_grounds": ["wrong_data"], "language": "kk"} | fields
    return me.browser.post(f"/d/{me.decision_id}/review", data={k: v for k, v in form.items() if v is not None})


def error_of(resp: Any, field_id: str) -> str:
    body = resp.get_data(as_text=True)
    found = re.search(rf'<p id="{re.escape(field_id)}-error" class="error">([^<]*)</p>', body)
    assert found, f"no error next to {field_id}"
    return found.group(1)


def test_the_form_is_built_from_the_feature_schema(gateway: Gateway) -> None:
    me = person(gateway, language="ru")
    body = me.browser.get(f"/d/{me.decision_id}/review").get_data(as_text=True)
    assert '<form id="review-form" method="post"' in body and 'name="csrf_token"' in body
    assert '<label for="point_of_view">' in body and 'maxlength="10000"' in body
    assert "<fieldset id=\"contest_grounds\"" in body and "<legend>Почему вы оспариваете решение?</legend>" in body
    for ground in ("wrong_data", "wrong_assessment", "other"):
        assert f'id="ground-{ground}" name="contest_grounds" value="{ground}"' in body
    # Mutable numbers with their range and unit, categories with their labels; fixed inputs are not offered.
    assert re.search(r'<input type="number" id="corrected-duration_months" name="corrected.duration_months" '
                     r'inputmode="numeric" min="1" max="120" step="1"', body)
    assert '<label for="corrected-duration_months">' in body and "(мес.)" in body
    assert 'name="corrected.savings"' in body and '<option value="500_to_1000"' in body
    for fixed in ("credit_history", "age", "num_dependents", "sex"):
        assert f"corrected.{fixed}" not in body
    assert '<select id="language" name="language">' in body


def test_a_valid_request_is_recorded_and_confirmed_with_its_due_date(gateway: Gateway) -> None:
    me = person(gateway, language="ru")
    resp = send(me, **{"corrected.savings": "500_to_1000", "corrected.duration_months": "36", "language": "ru",
                       "contest_grounds": ["wrong_data", "other"]})
    assert resp.status_code == 303 and resp.headers["Location"] == f"/d/{me.decision_id}/review?sent=1"
    with gateway.app.app_context():
        row = db.session.execute(sa.text("SELECT * FROM reviews WHERE decision_id = :d"), {"d": me.decision_id}).one()
    assert row.point_of_view == "Менің табысым өсті." and row.language == "ru" and not row.late
    assert "500_to_1000" in str(row.corrected_data) and "36" in str(row.corrected_data)
    page = me.browser.get(resp.headers["Location"])
    assert 'id="review-sent"' in page.get_data(as_text=True)
    due = gateway.client.get(f"/v1/reviews/{row.id}", headers=gateway.auth("agency_a")).get_json()["effective_due_at"]
    assert due is not None
    assert "Ваш запрос получен" in text(page) and "уведомление о получении вашего запроса уже отправляется вам" in text(page)
    # The last day of the period (due_at is the midnight that ends it), and no double full stop after «г.».
    last = dt.datetime.fromisoformat(due).astimezone(zoneinfo.ZoneInfo("Asia/Almaty")) - dt.timedelta(microseconds=1)
    assert f"не позднее {format_date(last.date(), 'long', locale='ru')}".replace("\u202f", " ").replace("\xa0", " ") in text(page)
    assert "г.." not in text(page)
    assert recorded(gateway, me.decision_id) == (1, 1, 1)  # the review_received notice is in the outbox
    # The decision page now shows it; the form page shows the open request instead of the form.
    assert "ожидает проверяющего" in text(me.browser.get(f"/d/{me.decision_id}"))
    assert 'id="review-form"' not in me.browser.get(f"/d/{me.decision_id}/review").get_data(as_text=True)


def test_an_empty_point_of_view_is_refused_next_to_its_field(gateway: Gateway) -> None:
    me = person(gateway, language="kk")
    resp = send(me, point_of_view="   ")
    assert resp.status_code == 422
    assert error_of(resp, "point_of_view") == "Ұстанымыңызды жазыңыз: шешімде не дұрыс емес және неге."
    body = resp.get_data(as_text=True)
    assert 'aria-describedby="point_of_view-hint point_of_view-error"' in body and 'aria-invalid="true"' in body
    assert 'id="error-summary"' in body and 'href="#point_of_view"' in body
    assert recorded(gateway, me.decision_id) == (0, 0, 0)


def test_a_point_of_view_over_the_limit_is_refused(gateway: Gateway) -> None:
    me = person(gateway, language="en")
    resp = send(me, point_of_view="x" * 10001)
    assert resp.status_code == 422
    assert error_of(resp, "point_of_view") == "Your point of view is too long: at most 10000 characters, you wrote 10001."
    assert recorded(gateway, me.decision_id) == (0, 0, 0)


def test_a_corrected_value_out_of_range_is_refused_and_what_was_typed_is_kept(gateway: Gateway) -> None:
    me = person(gateway, language="ru")
    resp = send(me, **{"corrected.duration_months": "500", "corrected.savings": "500_to_1000",
                       "point_of_view": "Срок указан неверно."})
    assert resp.status_code == 422
    assert error_of(resp, "corrected-duration_months") == "Введите значение от 1 до 120."
    body = resp.get_data(as_text=True)
    assert 'value="500"' in body and "Срок указан неверно." in body  # nothing the person typed is lost
    assert re.search(r'<option value="500_to_1000" selected>', body)
    assert recorded(gateway, me.decision_id) == (0, 0, 0)
    assert error_of(send(me, **{"corrected.duration_months": "12.5"}), "corrected-duration_months") == "Введите целое число."
    assert error_of(send(me, **{"corrected.savings": "millions"}), "corrected-savings") == "Выберите значение из списка."


def test_a_fixed_or_unknown_feature_injected_in_the_post_is_refused(gateway: Gateway) -> None:
    me = person(gateway, language="en")
    for injected in ("corrected.age", "corrected.credit_history", "corrected.sex", "corrected.no_such_input"):
        resp = send(me, **{injected: "30"})
        assert resp.status_code == 422, injected
        assert error_of(resp, "corrected") == "Only the values offered in this form can be corrected.", injected
    assert recorded(gateway, me.decision_id) == (0, 0, 0)


def test_grounds_are_required_and_from_the_list(gateway: Gateway) -> None:
    me = person(gateway, language="en")
    assert error_of(send(me, contest_grounds=None), "contest_grounds") == "Choose at least one reason."
    assert error_of(send(me, contest_grounds=["because"]), "contest_grounds") == "Choose reasons from the list only."
    assert recorded(gateway, me.decision_id) == (0, 0, 0)


def test_a_missing_or_wrong_csrf_token_is_refused_with_a_clear_page(gateway: Gateway) -> None:
    me = person(gateway, language="ru")
    form = {"point_of_view": "Позиция.", "contest_grounds": "wrong_data", "language": "ru"}
    for token in (None, "forged-token", me.csrf(f"/d/{me.decision_id}/review") + "x"):
        data = form | ({"csrf_token": token} if token else {})
        resp = me.browser.post(f"/d/{me.decision_id}/review", data=data)
        assert resp.status_code == 400 and resp.mimetype == "text/html"
        assert "Срок действия формы истёк" in text(resp) and "Ничего не было записано." in text(resp)
    # A token from another person's session does not work either.
    other = person(gateway, "061211600012", language="ru")
    stolen = other.csrf(f"/d/{other.decision_id}/review")
    assert me.browser.post(f"/d/{me.decision_id}/review", data=form | {"csrf_token": stolen}).status_code == 400
    assert recorded(gateway, me.decision_id) == (0, 0, 0)


def test_the_json_api_needs_no_csrf_token(gateway: Gateway) -> None:
    me = person(gateway)
    resp = gateway.client.post(f"/v1/decisions/{me.decision_id}/reviews", headers={"Authorization": f"Bearer {me.token}"},
                               json={"point_of_view": "API.", "contest_grounds": ["other"]})
    assert resp.status_code == 201


def test_a_second_request_while_one_is_open_is_refused(gateway: Gateway) -> None:
    me = person(gateway, language="en")
    token = me.csrf(f"/d/{me.decision_id}/review")
    assert send(me).status_code == 303
    resp = me.browser.post(f"/d/{me.decision_id}/review", data={
        "csrf_token": token, "point_of_view": "Again.", "contest_grounds": "other", "language": "en"})
    assert resp.status_code == 409 and "This decision already has an open review request." in text(resp)
    assert recorded(gateway, me.decision_id)[0] == 1


def test_withdrawal_with_a_confirmation_step(gateway: Gateway) -> None:
    me = person(gateway, language="kk")
    assert send(me).status_code == 303
    review_page = me.browser.get(f"/d/{me.decision_id}/review").get_data(as_text=True)
    assert 'id="open-review"' in review_page and f'href="/d/{me.decision_id}/review/withdraw"' in review_page
    confirm = me.browser.get(f"/d/{me.decision_id}/review/withdraw")
    assert confirm.status_code == 200 and 'id="withdraw-form"' in confirm.get_data(as_text=True)
    assert count(gateway, "SELECT count(*) FROM reviews WHERE status = 'withdrawn'") == 0  # GET changes nothing
    review_id = re.search(r'name="review_id" value="([^"]+)"', confirm.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    token = re.search(r'name="csrf_token" value="([^"]+)"', confirm.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    assert me.browser.post(f"/d/{me.decision_id}/review/withdraw", data={"review_id": review_id}).status_code == 400
    resp = me.browser.post(f"/d/{me.decision_id}/review/withdraw", data={"review_id": review_id, "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["Location"] == f"/d/{me.decision_id}/review?withdrawn=1"
    done = me.browser.get(resp.headers["Location"])
    assert "Қайта қарау туралы өтінішіңіз кері қайтарылды" in text(done)
    assert 'id="review-form"' in done.get_data(as_text=True)  # a new request may be made
    assert count(gateway, "SELECT count(*) FROM reviews WHERE status = 'withdrawn'") == 1
    assert count(gateway, "SELECT count(*) FROM notifications WHERE kind = 'review_withdrawn'") == 1
    assert "сіз кері қайтардыңыз" in text(me.browser.get(f"/d/{me.decision_id}"))
    # Withdrawing again: not open any more, said plainly.
    again = me.browser.post(f"/d/{me.decision_id}/review/withdraw", data={"review_id": review_id, "csrf_token": token})
    assert again.status_code == 409 and "енді қаралу үстінде емес" in text(again)


def test_a_review_of_another_decision_cannot_be_withdrawn_from_this_one(gateway: Gateway) -> None:
    me = person(gateway)
    other = person(gateway, "061211600012")
    assert send(other).status_code == 303
    their_review = re.search(r"<code>(rev_[^<]+)</code>",
                             other.browser.get(f"/d/{other.decision_id}/review").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    token = me.csrf(f"/d/{me.decision_id}/review")
    resp = me.browser.post(f"/d/{me.decision_id}/review/withdraw", data={"review_id": their_review, "csrf_token": token})
    assert resp.status_code == 404
    assert count(gateway, "SELECT count(*) FROM reviews WHERE status = 'withdrawn'") == 0
