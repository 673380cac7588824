"""Who is calling: API keys (only their SHA-256 is stored), citizens' capability links and OIDC tokens.

Three kinds of bearer token, told apart by their form:

- ``gwk_…`` an API key of a machine client (agency, reviewer, auditor, admin): a `Principal`;
- ``gwc_…`` a capability token from the person's notice, signed (itsdangerous) and expiring, valid for
  one decision: a `Citizen` with that decision id;
- ``gwh_…`` a handover token: a link to one decision that its agency handed on (a counter clerk), bound to
  the decision and to a revocable handover record; whoever uses it is recorded as ``citizen:handover:<id>``;
- anything else is tried as an OIDC ID token of the national identity provider (a JWT signed with an
  asymmetric key from the configured JWKS): a `Citizen` with every decision about their IIN.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import jwt
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import ColumnElement, exists, select

from gateway.audit import record_leaf
from gateway.errors import ConfigError, Conflict, Forbidden, NotFound, Unauthorized
from gateway.extensions import db
from gateway.identity import InvalidIIN, subject_ref, validate_iin
from gateway.ids import isoformat, new_id, utcnow
from gateway.models import ApiClient, Decision, HandoverLink, Role
from gateway.settings import OidcSettings, current_settings

log = logging.getLogger(__name__)

KEY_PREFIX = "gwk_"
CAPABILITY_PREFIX = "gwc_"
CAPABILITY_SALT = "gateway.capability.v1"
HANDOVER_PREFIX = "gwh_"
HANDOVER_SALT = "gateway.handover.v1"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API client with a role, acting for a body (agency)."""

    id: str
    name: str
    body: str
    role: str


@dataclass(frozen=True)
class Citizen:
    """The person a decision is about: by a capability link (one decision) or OIDC (all of theirs)."""

    subject_ref: str  # HMAC of the IIN: the only form in which the gateway knows the person
    decision_id: str | None  # the one decision a capability or handover link names; None for OIDC
    via: str  # "capability" | "oidc" | "handover"
    handover_id: str | None = None  # the handover record a handover link belongs to
    role: ClassVar[str] = "citizen"

    @property
    def id(self) -> str:
        """How the person appears in records (reviews, access events): never the IIN, a short pseudonym.

        A handover link names its handover record instead: it was delivered by the agency, so its use is
        recorded as the agency's hand-over, never as the person's own link."""
        if self.via == "handover":
            return f"citizen:handover:{self.handover_id}"
        return f"citizen:{self.via}:{self.subject_ref[:16]}"

    @property
    def name(self) -> str:
        return self.id


Caller = Principal | Citizen


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
    record_leaf(db.session, "key:created", client.id, {"client_id": client.id, "name": name, "role": role,
                                                       "body": client.body, "key_prefix": client.key_prefix,
                                                       "at": isoformat(client.created_at)}, client.created_at)
    return client, key


def revoke_key(name: str) -> ApiClient:
    client = db.session.execute(select(ApiClient).where(ApiClient.name == name)).scalar_one_or_none()
    if client is None:
        raise NotFound(f"no API client named {name!r}")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        record_leaf(db.session, "key:revoked", client.id, {"client_id": client.id, "name": name,
                                                           "at": isoformat(client.revoked_at)}, client.revoked_at)
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
    return _api_client(conn, bearer_token(header))


def _api_client(conn: Any, token: str) -> Principal:
    digest = hash_key(token)
    row = conn.execute(
        select(ApiClient.id, ApiClient.name, ApiClient.body, ApiClient.role, ApiClient.key_hash, ApiClient.revoked_at)
        .where(ApiClient.key_hash == digest)
    ).first()
    # The lookup is by hash, so timing reveals nothing about the key; compare anyway in constant time.
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        _seen_keys().pop(digest, None)
        raise Unauthorized("the API key is unknown or revoked")
    found = Principal(row.id, row.name, row.body, row.role)
    _remember_key(digest, found)
    return found


# --- API keys seen live by this process ------------------------------------------------------------------
# A key's client (id, name, body, role) never changes; only its revocation does. The decision path takes the
# principal from this cache without a SELECT and proves the key live inside its own write transaction
# (`live_key`: a condition of the idempotency record's INSERT), so a revoked key records nothing from the
# moment its revocation commits, in every worker and instance. Every other path authenticates with a SELECT.

