"""The public register pages, HTML error pages for page paths (JSON for /v1), and the CSP-safe chart."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from gateway.web.svg import inline_svg
from tests.conftest import Gateway
from tests.web.support import decide, person, text


def test_the_register_lists_every_version_that_served(gateway: Gateway) -> None:
    resp = gateway.client.get("/register?lang=ru")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert '<table id="register">' in body and 'href="/register/german-credit/1.0.0"' in body
    assert "Реестр алгоритмических систем" in text(resp) and "средний" in text(resp)  # the fixture serves it medium-risk


@pytest.mark.parametrize(("lang", "phrases"), [
    ("kk", ("Қолдану алдындағы хабарлама", "Жалпы негізгі факторлар", "ТЕК МЫСАЛ")),
    ("ru", ("Уведомление перед использованием", "Основные факторы в целом", "ТОЛЬКО ПРИМЕР")),
    ("en", ("Notice before use", "Main factors in general", "EXAMPLE ONLY")),
])
def test_a_version_page_carries_its_pre_use_notice(gateway: Gateway, lang: str, phrases: tuple[str, ...]) -> None:
    resp = gateway.client.get(f"/register/german-credit/1.0.0?lang={lang}")
    assert resp.status_code == 200
    page = text(resp)
    for phrase in phrases:
        assert phrase in page
    assert "appeals@example.kz" in page


def test_confidential_inputs_are_counted_never_named(gateway: Gateway) -> None:
    resp = gateway.client.get("/register/german-credit/1.0.0?lang=en")
    body = resp.get_data(as_text=True)
    inputs = body[body.index('id="inputs"'):body.index('id="global"')]
    factors = body[body.index('id="global-factors"'):body.index("</ol>", body.index('id="global-factors"'))]
    assert "Confidential inputs, not named here: 2." in text(resp)
    for name in ("other instalment", "other_installment_plans", "existing credits", "existing_credits",
                 "number of existing"):
        assert name not in inputs.lower() and name not in factors.lower(), name
    assert "Duration" in inputs or "duration" in inputs.lower()
    sizes = [float(s) for s in re.findall(r": ([0-9.]+) percentage points", factors)]
    assert len(sizes) == 10 and sizes == sorted(sizes, reverse=True) and sizes[0] > 0


def test_global_factors_are_computed_once_per_version(gateway: Gateway) -> None:
    assert gateway.client.get("/register/german-credit/1.0.0").status_code == 200
    cached = gateway.app.extensions["gateway.global_factors"]
    assert len(cached) == 1
    (values,) = cached.values()
    values["checking_status"] = 123.0  # what the second page shows comes from the cache
    assert re.search(r"12 ?300,0 процентного пункта", text(gateway.client.get("/register/german-credit/1.0.0?lang=ru")))


def test_the_register_shows_when_a_version_served(gateway: Gateway) -> None:
    decide(gateway)
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE decisions SET created_at = :at"), {"at": dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)})
        db.session.commit()
    assert "since March 2, 2026" in text(gateway.client.get("/register/german-credit/1.0.0?lang=en"))
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE scoring_models SET status = 'registered', status_changed_at = :at"),
                           {"at": dt.datetime(2026, 6, 30, 8, 0, tzinfo=dt.UTC)})
        db.session.commit()
    page = text(gateway.client.get("/register?lang=en"))
    assert "from March 2, 2026 to June 30, 2026" in page  # a replaced version stays in the register


def test_a_version_that_never_served_is_not_in_the_register(gateway: Gateway) -> None:
    assert gateway.client.get("/register/german-credit/9.9.9").status_code == 404
    assert gateway.client.get("/register/no-such-model/1.0.0?lang=kk").get_data(as_text=True).count("Бет табылмады") >= 1
    assert gateway.client.get("/v1/models").get_json()["models"][0]["name"] == "german-credit"  # the JSON twin stays


@pytest.mark.parametrize(("lang", "title"), [("kk", "Бет табылмады"), ("ru", "Страница не найдена"), ("en", "Page not found")])
def test_404_is_a_page_in_the_persons_language(gateway: Gateway, lang: str, title: str) -> None:
    resp = gateway.client.get(f"/no/such/page?lang={lang}")
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    assert f'<html lang="{lang}">' in resp.get_data(as_text=True) and f"<h1>{title}</h1>" in resp.get_data(as_text=True)


def test_api_errors_stay_json(gateway: Gateway) -> None:
    for path in ("/v1/decisions/dec_AAAAAAAAAAAAAAAAAAAAAA", "/v1/nothing", "/docs/nothing"):
        resp = gateway.client.get(path, headers=gateway.auth("auditor"))
        assert resp.mimetype == "application/json" and "error" in resp.get_json(), path


def test_405_and_413_pages(gateway: Gateway) -> None:
    resp = gateway.client.delete("/register?lang=en")
    assert resp.status_code == 405 and "This page cannot be opened this way" in text(resp) and "GET" in resp.headers["Allow"]
    me = person(gateway, language="ru")
    big = me.browser.post(f"/d/{me.decision_id}/review", data={"point_of_view": "x" * (1024 * 1024 + 10)})
    assert big.status_code == 413 and "Отправленные данные слишком велики" in text(big)


@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="3/minute")
def test_429_is_a_page_with_retry_after(gateway: Gateway) -> None:
    statuses = [gateway.client.get("/register?lang=ru") for _ in range(4)]
    last = statuses[-1]
    assert last.status_code == 429 and "Слишком много запросов" in text(last) and int(last.headers["Retry-After"]) > 0
    api = gateway.client.get("/v1/models")
    assert api.status_code == 429 and api.get_json()["error"]["code"] == "rate_limited"


def test_500_is_a_page_and_says_nothing_of_the_cause(gateway: Gateway) -> None:
    @gateway.app.get("/d/<decision_id>/boom")
    def boom(decision_id: str) -> str:
        raise RuntimeError("secret internal detail")

    resp = gateway.client.get("/d/x/boom?lang=kk")
    assert resp.status_code == 500 and "Біздің тарапта қате орын алды" in text(resp)
    assert "secret internal detail" not in resp.get_data(as_text=True)


def test_400_is_a_page(gateway: Gateway) -> None:
    @gateway.app.get("/bad-request-page")
    def bad() -> str:
        from werkzeug.exceptions import BadRequest

        raise BadRequest()

    resp = gateway.client.get("/bad-request-page?lang=en")
    assert resp.status_code == 400 and "The request could not be understood" in text(resp)


def test_the_chart_is_rewritten_without_inline_css() -> None:
    svg = (b'<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg width="576pt" height="200pt" viewBox="0 0 576 200" '
           b'xmlns="http://www.w3.org/2000/svg"><metadata>x</metadata><defs><style type="text/css">*{stroke-linejoin: round}'
           b'</style></defs><path d="M0 0" style="fill: #1b7837; stroke: #000000; stroke-width: 0.8"/>'
           b'<path style="fill: url(javascript:alert(1))"/></svg>')
    out = inline_svg(svg, 'Chart <"factors">')
    assert out.startswith('<svg viewBox="0 0 576 200"') and "width=" not in out.split(">")[0]
    assert '<title id="chart-title">Chart &lt;&quot;factors&quot;&gt;</title>' in out
    assert '<path d="M0 0" fill="#1b7837" stroke="#000000" stroke-width="0.8"/>' in out
    assert "style" not in out and "javascript" not in out and "<metadata" not in out and "<?xml" not in out
