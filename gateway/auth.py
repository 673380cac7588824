"""API keys (only their SHA-256 is stored) and the principals they authenticate."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from gateway.errors import Conflict, Forbidden, NotFound, Unauthorized
from gateway.extensions import db
from gateway.ids import new_id, utcnow
from gateway.models import ApiClient, Role

KEY_PREFIX = "gwk_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API client with a role, acting for a body (agency)."""

    id: str
    name: str
    body: str
    role: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(*, name: str, role: str, body: str | None = None) -> tuple[ApiClient, str]:
    """Create an API client (no commit); return it and the key, which is shown only this once."""
    if role not in {r.value for r in Role}:
        raise ValueError(f"unknown role {role!r}; roles: {sorted(r.value for r in Role)}")
    if db.session.execute(select(ApiClient.id).where(ApiClient.name == name)).first():
        raise Conflict(f"an API client named {name!r} exists already")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    client = ApiClient(
        id=new_id("cli"),
        name=name,
        body=body or name,
        role=role,
        key_prefix=key[: len(KEY_PREFIX) + 6],
        key_hash=hash_key(key),
        created_at=utcnow(),
    )
    db.session.add(client)
    return client, key


def revoke_key(name: str) -> ApiClient:
    client = db.session.execute(select(ApiClient).where(ApiClient.name == name)).scalar_one_or_none()
    if client is None:
        raise NotFound(f"no API client named {name!r}")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
    return client


def bearer_token(header: str | None) -> str:
    """Return the token of an 'Authorization: Bearer <token>' header, or raise Unauthorized."""
    if not header:
        raise Unauthorized()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    return token.strip()


def authenticate(conn: Any, header: str | None) -> Principal:
    """Return the principal of a live API key, else raise Unauthorized. `conn`: a Session or Connection."""
    token = bearer_token(header)
    digest = hash_key(token)
    row = conn.execute(
        select(ApiClient.id, ApiClient.name, ApiClient.body, ApiClient.role, ApiClient.key_hash, ApiClient.revoked_at)
        .where(ApiClient.key_hash == digest)
    ).first()
    # The lookup is by hash, so timing reveals nothing about the key; compare anyway in constant time.
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        raise Unauthorized("the API key is unknown or revoked")
    return Principal(row.id, row.name, row.body, row.role)


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in {r.value for r in roles}:
        raise Forbidden(f"this action needs the role {' or '.join(r.value for r in roles)}")