SEEN_KEYS_MAX = 10_000


def _seen_keys() -> dict[str, Principal]:
    seen: dict[str, Principal] = current_app.extensions.setdefault("gateway.seen_keys", {})
    return seen


def _remember_key(digest: str, principal: Principal) -> None:
    seen = _seen_keys()
    if len(seen) >= SEEN_KEYS_MAX and digest not in seen:
        seen.clear()  # a bound, not an LRU: refilled by one SELECT per key
    seen[digest] = principal


def forget_key(digest: str) -> None:
    """Drop a key from this process's cache (its next use authenticates with a SELECT)."""
    _seen_keys().pop(digest, None)


def cached_key(token: str) -> Principal | None:
    """The client of an API key as this process last saw it live (None: not seen; authenticate it).

    Not proof that the key is live now: whoever acts on it must check `live_key` in its write transaction
    (or authenticate with `authenticate_caller`)."""
    return _seen_keys().get(hash_key(token))


def live_key(client_id: str | ColumnElement[str], digest: str | ColumnElement[str]) -> Any:
    """SQL condition: the key with this hash is `client_id`'s and not revoked (evaluated in the statement)."""
    return exists().where(ApiClient.id == client_id, ApiClient.key_hash == digest, ApiClient.revoked_at.is_(None))


def check_live_key(client_id: str, digest: str) -> None:
    """Unauthorized unless the key is live now (one SELECT); forgets it from the cache when it is not."""
    if not db.session.execute(select(live_key(client_id, digest))).scalar():
        forget_key(digest)
        raise Unauthorized("the API key is unknown or revoked")


def require_role(principal: Caller, *roles: Role) -> None:
    if principal.role not in {r.value for r in roles}:
        raise Forbidden(f"this action needs an API key with the role {' or '.join(r.value for r in roles)}")


def authenticate_caller(header: str | None) -> Caller:
    """Return who sent this Authorization header (API key, capability link or OIDC token), else raise Unauthorized."""
    token = bearer_token(header)
    if token.startswith(KEY_PREFIX):
        return _api_client(db.session, token)
    if token.startswith(CAPABILITY_PREFIX):
        return citizen_from_capability(token)
    if token.startswith(HANDOVER_PREFIX):
        return citizen_from_handover(token)
    return citizen_from_oidc(token)


def citizen_from_link(token: str) -> Citizen:
    """The person a link's token stands for: the notice's capability link, or an agency's handover link."""
    if token.startswith(HANDOVER_PREFIX):
        return citizen_from_handover(token)
    if token.startswith(CAPABILITY_PREFIX):
        return citizen_from_capability(token)
    raise Unauthorized("the token is not valid")


# --- capability links ------------------------------------------------------------------------------------

def _capability_serializer() -> URLSafeTimedSerializer:
    ext = current_app.extensions
    if "gateway.capability" not in ext:
        # itsdangerous signs with the last key and accepts all: old links keep working while keys rotate.
        keys = list(current_settings().secret_keys)
        ext["gateway.capability"] = URLSafeTimedSerializer(keys, salt=CAPABILITY_SALT)
    serializer: URLSafeTimedSerializer = ext["gateway.capability"]
    return serializer


def _subject_binding(ref: str) -> str:
    """A digest of the subject reference for the token: binds it without publishing the pseudonym.

    Unkeyed on purpose: the signature protects it, and a key here would break links when SECRET_KEY
    rotates. The reference itself is a keyed HMAC of the IIN, so the digest reveals nothing of the IIN.
    """
    return hashlib.sha256(b"gateway.capability.subject\x00" + ref.encode()).hexdigest()[:32]


def capability_token(decision_id: str, ref: str) -> str:
    """A signed, expiring token for the person's link to one decision (`…/d/{id}?token=…`)."""
    return CAPABILITY_PREFIX + _capability_serializer().dumps({"d": decision_id, "s": _subject_binding(ref)})


