"""Abuse resistance: rate limits (429 + Retry-After), body size (413 before parsing), security headers."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import uuid
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Response

from gateway import create_app
from gateway.extensions import db
from tests.conftest import Gateway, make_config
from tests.support.citizens import notice_token

REDIS_URL = "redis://127.0.0.1:6379/15"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_429(resp: Any) -> int:
    assert resp.status_code == 429, (resp.status_code, resp.data[:200])
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 60  # within the one-minute window
    error = resp.get_json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["retry_after"] == retry_after
    return retry_after


# --- rate limits -------------------------------------------------------------------------------------------

@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="5/minute")
def test_each_api_key_has_its_own_budget(gateway: Gateway) -> None:
    for _ in range(5):
        assert gateway.client.get("/v1/reviews", headers=gateway.auth("reviewer")).status_code == 200
    assert_429(gateway.client.get("/v1/reviews", headers=gateway.auth("reviewer")))
    assert_429(gateway.client.get("/v1/models", headers=gateway.auth("reviewer")))  # one budget for all endpoints
    assert gateway.client.get("/v1/reviews", headers=gateway.auth("auditor")).status_code == 200  # another key
    assert gateway.client.get("/v1/models").status_code == 200  # anonymous: counted by address
    assert gateway.client.get("/healthz", headers=gateway.auth("reviewer")).status_code == 200  # never limited


@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="3/minute")
def test_anonymous_and_failed_authentication_count_against_the_address(gateway: Gateway) -> None:
    for _ in range(3):
        assert gateway.client.get("/v1/reviews", headers=bearer("gwk_guessed")).status_code == 401
    assert_429(gateway.client.get("/v1/reviews", headers=bearer("gwk_guessed-again")))
    assert_429(gateway.client.get("/v1/models"))
    other = gateway.client.get("/v1/models", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200


@pytest.mark.gateway_config(RATELIMIT_EXPLANATIONS="3/minute")
def test_explanations_are_limited_tighter_and_per_person(gateway: Gateway) -> None:
    first = gateway.decide().get_json()
    second = gateway.decide(key="second").get_json()  # the same person, another decision
    did = first["decision_id"]
    links = [bearer(notice_token(gateway, d["decision_id"])) for d in (first, second)]  # from the notices
    assert gateway.client.get(f"/v1/decisions/{did}/explanation", headers=links[0]).status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}/explanation.svg", headers=links[0]).status_code == 200
    other = second["decision_id"]
    assert gateway.client.get(f"/v1/decisions/{other}/explanation", headers=links[1]).status_code == 200
    # Both links are the same person's: one budget, JSON and SVG together.
    assert_429(gateway.client.get(f"/v1/decisions/{other}/explanation.svg", headers=links[1]))
    assert_429(gateway.client.get(f"/v1/decisions/{did}/explanation", headers=links[0]))
    # Reading the decision itself is not an explanation; the agency has a budget of its own.
    assert gateway.client.get(f"/v1/decisions/{did}", headers=links[0]).status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}/explanation", headers=gateway.auth("agency_a")).status_code == 200


@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="2/minute", RATELIMIT_DECISIONS="4/minute")
def test_decisions_have_the_agencys_own_budget(gateway: Gateway) -> None:
    for i in range(4):
        assert gateway.decide(key=f"k{i}").status_code == 201
    assert_429(gateway.decide(key="k4"))
    assert gateway.decide(key="k5", who="agency_b").status_code == 201


@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="2/minute", RATELIMIT_DECISIONS="2/minute")
def test_a_changed_limit_applies_to_the_next_request(gateway: Gateway) -> None:
    """Each budget's limit string is parsed once (gateway.security.BudgetLimit), yet read on every request."""
    for i in range(2):
        assert gateway.decide(key=f"k{i}").status_code == 201
    assert_429(gateway.decide(key="k2"))
    gateway.app.config["RATELIMIT_DECISIONS"] = "4/minute"  # limits counts each limit apart: a fresh budget of 4
    for i in range(3, 7):
        assert gateway.decide(key=f"k{i}").status_code == 201
    assert_429(gateway.decide(key="k7"))
    gateway.app.config["RATELIMIT_DECISIONS"] = "2/minute"  # a string parsed before: its spent counter again
    assert_429(gateway.decide(key="k8"))
    for _ in range(2):  # the other budget is its own, parsed apart
        assert gateway.client.get("/v1/models", headers=gateway.auth("agency_a")).status_code == 200
    assert_429(gateway.client.get("/v1/models", headers=gateway.auth("agency_a")))


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_answers(), reason="no Redis on 127.0.0.1:6379")
def test_with_redis_every_worker_shares_the_budget(gateway: Gateway, tmp_path: Any) -> None:
    config = {"RATELIMIT_STORAGE_URI": REDIS_URL, "RATELIMIT_PER_CALLER": "4/minute",
              "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    url = gateway.app.config["DATABASE_URL"]
    workers = [create_app(make_config(url, tmp_path, KEYSTORE_URL=gateway.app.config["KEYSTORE_URL"], **config))
               for _ in range(2)]
    clients = [w.test_client() for w in workers]
    for i in range(4):
        assert clients[i % 2].get("/v1/reviews", headers=gateway.auth("reviewer")).status_code == 200
    for client in clients:
        assert_429(client.get("/v1/reviews", headers=gateway.auth("reviewer")))
    for worker in workers:
        with worker.app_context():
            for engine in db.engines.values():  # the main database and the key store
                engine.dispose()


def test_the_limiter_is_cheap_on_the_hot_path(gateway: Gateway) -> None:
    """Sanity bound, not a benchmark: the limiter's check stays far below a decision's cost."""
    import time

    limiter = gateway.app.extensions["gateway.limiter"]
    with gateway.app.test_request_context("/v1/reviews", headers=gateway.auth("reviewer")):
        gateway.app.preprocess_request()  # warm: authentication is cached per request
        start = time.perf_counter()
        for _ in range(200):
            limiter._check_request_limit()
        per_check = (time.perf_counter() - start) / 200
    assert per_check < 0.002, per_check


# --- request size ------------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_413_before_parsing(gateway: Gateway) -> None:
    big = b'{"subject": "' + b"x" * (1024 * 1024 + 1) + b'"}'
    headers = {**gateway.auth("agency_a"), "Idempotency-Key": "big", "Content-Type": "application/json"}
    resp = gateway.client.post("/v1/models/german-credit/decisions", data=big, headers=headers)
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"
    assert gateway.count("decisions") == 0


def _chunked(gw: Gateway, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """POST a body as a WSGI server passes a chunked request: no Content-Length, the stream terminated."""
    environ = EnvironBuilder(path=path, method="POST", input_stream=io.BytesIO(body),
                             headers={**headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
                             ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True  # what gunicorn sets for a chunked request
    # Straight to the WSGI app: the test client would rebuild the environ (and its Content-Length).
    app_iter, status, headers = run_wsgi_app(gw.app, environ, buffered=True)
    return Response(b"".join(app_iter), status=status, headers=headers)


def test_a_chunked_body_without_content_length_is_413_too(gateway: Gateway) -> None:
    did = gateway.decide().get_json()["decision_id"]
    path, who = f"/v1/decisions/{did}/reviews", gateway.auth("agency_a")
    big = b'{"point_of_view": "' + b"x" * (2 * 1024 * 1024) + b'", "contest_grounds": ["other"]}'
    resp = _chunked(gateway, path, big, who)
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"
    assert gateway.count("reviews") == 0
    # Just under the limit, chunked, is read whole and accepted.
    point = "x" * (1024 * 1024 - 100)
    fits = json.dumps({"point_of_view": point[:10000], "contest_grounds": ["other"], "language": "ru"}).encode()
    ok = _chunked(gateway, path, fits.ljust(1024 * 1024, b" "), who)
    assert ok.status_code == 201, ok.get_json()


# --- headers -----------------------------------------------------------------------------------------------

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _check_headers(resp: Any) -> str:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (resp.request.path, name)
    csp: str = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert not re.search(r"https?:|//|\*", csp), csp  # no external origin, no wildcard
    assert "Set-Cookie" not in resp.headers  # the JSON API never relies on cookies
    return csp


@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="30/minute")
def test_every_response_carries_the_security_headers(gateway: Gateway) -> None:
    did = gateway.decide().get_json()["decision_id"]
    responses = [
        gateway.client.get("/healthz"),
        gateway.client.get("/openapi.json"),
        gateway.client.get("/v1/models"),
        gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")),
        gateway.client.get(f"/v1/decisions/{did}/explanation.svg", headers=gateway.auth("agency_a")),
        gateway.client.get(f"/v1/decisions/{did}"),  # 401
        gateway.client.get("/v1/decisions/nothing", headers=gateway.auth("agency_a")),  # 404
        gateway.client.delete("/v1/models"),  # 405
        gateway.client.post("/v1/reviews/claim", headers=gateway.auth("agency_a"), json={}),  # 403
    ]
    for resp in responses:
        resp.close()
        _check_headers(resp)
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    while (resp := gateway.client.get("/v1/models")).status_code != 429:
        pass
    _check_headers(resp)


def test_the_docs_page_runs_only_its_own_scripts(gateway: Gateway) -> None:
    page = gateway.client.get("/docs/swagger")
    csp = _check_headers(page)
    html = page.get_data()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if " " in d.strip())
    for tag, directive in ((b"script", "script-src"), (b"style", "style-src")):
        inline = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, re.DOTALL)
        assert inline, tag
        for content in inline:
            digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
            assert f"'sha256-{digest}'" in directives[directive]
        assert "'unsafe-inline'" not in directives[directive] and "'unsafe-eval'" not in directives[directive]
    assert directives["connect-src"] == "'self'"
    asset = gateway.client.get("/docs/swagger/js/swagger-ui-bundle.js")
    asset.close()
    _check_headers(asset)
