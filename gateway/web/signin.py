"""Signing in and out: one-time links for officials (and, when configured, an OpenID provider).

| route                     | page                                                                                   |
|---------------------------|----------------------------------------------------------------------------------------|
| GET /signin               | how to sign in (`#signin`); a button to the identity provider when one is configured    |
| GET /signin/{token}       | the one-time link: who it signs in (`form#signin-form`, a button, nothing spent yet); a used, expired or revoked link: 410 `#link-refused`, an unknown one: 404 |
| POST /signin/{token}      | spends the link once, starts a new server-side session, 303 to /console or /audit      |
| POST /signout             | ends the session (`form#signout-form` in every console page's header); 303 to /signin?out=1 |
| GET /signin/oidc?as=official|person | to the identity provider (authorization code + PKCE S256, state and nonce) |
| GET /signin/oidc/callback | back from the provider: state, code, ID token (signature, issuer, audience, expiry, nonce) checked by Authlib; an official needs the role claim (reviewer, auditor), a person the IIN claim; any failure: 401 `#signin-refused` with `data-reason` state, code, nonce, expired, token, role, iin or provider |

Opening the link shows a button rather than signing in at once: mail scanners and link previews that
fetch the link do not spend it.
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, current_app, make_response, redirect, render_template, request, session
from flask_babel import gettext as _
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError

from gateway import officials
from gateway.errors import Forbidden
from gateway.identity import InvalidIIN, subject_ref, validate_iin
from gateway.settings import OidcSignIn, current_settings
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
                           signed_out=request.args.get("out") == "1", failed=None, reason=None)


def _refused(exc: officials.LinkInvalid) -> Any:
    status = 404 if exc.reason == "unknown" else 410
    return make_response(render_template("web/signin_refused.html", reason=exc.reason), status)


# --- an OpenID provider (Authlib's Flask client) ---------------------------------------------------------------

CLIENT = "idp"


def init_app(app: Flask) -> None:
    """One Authlib registry per app (tests run several apps side by side, each with its own provider)."""
    settings: OidcSignIn | None = app.extensions["gateway.settings"].oidc_sign_in
    if settings is None:
        return
    oauth = OAuth(app)
    oauth.register(CLIENT, client_id=settings.client_id, client_secret=settings.client_secret,
                   server_metadata_url=settings.metadata_url,
                   client_kwargs={"scope": settings.scopes, "code_challenge_method": "S256"})
    app.extensions["gateway.oauth"] = oauth


def _client() -> Any:
    oauth = current_app.extensions.get("gateway.oauth")
    if oauth is None:
        raise Forbidden("sign-in through an identity provider is not configured", code="oidc_off")
    return oauth.create_client(CLIENT)


def _refuse(reason: str) -> Any:
    messages = {
        "state": _("The sign-in answer does not belong to a sign-in started in this browser (its state does not match). Start again."),
        "code": _("The identity provider refused the sign-in code: it was used already or is not valid. Start again."),
        "nonce": _("The identity provider's token was not issued for this sign-in (its nonce does not match). Start again."),
        "expired": _("The identity provider's token has expired. Start again."),
        "token": _("The identity provider's token could not be verified. Start again."),
        "role": _("Your account at the identity provider has no console role (reviewer or auditor). Ask its administrator."),
        "iin": _("Your account at the identity provider carries no valid IIN, so your decisions cannot be found."),
        "provider": _("The identity provider did not complete the sign-in. Start again."),
    }
    return make_response(render_template("web/signin.html", oidc=True, signed_out=False, failed=messages[reason],
                                         reason=reason), 401)


@bp.get("/signin/oidc")
def oidc_start() -> Any:
    choose_language()
    kind = "person" if request.args.get("as") == "person" else "official"
    client = _client()
    session["oidc_as"] = kind
    # Authlib makes the state, the nonce and the PKCE verifier and keeps them in the session.
    return client.authorize_redirect(current_settings().base_url + "/signin/oidc/callback")


@bp.get("/signin/oidc/callback")
def oidc_callback() -> Any:
    choose_language()
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        # The session cookie is SameSite=Strict: a browser leaves it out on a redirect from the provider's
        # site, so continue from a page of our own (a same-site navigation) with the same answer.
        return make_response(render_template("web/continue.html", target=request.full_path))
    client = _client()
    settings: OidcSignIn = current_settings().oidc_sign_in  # type: ignore[assignment]
    try:
        token = client.authorize_access_token()
    except MismatchingStateError:
        return _refuse("state")
    except OAuthError as exc:
        return _refuse("code" if exc.error == "invalid_grant" else "provider")
    except ExpiredTokenError:
        return _refuse("expired")
    except InvalidClaimError as exc:
        return _refuse("nonce" if "nonce" in str(exc) else "token")
    except JoseError:
        return _refuse("token")
    claims = token.get("userinfo") or {}
    if not claims.get("sub"):
        return _refuse("token")
    kind = session.pop("oidc_as", "official")
    previous = staff.browser_session_id()
    if kind == "official":
        role = claims.get(settings.role_claim)
        if role not in officials.OFFICIAL_ROLES:
            return _refuse("role")
        started = officials.sign_in_official(subject=str(claims["sub"]), name=str(claims.get(settings.name_claim) or claims["sub"]),
                                             role=str(role), issuer=str(claims.get("iss") or ""), previous=previous)
    else:
        try:
            iin = validate_iin(str(claims.get(settings.iin_claim) or ""))
        except InvalidIIN:
            return _refuse("iin")
        started = officials.sign_in_person(subject_ref(iin, current_settings().subject_key), previous=previous)
    staff.start(started)
    return redirect(home_of(started.row.role if started.row.kind == "official" else None), code=303)


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
