"""Typed, frozen settings: built once in `create_app` from the loaded configuration, after its checks.

Domain code receives a `Settings` (or the few values it needs) instead of reading `current_app.config`
by string key: a misspelt name fails at start (AttributeError in mypy and at import), not at the first
request that happens to read it, and a service can be called — and tested — without a Flask app.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from flask import current_app

from gateway.workdays import WorkCalendar, calendar_from_config


@dataclass(frozen=True)
class OidcSettings:
    """The national identity provider whose ID tokens identify people (gateway.auth)."""

    issuer: str
    audience: str
    jwks_file: str | None
    jwks_url: str | None
    algorithms: tuple[str, ...]
    leeway_s: float
    iin_claim: str
    max_lifetime_s: float = 24 * 3600  # exp - iat of an accepted ID token


@dataclass(frozen=True)
class OidcSignIn:
    """Browser sign-in through an OpenID provider (authorization code + PKCE, gateway/web/signin.py)."""

    metadata_url: str
    client_id: str
    client_secret: str
    scopes: str
    role_claim: str  # officials: reviewer | auditor
    name_claim: str
    iin_claim: str  # people: their IIN (only its HMAC is kept)


@dataclass(frozen=True)
class Settings:
    """What the services need to know about the deployment (see gateway/config.py for each one's meaning)."""

    public_base_url: str
    subject_key: bytes
    contact_key: bytes
    secret_keys: tuple[str, ...]  # signing keys for capability links: the fallbacks first, the current one last
    languages: tuple[str, ...]
    timezone: str
    capability_max_age_days: float
    risk_assessment_max_age_days: int
    review_period_working_days: int
    review_max_extension_months: int
    review_lease_seconds: int
    review_max_lease_seconds: int
    review_request_window_days: int
    allow_pickle: bool
    skops_trusted_types: tuple[str, ...]
    max_artifact_bytes: int
    retention_days: int  # the default retention period (a model's manifest may set a longer or shorter one)
    oidc: OidcSettings | None  # None: OIDC sign-in of people is off
    calendar: WorkCalendar = field(repr=False, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the rest, for plug-ins
    batch_chunk_size: int = 500  # rows of a decision batch decided and committed together
    batch_max_rows: int = 100_000  # rows in one decision batch
    batch_max_bytes: int = 64 * 1024 * 1024  # size of one decision-batch upload
    agency_callback_urls: Mapping[str, str] = field(default_factory=dict, repr=False)  # agency body → URL
    fairness_min_group: int = 30
    sign_in_link_max_age_s: int = 900  # one-time sign-in links of officials (gateway.officials)
    console_session_max_age_s: int = 8 * 3600  # signed-in browser sessions (officials, people via OIDC)
    oidc_sign_in: OidcSignIn | None = None  # None: sign-in through an OpenID provider is off
    list_count_cap: int = 10_000  # lists count exactly up to this many items; beyond, `total` is a lower bound
    metrics_rollup_period_s: float = 3600.0  # /metrics counts finished events per period of this length
    metrics_rollup_settle_s: float = 600.0  # a period closes this long after it ends (late commits land first)

    @property
    def base_url(self) -> str:
        """PUBLIC_BASE_URL without a trailing slash."""
        return self.public_base_url.rstrip("/")

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read the checked configuration (gateway.config.load_config has validated and derived it)."""
        return cls(
            public_base_url=str(config["PUBLIC_BASE_URL"]),
            subject_key=bytes(config["SUBJECT_KEY_BYTES"]),
            contact_key=bytes(config["CONTACT_KEY_BYTES"]),
            secret_keys=(*(config.get("SECRET_KEY_FALLBACKS") or []), str(config["SECRET_KEY"])),
            languages=tuple(config["LANGUAGES"]),
            timezone=str(config["TIMEZONE"]),
            capability_max_age_days=float(config["CAPABILITY_MAX_AGE_DAYS"]),
            risk_assessment_max_age_days=int(config["RISK_ASSESSMENT_MAX_AGE_DAYS"]),
            review_period_working_days=int(config["REVIEW_PERIOD_WORKING_DAYS"]),
            review_max_extension_months=int(config["REVIEW_MAX_EXTENSION_MONTHS"]),
            review_lease_seconds=int(config["REVIEW_LEASE_SECONDS"]),
            review_max_lease_seconds=int(config["REVIEW_MAX_LEASE_SECONDS"]),
            review_request_window_days=int(config["REVIEW_REQUEST_WINDOW_DAYS"]),
            allow_pickle=bool(config.get("ALLOW_PICKLE")),
            skops_trusted_types=tuple(config["SKOPS_TRUSTED_TYPES"]),
            max_artifact_bytes=int(config["MAX_ARTIFACT_BYTES"]),
            retention_days=int(config["RETENTION_DAYS"]),
            oidc=OidcSettings(
                issuer=str(config["OIDC_ISSUER"]), audience=str(config["OIDC_AUDIENCE"]),
                jwks_file=config.get("OIDC_JWKS_FILE") or None, jwks_url=config.get("OIDC_JWKS_URL") or None,
                algorithms=tuple(config["OIDC_ALGORITHMS"]), leeway_s=float(config["OIDC_LEEWAY_S"]),
                iin_claim=str(config["OIDC_IIN_CLAIM"]),
                max_lifetime_s=float(config.get("OIDC_MAX_TOKEN_LIFETIME_S") or 24 * 3600),
            ) if config.get("OIDC_ISSUER") else None,
            calendar=calendar_from_config(config),
            raw=dict(config),
            batch_chunk_size=int(config["BATCH_CHUNK_SIZE"]),
            batch_max_rows=int(config["BATCH_MAX_ROWS"]),
            batch_max_bytes=int(config["BATCH_MAX_BYTES"]),
            agency_callback_urls=dict(config.get("AGENCY_CALLBACK_URLS") or {}),
            fairness_min_group=int(config.get("FAIRNESS_MIN_GROUP") or 30),
            sign_in_link_max_age_s=int(config.get("SIGN_IN_LINK_MAX_AGE_S") or 900),
            console_session_max_age_s=int(config.get("CONSOLE_SESSION_MAX_AGE_S") or 8 * 3600),
            list_count_cap=int(config.get("LIST_COUNT_CAP") or 10_000),
            metrics_rollup_period_s=float(config.get("METRICS_ROLLUP_PERIOD_S", 3600.0)),
            metrics_rollup_settle_s=float(config.get("METRICS_ROLLUP_SETTLE_S", 600.0)),
            oidc_sign_in=OidcSignIn(
                metadata_url=str(config["OIDC_METADATA_URL"]), client_id=str(config["OIDC_CLIENT_ID"]),
                client_secret=str(config.get("OIDC_CLIENT_SECRET") or ""), scopes=str(config.get("OIDC_SCOPES") or "openid"),
                role_claim=str(config.get("OIDC_ROLE_CLAIM") or "gateway_role"),
                name_claim=str(config.get("OIDC_NAME_CLAIM") or "name"),
                iin_claim=str(config.get("OIDC_IIN_CLAIM") or "iin"),
            ) if config.get("OIDC_CLIENT_ID") and config.get("OIDC_METADATA_URL") else None,
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Settings(**(values | changes))


def current_settings() -> Settings:
    """The settings of the app handling this request or command (built once by create_app)."""
    found: Settings = current_app.extensions["gateway.settings"]
    return found
