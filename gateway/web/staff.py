"""Who is signed in to this browser: an official (reviewer, auditor) or a person signed in with OIDC.

The signed cookie (gw_session) carries only a random session id (``sid``); the session itself (who, role,
expiry, ended or not) lives in the web_sessions table (gateway.officials), so signing out or revoking the
official's key ends it at once, wherever the cookie was copied.
"""

from __future__ import annotations

from typing import Any

from flask import g, session
from flask_babel import lazy_gettext

from gateway import officials
from gateway.auth import Citizen, Principal
from gateway.errors import Forbidden, Unauthorized
from gateway.models import WebSession

SESSION_KEY = "sid"


def browser_session_id() -> str | None:
    sid = session.get(SESSION_KEY)
    return sid if isinstance(sid, str) else None


def signed_in() -> WebSession | None:
    """The live session of this browser, or None (looked up once per request)."""
    if "web_session" not in g:
        g.web_session = officials.live_session(browser_session_id())
    found: WebSession | None = g.web_session
    return found


def start(started: officials.Started) -> None:
    """Put a new session's id into the cookie; whatever the cookie held before is dropped (fixation)."""
    lang = session.get("lang")
    session.clear()
    if isinstance(lang, str):
        session["lang"] = lang
    session[SESSION_KEY] = started.session_id
    session.permanent = True
    g.web_session = started.row


def end() -> None:
    officials.end_session(browser_session_id())
    lang = session.get("lang")
    session.clear()
    if isinstance(lang, str):
        session["lang"] = lang
    g.web_session = None


def official(*roles: str) -> Principal:
    """The signed-in official with one of `roles`: 401 with no official session, 403 for another role."""
    row = signed_in()
    if row is None or row.kind != "official":
        raise Unauthorized("sign in as an official to open this page", code="sign_in_required")
    principal = officials.principal_of(row)
    if principal.role not in roles:
        raise Forbidden(f"this page is for the role {' or '.join(roles)}", code="wrong_role")
    return principal


def person() -> Citizen:
    """The person signed in through the identity provider: 401 for everyone else (officials included)."""
    row = signed_in()
    if row is None or row.kind != "person":
        raise Unauthorized("sign in with the identity provider to see your decisions", code="sign_in_required")
    return officials.citizen_of(row)


ROLE_LABELS = {"reviewer": lazy_gettext("reviewer"), "auditor": lazy_gettext("auditor"), "person": lazy_gettext("person")}


def account() -> dict[str, Any] | None:
    """Who the page header names as signed in (with the sign-out button), or None."""
    if browser_session_id() is None:
        return None
    row = signed_in()
    if row is None:
        return None
    role = row.role if row.kind == "official" else "person"
    name = row.name if row.kind == "official" else lazy_gettext("you")
    return {"name": name, "role": role, "role_label": ROLE_LABELS.get(role or "", role)}
