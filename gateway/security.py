"""Abuse resistance at the HTTP edge: rate limits, security headers, trusted proxies.

Rate limits (Flask-Limiter) count per caller: the API client, the person (subject reference, whether
by capability link or OIDC) or, without credentials, the remote address. Three budgets:

- RATELIMIT_PER_CALLER for every endpoint together (except decision creation);
- RATELIMIT_DECISIONS for POST …/decisions, the agency's own workload;
- RATELIMIT_EXPLANATIONS for explanations and their charts together, much tighter: many explanations
  of chosen inputs are a way to extract the model.

Storage is in memory per process unless RATELIMIT_STORAGE_URI names a shared one (redis://…). A refused
request gets 429 in the usual error shape, with Retry-After.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import math
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flask import Flask, Response, current_app, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits.storage import MemoryStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway.api import secured_endpoints
from gateway.api.bodies import body_is_an_object
from gateway.api.common import KEYED_ENDPOINTS, caller, identified, rate_limit_key, unproved_key_refused
from gateway.api.errors import error_body, error_page, error_response

if TYPE_CHECKING:
    from flask_limiter._limits import RuntimeLimit  # what a Limit yields; not exported by the package

DECISION_ENDPOINTS = frozenset({"decisions.create_decision"})
# Recourse counts with explanations: each option is the model's answer at another point, so many of them
# extract the model just as explanations do.
EXPLANATION_ENDPOINTS = frozenset({"decisions.get_explanation", "decisions.get_explanation_svg", "web.explanation",
                                   "decisions.get_recourse"})
UPLOAD_ENDPOINTS = frozenset({"models.put_blob"})
BATCH_ENDPOINTS = frozenset({"batches.create_batch"})
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})
METRICS_ENDPOINTS = frozenset({"metrics"})

JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Pages (gateway.web): the package's own stylesheet, forms posting to this origin, nothing inline
# (the chart is inline SVG with presentation attributes, no style or script) and no other origin.
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
DOCS_PAGE = "/docs/swagger"
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


class SweepingMemoryStorage(MemoryStorage):
    """limits' in-memory storage, swept inline at most once a second.

    The stock storage starts a timer thread on a hit whenever its last one has finished (10 ms later), so
    a request that is not part of a burst pays for starting a thread. Counters are checked for expiry on
    every read anyway; the sweep only frees memory, which can wait a second.
    """

    STORAGE_SCHEME = ["gateway-memory"]  # noqa: RUF012 (limits registers storages by this list)
    SWEEP_INTERVAL_S = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions, **options)
        self._next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the private timer start of MemoryStorage
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_INTERVAL_S
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def _storage_uri(configured: str) -> str:
    return "gateway-memory://" if configured.startswith("memory://") else configured


# Which budget an endpoint draws on: (bucket, config key of its limit).
_BUDGETS = {**{e: ("decisions", "RATELIMIT_DECISIONS") for e in DECISION_ENDPOINTS},
            **{e: ("explanations", "RATELIMIT_EXPLANATIONS") for e in EXPLANATION_ENDPOINTS},
            **{e: ("metrics", "RATELIMIT_METRICS") for e in METRICS_ENDPOINTS}}
_DEFAULT_BUDGET = ("all", "RATELIMIT_PER_CALLER")


def _budget_limit() -> str:
    return str(current_app.config[_BUDGETS.get(request.endpoint or "", _DEFAULT_BUDGET)[1]])


def _budget_scope(endpoint: str) -> str:
    return _BUDGETS.get(endpoint, _DEFAULT_BUDGET)[0]


@dataclasses.dataclass(kw_only=True, unsafe_hash=True)
class BudgetLimit(ApplicationLimit):
    """The application limit whose budget follows the endpoint, each budget's limit string parsed once.

    flask-limiter parses a limit string into its RuntimeLimit on every request (`Limit.__iter__`); the
    budgets are a handful of strings, so their RuntimeLimits are kept by string. Still read from the
    configuration on every request: a changed setting applies to the next request, as before.
    """

    _parsed: dict[str, tuple[RuntimeLimit, ...]] = dataclasses.field(
        default_factory=dict, init=False, hash=False, compare=False, repr=False)

    def __iter__(self) -> Iterator[RuntimeLimit]:
        limit = _budget_limit()
        if limit not in self._parsed:
            self._parsed[limit] = tuple(super().__iter__())  # an invalid string raises here, every time
        return iter(self._parsed[limit])


def init_app(app: Flask) -> None:
    """Attach this app's own limiter, the 429 handler and the security headers."""
    if int(app.config.get("PROXY_FIX_X_FOR") or 0) > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=int(app.config["PROXY_FIX_X_FOR"]))  # type: ignore[method-assign]
    limiter = Limiter(
        rate_limit_key,
        # One limit whose budget follows the endpoint: a single counter per request keeps the check cheap.
        application_limits=[BudgetLimit(limit_provider=_budget_limit, scope=_budget_scope)],
        key_prefix=str(app.config.get("RATELIMIT_KEY_PREFIX") or ""),
        storage_uri=_storage_uri(str(app.config.get("RATELIMIT_STORAGE_URI") or "memory://")),
        headers_enabled=False,  # Retry-After is added to the 429 only: no storage read on other answers
    )
    limiter.request_filter(lambda: request.path in UNLIMITED_PATHS)
    limiter.init_app(app)
    app.extensions["gateway.limiter"] = limiter

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded) -> Response:
        window = int(exc.limit.limit.get_expiry())
        retry_after = window
        breached = limiter.current_limit
        if breached is not None:
            retry_after = min(window, max(1, math.ceil(breached.reset_at - time.time())))
        resp = error_page(429, exc)
        if resp is None:
            body = error_body("rate_limited", "too many requests; try again later",
                              {"limit": str(exc.limit.limit), "retry_after": retry_after})
            resp = current_app.json.response(body)
        resp.status_code = 429
        resp.headers["Retry-After"] = str(retry_after)
        return resp

    app.before_request(_authenticate_first)
    app.before_request(cap_streamed_body)
    app.before_request(body_is_an_object)  # after authentication: an anonymous caller learns nothing
    app.after_request(security_headers)
    app.after_request(refusals_prove_the_key)  # runs before security_headers (reverse order of registration)