def citizen_from_capability(token: str) -> Citizen:
    """Check a capability token's signature, age and binding to its decision's subject."""
    max_age = int(current_settings().capability_max_age_days * 86400)
    try:
        payload = _capability_serializer().loads(token.removeprefix(CAPABILITY_PREFIX), max_age=max_age)
    except SignatureExpired:
        raise Unauthorized("this link has expired; ask the agency for a new one", code="token_expired") from None
    except BadSignature:
        raise Unauthorized("the token is not valid") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("d"), str) or not isinstance(payload.get("s"), str):
        raise Unauthorized("the token is not valid")
    ref = db.session.execute(select(Decision.subject_ref).where(Decision.id == payload["d"])).scalar_one_or_none()
    if ref is None or not hmac.compare_digest(_subject_binding(ref), payload["s"]):
        raise Unauthorized("the token is not valid")
    return Citizen(subject_ref=ref, decision_id=payload["d"], via="capability")


def expired_capability(token: str) -> Decision | None:
    """The decision named by a genuine capability token that has expired, else None.

    For the page that tells the person their link expired and whom to ask for a new one: the signature
    is verified (only the gateway can have issued the token), so this reveals nothing to a forger.
    """
    serializer = _capability_serializer()
    max_age = int(current_settings().capability_max_age_days * 86400)
    try:
        serializer.loads(token.removeprefix(CAPABILITY_PREFIX), max_age=max_age)
    except SignatureExpired as exc:
        try:
            payload = serializer.load_payload(exc.payload) if exc.payload is not None else None
        except BadSignature:
            return None
    except BadSignature:
        return None
    else:
        return None  # still valid: not expired
    if not isinstance(payload, dict) or not isinstance(payload.get("d"), str) or not isinstance(payload.get("s"), str):
        return None
    decision = db.session.get(Decision, payload["d"])
    if decision is None or not hmac.compare_digest(_subject_binding(decision.subject_ref), payload["s"]):
        return None
    return decision


# --- handover links (an agency hands a link to the person's decision on) --------------------------------

def _handover_serializer() -> URLSafeTimedSerializer:
    ext = current_app.extensions
    if "gateway.handover" not in ext:
        ext["gateway.handover"] = URLSafeTimedSerializer(list(current_settings().secret_keys), salt=HANDOVER_SALT)
    serializer: URLSafeTimedSerializer = ext["gateway.handover"]
    return serializer


def handover_token(decision_id: str, handover_id: str, ref: str) -> str:
    """A signed, expiring token of its own kind, bound to the decision, its subject and one handover record."""
    payload = {"d": decision_id, "h": handover_id, "s": _subject_binding(ref)}
    return HANDOVER_PREFIX + _handover_serializer().dumps(payload)


def citizen_from_handover(token: str) -> Citizen:
    """Check a handover token: signature, age, its decision's subject, and a handover record not revoked.

    A revoked handover is answered exactly like a forged token."""
    invalid = Unauthorized("the token is not valid")
    max_age = int(current_settings().capability_max_age_days * 86400)
    try:
        payload = _handover_serializer().loads(token.removeprefix(HANDOVER_PREFIX), max_age=max_age)
    except SignatureExpired:
        raise Unauthorized("this link has expired; ask the agency for a new one", code="token_expired") from None
    except BadSignature:
        raise invalid from None
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), str) for k in ("d", "h", "s")):
        raise invalid
    row = db.session.execute(
        select(Decision.subject_ref, HandoverLink.revoked_at)
        .join(HandoverLink, HandoverLink.decision_id == Decision.id)
        .where(Decision.id == payload["d"], HandoverLink.id == payload["h"])
    ).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(_subject_binding(row.subject_ref), payload["s"]):
        raise invalid
    return Citizen(subject_ref=row.subject_ref, decision_id=payload["d"], via="handover", handover_id=payload["h"])


# --- OIDC bearer tokens of the national identity provider ------------------------------------------------

