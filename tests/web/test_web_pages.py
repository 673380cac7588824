"""Every page a notice leads to, in Kazakh, Russian and English, with the headers a person's page needs."""

from __future__ import annotations

import copy
import html
import json
import re

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.citizens import notice_token
from tests.web.support import Person, person, text

# A phrase of each page in each language (from the catalogs) and the page's <h1>.
PAGES = {
    "": {"kk": "Сіздің шешіміңіз", "ru": "Ваше решение", "en": "Your decision"},
    "/explanation": {"kk": "Шешімнің түсіндірмесі", "ru": "Объяснение решения", "en": "Explanation of the decision"},
    "/review": {"kk": "Адамның қайта қарауы", "ru": "Пересмотр человеком", "en": "Human review"},
}
OUTCOMES = {"kk": ("Мақұлданды", "Бас тартылды"), "ru": ("Одобрено", "Отказано"), "en": ("Approved", "Declined")}


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_in_every_language(gateway: Gateway, page: str, lang: str) -> None:
    me = person(gateway, language=lang)
    resp = me.browser.get(f"/d/{me.decision_id}{page}")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert f'<html lang="{lang}">' in body
    assert re.search(r"<h1>" + re.escape(PAGES[page][lang]) + "</h1>", body)
    assert '<main id="main"' in body and 'class="skip-link" href="#main"' in body
    for code in ("kk", "ru", "en"):  # the language switch on every page
        assert f'href="/d/{me.decision_id}{page}?lang={code}"' in body
    if page == "":
        assert any(o in text(resp) for o in OUTCOMES[lang])


def test_the_decision_page_shows_what_the_person_is_owed(gateway: Gateway) -> None:
    me = person(gateway, language="ru")
    page = text(me.browser.get(f"/d/{me.decision_id}"))
    assert "german-credit 1.0.0" in page and "«Example Bank»" in page and "ТОЛЬКО ПРИМЕР" in page
    assert re.search(r"\d{1,2} [а-я]+ 20\d\d г\., \d\d:\d\d", page)  # the locale's own date order, then the time
    assert "Результат системы — единственное основание решения" in page  # sole basis
    assert "Уведомление о решении" in page and "ожидает отправки" in page  # the notice and its delivery
    assert "Вы не запрашивали пересмотр этого решения." in page
    assert "Кто и когда просматривал это решение" in page and "Вы (по персональной ссылке или после входа)" in page
    body = me.browser.get(f"/d/{me.decision_id}").get_data(as_text=True)
    for link in (f'href="/d/{me.decision_id}/explanation"', f'href="/d/{me.decision_id}/review"',
                 f'href="/d/{me.decision_id}/data.json"', 'href="/register/german-credit/1.0.0"'):
        assert link in body


def test_the_agencys_reads_appear_in_the_persons_access_log(gateway: Gateway) -> None:
    me = person(gateway, language="en")
    assert gateway.client.get(f"/v1/decisions/{me.decision_id}", headers=gateway.auth("agency_a")).status_code == 200
    page = text(me.browser.get(f"/d/{me.decision_id}"))
    assert "The agency that made the decision (Agency A)" in page