def warn_unshared_limits(app: Flask, workers: int) -> str | None:
    """Warn (and return the warning) when rate limits are counted per process but several processes serve.

    With memory:// storage each gunicorn worker (and each instance) keeps its own counters: two workers
    let a caller through twice the configured budget (60 explanations a minute where 30 are configured).
    """
    uri = str(app.config.get("RATELIMIT_STORAGE_URI") or "memory://")
    if workers <= 1 or not uri.startswith("memory://") or not app.config.get("RATELIMIT_ENABLED", True):
        return None
    message = (f"rate limits are counted per worker (RATELIMIT_STORAGE_URI={uri}) and {workers} workers serve: "
               f"each caller gets up to {workers} times every budget (e.g. RATELIMIT_EXPLANATIONS="
               f"{app.config.get('RATELIMIT_EXPLANATIONS')} per worker); set GATEWAY_RATELIMIT_STORAGE_URI="
               "redis://… to share them")
    app.logger.warning("gateway: %s", message)
    return message


def _authenticate_first() -> None:
    """Authenticate before anything parses the request: an anonymous caller gets 401, never a validation error."""
    ext = current_app.extensions
    if "gateway.secured" not in ext:
        ext["gateway.secured"] = secured_endpoints(current_app)  # type: ignore[arg-type]
    if request.endpoint in ext["gateway.secured"]:
        # A decision proves its key live in its own write: a key seen live needs no SELECT here (a revoked one
        # is refused by that write, 401, nothing recorded, or by `refusals_prove_the_key` when the request is
        # refused before its write); every other endpoint authenticates with one.
        identified() if request.endpoint in KEYED_ENDPOINTS else caller()


def refusals_prove_the_key(resp: Response) -> Response:
    """A refusal (4xx, 5xx) of a request whose key came from the cache becomes 401 if the key is revoked.

    The cached key is proved live by the decision's write; a request refused before its write (validation,
    rate limit, a suspended model) proves it here, so a revoked key learns nothing but 401, as before."""
    if resp.status_code >= 400 and resp.status_code != 401 and request.endpoint in KEYED_ENDPOINTS:
        refused = unproved_key_refused()
        if refused is not None:
            return error_response(refused)
    return resp


def cap_streamed_body() -> None:
    """Refuse a streamed (chunked) body over the limit with 413 before anything parses it.

    With a Content-Length, Werkzeug refuses an oversized body itself. A chunked body has none: Werkzeug
    then reads at most the limit and stops, so a parser would see truncated JSON (a misleading 400).
    Read it here, up to one byte past the limit, and keep what was read for the view.
    """
    environ = request.environ
    if request.content_length is not None or not environ.get("wsgi.input_terminated"):
        return  # sized bodies are checked by Werkzeug; unterminated streams are read as empty
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if request.endpoint in UPLOAD_ENDPOINTS:
        limit = current_app.config["MAX_ARTIFACT_BYTES"]
    elif request.endpoint in BATCH_ENDPOINTS:
        limit = current_app.config["BATCH_MAX_BYTES"]
    else:
        limit = request.max_content_length
    if limit is None:
        return
    data = environ["wsgi.input"].read(int(limit) + 1)
    if len(data) > int(limit):
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def _hashes(html: bytes, kind: bytes) -> str:
    found = []
    for tag, content in _INLINE.findall(html):
        if tag == kind:
            digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
            found.append(f"'sha256-{digest}'")
    return " ".join(found)


# Inline styles the bundled Swagger UI (flask-openapi3-swagger 5.x) adds itself: its logo's SVG <style>
# (checked in headless Chromium: the UI renders with no other CSP violation; a new bundle at worst loses
# the logo's colours).
SWAGGER_STYLE_HASHES = ("'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='",)


def docs_csp(html: bytes) -> str:
    """The docs page's policy: its own files, plus the hashes of its inline script and style; no other origin."""
    styles = " ".join([_hashes(html, b"style"), *SWAGGER_STYLE_HASHES])
    return (
        f"default-src 'none'; script-src 'self' {_hashes(html, b'script')}; "
        f"style-src 'self' {styles}; img-src 'self' data:; connect-src 'self'; font-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def security_headers(resp: Response) -> Response:
    """Headers on every response: a strict CSP, no sniffing, no referrer (links carry tokens), no framing."""
    headers = resp.headers
    if request.path == DOCS_PAGE and resp.mimetype == "text/html" and not resp.direct_passthrough:
        headers["Content-Security-Policy"] = docs_csp(resp.get_data())
    elif resp.mimetype == "text/html":
        headers["Content-Security-Policy"] = PAGE_CSP
    else:
        headers["Content-Security-Policy"] = JSON_CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if current_app.config["PUBLIC_BASE_URL"].startswith("https://"):
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if "Cache-Control" not in headers and not request.path.startswith("/docs/"):
        # Answers carry personal data and capability links: no shared or browser cache may keep them.
        headers["Cache-Control"] = "no-store"
    return resp
