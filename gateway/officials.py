"""Signed-in browser sessions: officials (reviewers, auditors) and people signed in with OIDC.

Two ways in:

- a one-time sign-in link (``gateway keys create --role reviewer --name NAME --web``): a random token of its
  own, bound to the official's API client, valid once and for SIGN_IN_LINK_MAX_AGE_S; only its SHA-256 is
  stored. The API key never reaches the browser: the session acts as that client, with its name, body and
  role, so a review resolved in the console is recorded exactly as one resolved with the key.
- an OpenID provider (gateway/web/signin.py): an official by subject, name and role claim; a person by the
  HMAC of their IIN.

A session is a row whose id only the browser holds (the table keeps its hash), with a server-side expiry;
signing in always makes a new one (and ends the one the browser had), signing out ends it. Each start and
end is an audit leaf.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from gateway.audit import record_leaf
from gateway.auth import Citizen, Principal
from gateway.db import write_transaction
from gateway.errors import Forbidden, NotFound, Unauthorized
from gateway.extensions import db
from gateway.ids import isoformat, utcnow
from gateway.models import ApiClient, Role, SignInLink, WebSession
from gateway.settings import current_settings

LINK_PREFIX = "gws_"
OFFICIAL_ROLES = (Role.REVIEWER.value, Role.AUDITOR.value)


class LinkInvalid(Unauthorized):
    """The sign-in link was used already, has expired, or was never issued (`reason` says which)."""

    code = "sign_in_link_invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(f"this sign-in link cannot be used: {reason}")
        self.reason = reason  # "used" | "expired" | "unknown" | "revoked"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def sign_in_path(token: str) -> str:
    return f"/signin/{token}"


# --- one-time links ---------------------------------------------------------------------------------------

def issue_link(client: ApiClient, *, now: dt.datetime | None = None) -> str:
    """A one-time sign-in link token for an official's client (in the caller's transaction); shown once."""
    if client.role not in OFFICIAL_ROLES:
        raise Forbidden(f"sign-in links are for reviewers and auditors, not for the role {client.role}")
    if client.revoked_at is not None:
        raise Forbidden(f"the API client {client.name!r} is revoked")
    now = now or utcnow()
    token = LINK_PREFIX + secrets.token_urlsafe(32)
    expires = now + dt.timedelta(seconds=current_settings().sign_in_link_max_age_s)
    db.session.add(SignInLink(token_hash=_digest(token), client_id=client.id, created_at=now, expires_at=expires))
    record_leaf(db.session, "signin:link_created", client.id, {"client_id": client.id, "name": client.name,
                                                               "role": client.role, "expires_at": isoformat(expires),
                                                               "at": isoformat(now)}, now)
    return token


def link_holder(token: str, *, now: dt.datetime | None = None) -> ApiClient:
    """The official a link is for, while it can still be used (the confirmation page; nothing is spent)."""
    now = now or utcnow()
    row = db.session.get(SignInLink, _digest(token)) if token.startswith(LINK_PREFIX) else None
    if row is None:
        raise LinkInvalid("unknown")
    if row.used_at is not None:
        raise LinkInvalid("used")
    if row.expires_at <= now:
        raise LinkInvalid("expired")
    client = db.session.get(ApiClient, row.client_id)
    if client is None or client.revoked_at is not None:
        raise LinkInvalid("revoked")
    return client


@dataclass(frozen=True)
class Started:
    """A new session: the id for the browser's cookie (never stored) and its row."""

    session_id: str
    row: WebSession


def _start(session: object, values: dict[str, object], previous: str | None, now: dt.datetime) -> Started:
    sid = secrets.token_urlsafe(32)
    expires = now + dt.timedelta(seconds=current_settings().console_session_max_age_s)
    row = WebSession(id_hash=_digest(sid), created_at=now, expires_at=expires, **values)
    db.session.add(row)
    if previous:  # rotation: the browser's earlier session ends when it signs in again
        db.session.execute(update(WebSession).where(WebSession.id_hash == _digest(previous),
                                                    WebSession.ended_at.is_(None)).values(ended_at=now))
    who = row.official_id or f"person:{(row.subject_ref or '')[:16]}"
    record_leaf(db.session, "signin:session_started", who, {"who": who, "kind": row.kind, "via": row.via,
                                                            "role": row.role, "at": isoformat(now),
                                                            "expires_at": isoformat(expires)}, now)
    return Started(sid, row)


