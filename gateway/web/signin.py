"""Signing in and out: one-time links for officials (and, when configured, an OpenID provider).

| route                     | page                                                                                   |
|---------------------------|----------------------------------------------------------------------------------------|
| GET /signin               | how to sign in (`#signin`); a button to the identity provider when one is configured    |
| GET /signin/{token}       | the one-time link: who it signs in (`form#signin-form`, a button, nothing spent yet); a used, expired or revoked link: 410 `#link-refused`, an unknown one: 404 |
| POST /signin/{token}      | spends the link once, starts a new server-side session, 303 to /console or /audit      |
| POST /signout             | ends the session (`form#signout-form` in every console page's header); 303 to /signin?out=1 |

Opening the link shows a button rather than signing in at once: mail scanners and link previews that
fetch the link do not spend it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, make_response, redirect, render_template, request

from gateway import officials
from gateway.settings import current_settings
from gateway.web import staff
from gateway.web.common import choose_language, csrf

bp = Blueprint("signin", __name__)
HOME = {"reviewer": "/console", "auditor": "/audit"}


@bp.before_request
def _protect_forms() -> None:
    if request.method == "POST":
        csrf.protect()


def home_of(role: str | None) -> str:
    return HOME.get(role or "", "/me")


@bp.get("/signin")
def signin() -> Any:
    choose_language()
    return render_template("web/signin.html", oidc=current_settings().oidc_sign_in is not None,
                           signed_out=request.args.get("out") == "1", failed=None)


def _refused(exc: officials.LinkInvalid) -> Any:
    status = 404 if exc.reason == "unknown" else 410
    return make_response(render_template("web/signin_refused.html", reason=exc.reason), status)


@bp.get("/signin/<token>")
def link(token: str) -> Any:
    choose_language()
    try:
        client = officials.link_holder(token)
    except officials.LinkInvalid as exc:
        return _refused(exc)
    return render_template("web/signin_link.html", client=client, token=token)


@bp.post("/signin/<token>")
def use_link(token: str) -> Any:
    choose_language()
    try:
        started = officials.sign_in_with_link(token, previous=staff.browser_session_id())
    except officials.LinkInvalid as exc:
        return _refused(exc)
    staff.start(started)
    return redirect(home_of(started.row.role), code=303)


@bp.post("/signout")
def signout() -> Any:
    staff.end()
    return redirect("/signin?out=1", code=303)
