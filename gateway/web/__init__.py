"""Pages for people: the decision behind a notice's links, its explanation, human review, the register.

Server-rendered (Jinja, gettext catalogs in kk/ru/en), no JavaScript; the pages call the same service
and view functions as the JSON API. Forms carry a CSRF token (Flask-WTF, checked for this package's
blueprints only: /v1 stays token-free for machine clients).

Routes (stable markup for browser tests: every page has ``<main id="main">``, one ``<h1>``, a skip link
``a.skip-link`` to ``#main``, and a language switch ``nav#language`` with links ``?lang=kk|ru|en``):

| route                                   | page                                                                 |
|-----------------------------------------|----------------------------------------------------------------------|
| GET /d/{id}?token=…[&next=explanation|review] | checks the capability token, starts the session, 303 to /d/{id} (or the `next` page); expired: 410 page; forged/foreign: 404 |
| GET /d/{id}                             | the decision (`section#outcome`, `#system`, `#notices`, `#reviews`, `#access-log`, `a#explanation-link`, `a#review-link`, `a#data-link`) |
| GET /d/{id}/explanation                 | the main factors (`ol#factors`, `figure#chart` with the inline SVG, `#confidential`); pending: `#pending` (202) |
| GET, POST /d/{id}/review                | the review request form `form#review-form`, or the open review `section#open-review` with `a#withdraw-link`; after sending: `#review-sent` |
| GET, POST /d/{id}/review/withdraw       | confirmation `form#withdraw-form` (hidden `review_id`, button `button#confirm-withdraw`); done: `#review-withdrawn` on /d/{id}/review |
| GET /d/{id}/data.json                   | everything held about the decision (JSON attachment)                  |
| GET /register, /register/{model}/{version} | the public algorithm register (`table#register`, `section#notice`, `ol#global-factors`) |

Form fields of ``form#review-form`` (POST /d/{id}/review): ``csrf_token`` (hidden), ``point_of_view``
(textarea, required, at most reviews.POINT_OF_VIEW_MAX_LENGTH characters), ``contest_grounds``
(checkboxes ``wrong_data``, ``wrong_assessment``, ``other``; at least one), ``corrected.<feature>`` for
each feature the model marks mutable (number: ``input[type=number]`` with min/max/step; category and
boolean: ``select``, the empty option meaning "no change"), ``language`` (select kk/ru/en). Each field's
error is ``p#<field id>-error`` referenced by the field's ``aria-describedby``; the summary is
``div#error-summary``. Input ids: ``point_of_view``, ``ground-<code>``, ``corrected-<feature>``, ``language``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from gateway.web import audit, citizen, common, console, errors, me, register, signin, staff
from gateway.web.common import csrf


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, its signing serializer built once per set of keys, not per request.

    Flask opens the session of every request (the JSON API's too) and builds a new serializer each time
    (itsdangerous checks its JSON serializer with a trial dump): ~0.03 ms of a decision's CPU. The keys
    are compared on every request, so a changed SECRET_KEY or SECRET_KEY_FALLBACKS applies at once. The
    serializer is shared: use it, never change it.
    """

    _built: tuple[tuple[Any, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        built = self._built
        if built is None or built[0] != keys:
            built = self._built = (keys, super().get_signing_serializer(app))
        return built[1]


def init_app(app: Flask) -> None:
    """Attach the page blueprints, the session cookie's settings, CSRF for pages and the HTML error pages."""
    config = app.config
    secure = str(config["PUBLIC_BASE_URL"]).startswith("https://")
    config["SESSION_COOKIE_NAME"] = "gw_session"
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Strict"
    config["SESSION_COOKIE_SECURE"] = secure
    config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(seconds=int(config["WEB_SESSION_MAX_AGE_S"]))
    app.session_interface = SessionInterface()
    # Checked where the page blueprints ask for it (never on /v1). No Referer check on https: pages send
    # Referrer-Policy: no-referrer, and the SameSite=Strict session plus the token are the protection.
    config["WTF_CSRF_CHECK_DEFAULT"] = False
    config["WTF_CSRF_SSL_STRICT"] = False
    config["WTF_CSRF_TIME_LIMIT"] = int(config["WEB_SESSION_MAX_AGE_S"])
    csrf.init_app(app)
    app.register_blueprint(citizen.bp)
    app.register_blueprint(register.bp)
    app.register_blueprint(signin.bp)  # one-time links and the identity provider; sign-out
    app.register_blueprint(console.bp)  # reviewers
    app.register_blueprint(audit.bp)  # auditors
    app.register_blueprint(me.bp)  # people signed in with the identity provider
    app.add_template_global(staff.account, "account")
    signin.init_app(app)
    common.init_app(app)
    errors.init_app(app)