def test_language_order_query_then_session_then_decision_then_browser(gateway: Gateway) -> None:
    me = person(gateway, language="kk")
    url = f"/d/{me.decision_id}"
    assert 'lang="kk"' in me.browser.get(url, headers={"Accept-Language": "en"}).get_data(as_text=True)  # decision's
    assert 'lang="en"' in me.browser.get(f"{url}?lang=en").get_data(as_text=True)  # asked
    assert 'lang="en"' in me.browser.get(f"{url}/review").get_data(as_text=True)  # remembered in the session
    assert 'lang="ru"' in me.browser.get(f"{url}?lang=ru").get_data(as_text=True)
    assert 'lang="ru"' in gateway.app.test_client().get("/register", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert 'lang="kk"' in gateway.app.test_client().get("/register", headers={"Accept-Language": "kk, ru;q=0.5"}).get_data(as_text=True)
    assert 'lang="ru"' in gateway.app.test_client().get("/register?lang=fr").get_data(as_text=True)  # not offered


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_the_explanation_page_says_what_the_json_explanation_says(gateway: Gateway, lang: str) -> None:
    me = person(gateway, language=lang)
    api = gateway.client.get(f"/v1/decisions/{me.decision_id}/explanation?lang={lang}",
                             headers={"Authorization": f"Bearer {me.token}"}).get_json()
    resp = me.browser.get(f"/d/{me.decision_id}/explanation")
    assert resp.status_code == 200
    page = text(resp)
    for sentence in api["text"]["factors"]:
        assert sentence in page
    for key in ("summary", "role", "baseline", "confidential", "factors_intro", "precision"):
        assert api["text"][key] is None or api["text"][key] in page, key
    body = resp.get_data(as_text=True)
    svg = body[body.index("<svg"):body.index("</svg>")]
    assert 'role="img"' in svg and 'aria-labelledby="chart-title"' in svg and '<title id="chart-title">' in svg
    assert "<style" not in svg and "style=" not in svg and "<script" not in svg  # nothing for the CSP to block
    assert 'fill="#1b7837"' in svg or 'fill="#c2410c"' in svg  # the bars keep their colours


def test_a_pending_explanation_gets_a_page_that_says_so(gateway: Gateway) -> None:
    me = person(gateway, language="ru")
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE explanations SET status = 'pending' WHERE decision_id = :d"), {"d": me.decision_id})
        db.session.commit()
    resp = me.browser.get(f"/d/{me.decision_id}/explanation")
    assert resp.status_code == 202 and resp.headers["Retry-After"] == "2"
    assert "Объяснение готовится" in text(resp) and 'id="pending"' in resp.get_data(as_text=True)


def test_the_download_holds_everything_about_the_decision(gateway: Gateway) -> None:
    me = person(gateway, language="kk")
    assert me.browser.get(f"/d/{me.decision_id}/explanation").status_code == 200
    me.browser.post(f"/d/{me.decision_id}/review", data={
        "csrf_token": me.csrf(f"/d/{me.decision_id}/review"), "point_of_view": "Табысым өсті.",
        "contest_grounds": "wrong_data", "language": "kk", "corrected.savings": "500_to_1000"})
    resp = me.browser.get(f"/d/{me.decision_id}/data.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="decision-{me.decision_id}.json"'
    assert resp.headers["Cache-Control"] == "no-store"
    data = json.loads(resp.data)
    assert data["decision"]["decision_id"] == me.decision_id and data["decision"]["inputs"]["savings"] == "lt_100"
    assert data["contact"] == {"email": "citizen@example.kz"}
    assert data["explanation"]["text"]["factors"]
    assert data["recourse"]["status"] == "ready" and data["recourse"]["options"]  # what they could change, held too
    assert data["recourse"]["options"][0]["text"].startswith("Егер ")
    assert data["reviews"][0]["point_of_view"] == "Табысым өсті." and data["reviews"][0]["corrected_data"] == {"savings": "500_to_1000"}
    assert {e["what"] for e in data["access_log"]["events"]} >= {"decision", "explanation"}
    assert me.token not in resp.get_data(as_text=True)


def _headers_ok(resp: object, personal: bool) -> None:
    headers = resp.headers  # type: ignore[attr-defined]
    csp = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp and "style-src 'self'" in csp
    assert "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "http" not in csp  # no other origin
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    if personal:
        assert headers["Cache-Control"] == "no-store"


def test_headers_of_pages(gateway: Gateway) -> None:
    me = person(gateway)
    for path in ("", "/explanation", "/review", "/review/withdraw"):
        resp = me.browser.get(f"/d/{me.decision_id}{path}")
        assert resp.status_code in (200, 303), path
        _headers_ok(resp, personal=True)
    for path in ("/register", "/register/german-credit/1.0.0", "/no-such-page"):
        _headers_ok(gateway.client.get(path), personal=False)
    # The JSON API keeps its own, stricter policy.
    assert gateway.client.get("/v1/models").headers["Content-Security-Policy"].startswith("default-src 'none'; frame-ancestors")


def test_pages_load_nothing_from_another_origin(gateway: Gateway) -> None:
    me: Person = person(gateway)
    with gateway.client.get("/static/web.css") as css:
        assert css.status_code == 200 and css.mimetype == "text/css"
        assert "@media print" in css.get_data(as_text=True) and "url(" not in css.get_data(as_text=True)
    for path in (f"/d/{me.decision_id}", f"/d/{me.decision_id}/explanation", f"/d/{me.decision_id}/review",
                 "/register", "/register/german-credit/1.0.0"):
        body = (me.browser.get(path) if path.startswith("/d/") else gateway.client.get(path)).get_data(as_text=True)
        assert not re.search(r'(src|href)="(https?:)?//', body), path
        assert "<script" not in body and " style=" not in body, path


def test_an_outcome_changed_by_review_shows_who_changed_it_and_when(gateway: Gateway) -> None:
    me = person(gateway, language="en")
    mine = {"Authorization": f"Bearer {me.token}"}
    review = gateway.client.post(f"/v1/decisions/{me.decision_id}/reviews", headers=mine,
                                 json={"point_of_view": "My income rose.", "contest_grounds": ["wrong_data"]}).get_json()
    case = gateway.client.post("/v1/reviews/claim", json={}, headers=gateway.auth("reviewer")).get_json()
    original = case["decision"]["outcome"]
    other = "approved" if original == "declined" else "declined"
    resolved = gateway.client.post(f"/v1/reviews/{review['review_id']}/resolve", headers=gateway.auth("reviewer"), json={
        "fencing_token": case["fencing_token"], "outcome": "changed", "new_outcome": other,
        "reasons": {"en": "Income confirmed."}, "point_of_view_considered": True})
    assert resolved.status_code == 200
    page = me.browser.get(f"/d/{me.decision_id}")
    body = page.get_data(as_text=True)
    labels = {"approved": "Approved", "declined": "Declined"}
    assert f'<dd id="original-outcome">{labels[original]}</dd>' in body
    assert re.search(rf'<dd id="effective-outcome"><strong>{labels[other]}</strong>', body)
    assert "Set by a human review on" in text(page) and review["review_id"] in text(page)
    assert "Reasons: Income confirmed." in text(page)  # why, in the person's language
    assert "cli_" not in text(page)  # no internal client ids
    assert "the decision was changed" in text(page) and "decided" in text(page)


def test_kazakh_dates_put_the_year_first_as_the_notices_do(gateway: Gateway) -> None:
    me = person(gateway, language="kk")
    page = text(me.browser.get(f"/d/{me.decision_id}"))
    assert re.search(r"20\d\d ж\. \d{1,2} [а-яәіңғүұқөһ]+, \d\d:\d\d", page)
    assert not re.search(r"\d{1,2} [а-яәіңғүұқөһ]+ 20\d\d, \d\d:\d\d", page)


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_the_decision_page_says_what_the_person_could_change(gateway: Gateway, lang: str) -> None:
    """An adverse decision's page lists the same verified options as the JSON recourse, in the person's language."""
    me = person(gateway, language=lang)
    body = me.browser.get(f"/d/{me.decision_id}").get_data(as_text=True)
    api = gateway.client.get(f"/v1/decisions/{me.decision_id}/recourse",
                             headers={"Authorization": f"Bearer {me.token}"}).get_json()
    assert api["language"] == lang and api["options"]
    section = re.search(r'<section id="recourse" aria-labelledby="recourse-heading">(.*?)</section>', body, re.S)
    assert section, "no recourse section"
    items = re.findall(r"<li>(.*?)</li>", section.group(1), re.S)
    assert [html.unescape(i) for i in items] == api["text"]["options"]
    assert html.unescape(section.group(1)).count(api["text"]["heading"]) == 1
    assert api["text"]["intro"] in html.unescape(section.group(1))


def test_a_favourable_decision_page_has_no_recourse_section(gateway: Gateway) -> None:
    me = person(gateway, language="ru")
    option = gateway.client.get(f"/v1/decisions/{me.decision_id}/recourse",
                                headers=gateway.auth("agency_a")).get_json()["options"][0]
    body = copy.deepcopy(gateway.sample)
    body["features"] |= {c["feature"]: c["to"] for c in option["changes"]}
    approved = gateway.decide(body).get_json()
    assert not approved["adverse"]
    link = f"/d/{approved['decision_id']}?token={notice_token(gateway, approved['decision_id'])}"
    browser = gateway.app.test_client()
    assert browser.get(link).status_code == 303
    page = browser.get(f"/d/{approved['decision_id']}").get_data(as_text=True)
    assert 'id="recourse"' not in page and "Что вы могли бы изменить" not in page