def sign_in_with_link(token: str, *, previous: str | None = None, now: dt.datetime | None = None) -> Started:
    """Spend a one-time link (exactly once, even when two browsers race) and start the official's session."""
    now = now or utcnow()
    with write_transaction() as session:
        client = link_holder(token, now=now)
        spent = session.execute(update(SignInLink).where(
            SignInLink.token_hash == _digest(token), SignInLink.used_at.is_(None), SignInLink.expires_at > now,
        ).values(used_at=now))
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            raise LinkInvalid("used")
        return _start(session, {"kind": "official", "via": "link", "client_id": client.id, "official_id": client.id,
                                "name": client.name, "body": client.body, "role": client.role}, previous, now)


def sign_in_official(*, subject: str, name: str, role: str, issuer: str, previous: str | None = None,
                     now: dt.datetime | None = None) -> Started:
    """Start the session of an official the OpenID provider vouched for (recorded by subject and name)."""
    if role not in OFFICIAL_ROLES:
        raise Forbidden(f"the role {role!r} cannot sign in to the console", code="role_not_allowed")
    now = now or utcnow()
    with write_transaction() as session:
        return _start(session, {"kind": "official", "via": "oidc", "official_id": f"oidc:{subject}"[:100],
                                "name": name[:200], "body": issuer[:200], "role": role}, previous, now)


def sign_in_person(subject_ref: str, *, previous: str | None = None, now: dt.datetime | None = None) -> Started:
    """Start the session of a person the OpenID provider identified (kept as the HMAC of their IIN)."""
    now = now or utcnow()
    with write_transaction() as session:
        return _start(session, {"kind": "person", "via": "oidc", "subject_ref": subject_ref}, previous, now)


# --- sessions ---------------------------------------------------------------------------------------------

def live_session(session_id: str | None, *, now: dt.datetime | None = None) -> WebSession | None:
    """The session a browser's id names, while it runs (not ended, not expired, its key not revoked)."""
    if not session_id:
        return None
    now = now or utcnow()
    row = db.session.get(WebSession, _digest(session_id))
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    if row.client_id is not None:
        revoked = db.session.execute(select(ApiClient.revoked_at).where(ApiClient.id == row.client_id)).scalar_one_or_none()
        if revoked is not None:
            return None
    return row


def end_session(session_id: str | None, *, now: dt.datetime | None = None) -> None:
    """Sign out: the session ends at once (a copied cookie is worthless from now on)."""
    if not session_id:
        return
    now = now or utcnow()
    with write_transaction() as session:
        row = session.get(WebSession, _digest(session_id))
        if row is None or row.ended_at is not None:
            return
        row.ended_at = now
        who = row.official_id or f"person:{(row.subject_ref or '')[:16]}"
        record_leaf(session, "signin:session_ended", who, {"who": who, "kind": row.kind, "at": isoformat(now)}, now)


def principal_of(row: WebSession) -> Principal:
    """The official a session acts as: the same Principal an API key of theirs would be."""
    if row.kind != "official" or not row.official_id or not row.role:
        raise NotFound("The resource does not exist.")
    return Principal(row.official_id, row.name or row.official_id, row.body or "", row.role)


def citizen_of(row: WebSession) -> Citizen:
    """The person a session is of: as an OIDC bearer token of theirs would be."""
    if row.kind != "person" or not row.subject_ref:
        raise NotFound("The resource does not exist.")
    return Citizen(subject_ref=row.subject_ref, decision_id=None, via="oidc")


# --- officials named as a decision's operator ---------------------------------------------------------------

OIDC_PREFIX = "oidc:"


def known_officials(named: set[str]) -> set[str]:
    """Which of these identities are officials the gateway knows: a reviewer's or auditor's API client
    (``cli_…``, not revoked) or an official who has signed in through the OpenID provider (``oidc:<subject>``,
    as their sessions record them). What an agency may name as the official who operated a decision."""
    if not named:
        return set()
    found: set[str] = set()
    clients = [n for n in named if not n.startswith(OIDC_PREFIX)]
    subjects = [n for n in named if n.startswith(OIDC_PREFIX)]
    if clients:
        found.update(db.session.execute(select(ApiClient.id).where(
            ApiClient.id.in_(clients), ApiClient.role.in_(OFFICIAL_ROLES), ApiClient.revoked_at.is_(None),
        )).scalars())
    if subjects:
        found.update(o for o in db.session.execute(select(WebSession.official_id).where(
            WebSession.official_id.in_(subjects), WebSession.kind == "official", WebSession.via == "oidc",
        ).distinct()).scalars() if o is not None)
    return found


def unknown_operator(operator_id: str, field: str = "operator_id") -> dict[str, str]:
    """The validation detail for an operator_id that names no official the gateway knows."""
    return {"field": field, "rule": "known_official",
            "message": f"{operator_id!r} is not an official known to the gateway: name a reviewer's or auditor's "
                       "API client id (cli_…) or an official who signed in through OIDC (oidc:<subject>)"}