class _JwksFile:
    """The identity provider's keys from a JSON file, read again when the file changes (key rotation)."""

    def __init__(self, path: str, algorithms: list[str]) -> None:
        self.path, self.algorithms = path, algorithms
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}

    def load(self) -> dict[str, jwt.PyJWK]:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise ConfigError(f"GATEWAY_OIDC_JWKS_FILE {self.path}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            with self._lock:
                with open(self.path, encoding="utf-8") as fh:
                    data = json.load(fh)
                self._keys, self._stamp = signing_keys(data, self.algorithms), stamp
        return self._keys

    def key(self, kid: str) -> jwt.PyJWK | None:
        return self.load().get(kid)


class _JwksUrl:
    """The identity provider's keys from its JWKS URL: cached, fetched again every 15 minutes, and for an
    unknown kid at most once a minute (so forged kids cannot make the gateway hammer the provider)."""

    MAX_AGE_S = 900.0
    UNKNOWN_KID_REFETCH_S = 60.0

    def __init__(self, url: str, algorithms: list[str]) -> None:
        self.algorithms = algorithms
        self.client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=5)
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -math.inf

    def key(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        age = now - self._fetched
        if kid in self._keys and age < self.MAX_AGE_S:
            return self._keys[kid]
        if age < self.UNKNOWN_KID_REFETCH_S:
            return self._keys.get(kid)
        with self._lock:
            if now - self._fetched >= self.UNKNOWN_KID_REFETCH_S:
                try:
                    self._keys = signing_keys(self.client.fetch_data(), self.algorithms)
                except jwt.PyJWKClientError as exc:
                    log.warning("OIDC: the JWKS URL could not be read: %s", exc)
                self._fetched = now
        return self._keys.get(kid)


def _usable(key: jwt.PyJWK, algorithms: list[str]) -> bool:
    return (key.key_type in ("RSA", "EC") and key.public_key_use in (None, "sig")
            and key.algorithm_name in algorithms and bool(key.key_id))


def signing_keys(jwks: dict[str, Any], algorithms: list[str]) -> dict[str, jwt.PyJWK]:
    """The JWKS's asymmetric signing keys with a kid and an allowed algorithm, by kid (others are ignored)."""
    keys: dict[str, jwt.PyJWK] = {}
    for data in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        try:
            key = jwt.PyJWK(data)
        except jwt.PyJWKError as exc:
            log.warning("OIDC: ignoring a JWKS key: %s", exc)
            continue
        if _usable(key, algorithms):
            keys[str(key.key_id)] = key
    return keys


def _jwks(oidc: OidcSettings) -> _JwksFile | _JwksUrl:
    ext = current_app.extensions
    if "gateway.jwks" not in ext:
        algorithms = list(oidc.algorithms)
        if oidc.jwks_file:
            ext["gateway.jwks"] = _JwksFile(oidc.jwks_file, algorithms)
        else:
            ext["gateway.jwks"] = _JwksUrl(str(oidc.jwks_url), algorithms)
    jwks: _JwksFile | _JwksUrl = ext["gateway.jwks"]
    return jwks


def citizen_from_oidc(token: str) -> Citizen:
    """Verify an ID token: asymmetric signature by a key of the JWKS (by kid), issuer, audience, expiry."""
    settings = current_settings()
    oidc = settings.oidc
    invalid = Unauthorized("the token is not valid")
    if oidc is None:
        raise invalid
    algorithms = list(oidc.algorithms)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise invalid from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in algorithms or not isinstance(kid, str) or not kid:
        raise invalid  # "none", HS* (a public key used as an HMAC secret) and unknown algorithms end here
    key = _jwks(oidc).key(kid)
    if key is None or key.algorithm_name != alg:
        raise invalid
    try:
        claims = jwt.decode(
            token, key.key, algorithms=[alg], audience=oidc.audience, issuer=oidc.issuer,
            leeway=oidc.leeway_s, options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired; sign in again", code="token_expired") from None
    except jwt.PyJWTError as exc:
        log.info("OIDC token refused: %s", exc)
        raise invalid from None
    issued, expires = claims.get("iat"), claims.get("exp")
    if (not isinstance(issued, int | float) or not isinstance(expires, int | float)
            or expires - issued > oidc.max_lifetime_s):
        log.info("OIDC token refused: its lifetime exceeds %s s", oidc.max_lifetime_s)
        raise invalid
    iin = claims.get(oidc.iin_claim)
    try:
        valid = validate_iin(iin) if isinstance(iin, str) else None
    except InvalidIIN:
        valid = None
    if valid is None:
        log.warning("OIDC token without a valid IIN in claim %r", oidc.iin_claim)
        raise invalid
    return Citizen(subject_ref=subject_ref(valid, settings.subject_key), decision_id=None, via="oidc")
