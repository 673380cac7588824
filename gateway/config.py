"""Configuration: defaults → instance config.py → GATEWAY_* environment → test mapping."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask

from gateway.errors import ConfigError

# Types that skops may instantiate when loading a model artifact. The list lives here (and in the
# deployment's config), never in the artifact: skops is an audited loader, not a sandbox.
SKOPS_TRUSTED_TYPES = [
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.dummy.DummyRegressor",
    "sklearn.dummy.DummyClassifier",
    "numpy.dtype",
    "builtins.slice",
]

DEFAULTS: dict[str, Any] = {
    # sqlite:///gateway.db is relative to the instance folder.
    "DATABASE_URL": "sqlite:///gateway.db",
    # The key store (gateway.keystore): the decisions' wrapped data keys, in a database of their own that is
    # backed up on its own, shorter schedule. Unset: a SQLite file next to a SQLite main database
    # (gateway.keys.db); with PostgreSQL set it to another database, else the keys share the main one.
    "KEYSTORE_URL": None,
    # Secrets: no defaults. `gateway init` writes random ones into instance/config.py.
    "SUBJECT_KEY": None,  # HMAC key for the subject reference (hex, >= 32 bytes)
    "CONTACT_KEY": None,  # AES-256-GCM key for contact details (hex, 32 bytes)
    "SECRET_KEY": None,  # signs capability links and forms
    "PUBLIC_BASE_URL": "http://127.0.0.1:8080",
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "MAX_ARTIFACT_BYTES": 256 * 1024 * 1024,
    "ALLOW_PICKLE": False,
    "SKOPS_TRUSTED_TYPES": SKOPS_TRUSTED_TYPES,
    "LANGUAGES": ["kk", "ru", "en"],
    "SQLITE_BUSY_TIMEOUT_S": 30.0,
    "RISK_ASSESSMENT_MAX_AGE_DAYS": 365,
    "TIMEZONE": "Asia/Almaty",  # legal deadlines end at midnight here
    "REVIEW_PERIOD_WORKING_DAYS": 15,  # Kazakhstan's administrative procedure
    "REVIEW_MAX_EXTENSION_MONTHS": 2,
    "REVIEW_LEASE_SECONDS": 900,
    "REVIEW_MAX_LEASE_SECONDS": 3600,
    "JSON_SORT_KEYS": False,
    # Notices (gateway/notifications). Times are seconds.
    "REVIEW_REQUEST_WINDOW_DAYS": 30,  # human review may be requested until decision date + this
    "NOTIFY_DISPATCHER_THREAD": True,  # deliver from the jobs thread of `gateway serve` (JOBS_THREAD_WORKERS)
    "NOTIFY_POLL_INTERVAL_S": 0.5,
    "NOTIFY_BATCH_SIZE": 100,  # rows per claim: the claim, the batch's reads and its results cost about the same for 20 or 100
    "NOTIFY_LEASE_S": 120.0,  # a claim older than this is taken over by another dispatcher
    # Delay before attempt n+1 after n failed attempts; the last delay repeats until NOTIFY_MAX_ATTEMPTS.
    "NOTIFY_RETRY_SCHEDULE": [5, 300, 1800, 7200, 18000, 36000, 86400],
    "NOTIFY_MAX_ATTEMPTS": 12,
    "NOTIFY_RETRY_JITTER": 0.1,  # each delay is multiplied by a random factor in [1 - j, 1 + j]
    "NOTIFY_FILE_DIR": None,  # the folder of the `file` channel (development: notices as .eml files)
    "NOTIFY_ROUTES": {},  # contact kind → channel, e.g. {"email": "log"} to print emails in development
    "NOTIFY_SEND_TIMEOUT_S": 10.0,
    "NOTIFY_EMAIL_FROM": None,  # default: notices@<host of PUBLIC_BASE_URL>
    "SMTP_HOST": None,  # unset: email notices wait (retrying) until it is configured
    "SMTP_PORT": None,  # default 587 (starttls), 465 (ssl), 25 (none)
    "SMTP_SECURITY": "starttls",  # starttls | ssl | none
    "SMTP_USERNAME": None,
    "SMTP_PASSWORD": None,
    "SMTP_CA_FILE": None,  # extra CA bundle to verify the SMTP server with
    "WEBHOOK_SECRETS": {},  # API client body (agency) → "whsec_…" signing secret
    "WEBHOOK_DEFAULT_SECRET": None,
    "WEBHOOK_ALLOW_PRIVATE": False,  # allow http:// and loopback/private/link-local targets (tests, labs)
    "WEBHOOK_CA_FILE": None,
    # Oversight (gateway/oversight.py): where an agency hears the final outcome of a held decision (API client
    # body → URL; signed like webhooks with WEBHOOK_SECRETS), and the smallest group the fairness figures show.
    "AGENCY_CALLBACK_URLS": {},
    "FAIRNESS_MIN_GROUP": 30,
    # Lists count their items exactly up to this many; beyond it `total` is this cap and `total_is_lower_bound`
    # is true, so a page costs the same whatever the size of the table (Elasticsearch's track_total_hits).
    "LIST_COUNT_CAP": 10_000,
    "OVERSIGHT_METRICS_DAYS": 30,  # /metrics exports the oversight figures of this many last days
    # ... its statistics (notice delivery p95, review rates, fairness, drift) over at most this many of each model's
    # most recent decisions in those days; counts and states are exact (gateway.oversight.recent_figures).
    "OVERSIGHT_METRICS_SAMPLE": 2000,
    # Hours from an incident's opening to the regulator-report deadline, per severity (defaults: critical 24,
    # high 72, medium 360, low 720).
    "INCIDENT_REPORT_HOURS": {},
    # Remote models (manifest `source`: OIP v2 or MLflow servers). The webhook address rules apply to their
    # URLs unless MODEL_ALLOW_PRIVATE (tests, model servers on the deployment's own network). Credentials
    # never go in a manifest: a bearer token per URL origin ("https://models.example.kz" → token), one
    # client certificate for mutual TLS, an extra CA bundle. TLS is always verified.
    "MODEL_ALLOW_PRIVATE": False,
    "MODEL_BEARER_TOKENS": {},
    "MODEL_CLIENT_CERT": None,
    "MODEL_CLIENT_KEY": None,
    "MODEL_CA_FILE": None,
    # Background jobs (gateway/jobs). The deliver kind keeps the NOTIFY_* settings above (batch size,
    # lease, poll interval, retry schedule, attempts, jitter); every kind has its own of each.
    "JOBS_THREAD": True,  # run background jobs in a thread of a `gateway serve` worker
    # ... in at most this many workers of an instance at once (a worker takes a free slot when a holder exits),
    # or "all": one in every worker (more SQLite writers, and the thread competes with each worker's requests).
    "JOBS_THREAD_WORKERS": 1,
    "JOBS_THREAD_KINDS": ["deliver", "explain", "sequence", "purge", "recourse", "batch"],  # which kinds that thread runs (`gateway worker` runs all)
    "JOBS_DELIVER_CONCURRENCY": 1,  # runner threads per process
    # explain: model-agnostic explanations computed after their decision committed (CPU-bound: one thread
    # per process is enough; run more `gateway worker --kinds explain` processes to go faster).
    "JOBS_EXPLAIN_BATCH_SIZE": 10,
    "JOBS_EXPLAIN_LEASE_S": 120.0,
    "JOBS_EXPLAIN_POLL_INTERVAL_S": 0.5,
    "JOBS_EXPLAIN_RETRY_SCHEDULE": [5, 60, 600, 3600],
    "JOBS_EXPLAIN_MAX_ATTEMPTS": 5,  # then the explanation is failed: the person is told whom to contact
    "JOBS_EXPLAIN_RETRY_JITTER": 0.1,
    "JOBS_EXPLAIN_CONCURRENCY": 1,
    # recourse: options to change adverse decisions of models that are not cheap to search (gateway/recourse.py)
    "JOBS_RECOURSE_BATCH_SIZE": 10,
    "JOBS_RECOURSE_LEASE_S": 120.0,
    "JOBS_RECOURSE_POLL_INTERVAL_S": 0.5,
    "JOBS_RECOURSE_RETRY_SCHEDULE": [5, 60, 600, 3600],
    "JOBS_RECOURSE_MAX_ATTEMPTS": 5,  # then the recourse is failed: the person is told whom to contact
    "JOBS_RECOURSE_RETRY_JITTER": 0.1,
    "JOBS_RECOURSE_CONCURRENCY": 1,
    # Decision batches (gateway/batches/): POST /v1/models/{name}/decision-batches and `gateway decide`.
    # The batch kind decides one chunk per transaction; a killed runner's batch resumes from its last chunk.
    "BATCH_CHUNK_SIZE": 500,
    "BATCH_MAX_ROWS": 100000,
    "BATCH_MAX_BYTES": 64 * 1024 * 1024,
    "JOBS_BATCH_BATCH_SIZE": 1,  # batches claimed at a time (each is worked off chunk by chunk)
    "JOBS_BATCH_LEASE_S": 120.0,  # renewed by every committed chunk
    "JOBS_BATCH_POLL_INTERVAL_S": 1.0,
    "JOBS_BATCH_RETRY_SCHEDULE": [5, 60, 600],
    "JOBS_BATCH_MAX_ATTEMPTS": 5,  # failed attempts at one chunk; then the batch is failed (last_error says why)
    "JOBS_BATCH_RETRY_JITTER": 0.1,
    "JOBS_BATCH_CONCURRENCY": 1,
    # The audit log (gateway/auditlog): the sequence kind of the jobs engine puts leaves into the Merkle tree
    # and signs a checkpoint (C2SP signed note, Ed25519) at least this often while there are new leaves.
    "LOG_SIGNING_KEY": None,  # hex Ed25519 seed; `gateway init` writes one (unset: derived from SECRET_KEY)
    "LOG_ORIGIN": None,  # the checkpoints' origin line and key name; default "<host of PUBLIC_BASE_URL>/log"
    "LOG_CHECKPOINT_INTERVAL_S": 5.0,
    "JOBS_SEQUENCE_BATCH_SIZE": 5000,
    "JOBS_SEQUENCE_LEASE_S": 60.0,
    "JOBS_SEQUENCE_POLL_INTERVAL_S": 0.5,
    "JOBS_SEQUENCE_RETRY_SCHEDULE": [1, 5, 30],
    "JOBS_SEQUENCE_MAX_ATTEMPTS": 1000000,
    "JOBS_SEQUENCE_RETRY_JITTER": 0.1,
    "JOBS_SEQUENCE_CONCURRENCY": 1,
    # Retention (gateway/retention.py): the person's data of a decision (inputs, contact, explanation values,
    # point of view, corrected data, notice bodies) is purged this many days after the decision, unless a
    # review is open or a legal hold is set; a model's manifest may set its own `retention_days`. Never
    # below 180 days. The purge kind looks for expired decisions every PURGE_INTERVAL_S seconds.
    "RETENTION_DAYS": 365,
    "PURGE_INTERVAL_S": 3600.0,
    "JOBS_PURGE_BATCH_SIZE": 200,
    "JOBS_PURGE_LEASE_S": 300.0,
    "JOBS_PURGE_POLL_INTERVAL_S": 60.0,
    "JOBS_PURGE_RETRY_SCHEDULE": [60, 600, 3600],
    "JOBS_PURGE_MAX_ATTEMPTS": 1000000,
    "JOBS_PURGE_RETRY_JITTER": 0.1,
    "JOBS_PURGE_CONCURRENCY": 1,
    # Citizens (gateway/auth.py). Capability links are signed with SECRET_KEY (and SECRET_KEY_FALLBACKS
    # while keys rotate); they name one decision and expire.
    "CAPABILITY_MAX_AGE_DAYS": 365,
    # Pages (gateway/web): the personal link starts a session bound to its decision in a signed cookie
    # (HttpOnly, SameSite=Strict, Secure on https); it lasts this long after the last page the person opened.
    "WEB_SESSION_MAX_AGE_S": 3600,
    # Officials' console (gateway/web/console.py): a one-time sign-in link (`gateway keys create --web`) is
    # valid this long and once; an official's or a signed-in person's session lasts this long after sign-in.
    "SIGN_IN_LINK_MAX_AGE_S": 900,
    "CONSOLE_SESSION_MAX_AGE_S": 8 * 3600,
    # Sign-in through an OpenID provider (Authlib, authorization code + PKCE): unset client id = off.
    # Officials get their role from OIDC_ROLE_CLAIM (reviewer, auditor); people their IIN from OIDC_IIN_CLAIM.
    "OIDC_METADATA_URL": None,  # the provider's /.well-known/openid-configuration
    "OIDC_CLIENT_ID": None,
    "OIDC_CLIENT_SECRET": None,
    "OIDC_SCOPES": "openid profile",
    "OIDC_ROLE_CLAIM": "gateway_role",
    "OIDC_NAME_CLAIM": "name",
    # OIDC bearer tokens of the national identity provider: unset issuer = OIDC is off. The JWKS comes
    # from a file (fetched by the deployment) or a URL (fetched and cached by the gateway).
    "OIDC_ISSUER": None,
    "OIDC_AUDIENCE": None,
    "OIDC_JWKS_FILE": None,
    "OIDC_JWKS_URL": None,
    "OIDC_IIN_CLAIM": "iin",
    "OIDC_ALGORITHMS": ["RS256", "ES256"],  # asymmetric only: never "none", never HS*
    "OIDC_LEEWAY_S": 60,
    # The longest lifetime (exp - iat) of an ID token the gateway accepts: a token minted for a century is
    # a credential that never ends, whoever holds it.
    "OIDC_MAX_TOKEN_LIFETIME_S": 24 * 3600,
    # Rate limits (Flask-Limiter), per API key, per citizen (subject) or per address when anonymous.
    # In memory per process by default: with several workers or instances set a shared storage,
    # e.g. GATEWAY_RATELIMIT_STORAGE_URI=redis://127.0.0.1:6379/0.
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_STRATEGY": "fixed-window",
    "RATELIMIT_PER_CALLER": "600/minute",  # every endpoint together, per caller
    "RATELIMIT_DECISIONS": "6000/minute",  # POST decisions: the agency's own workload
    "RATELIMIT_EXPLANATIONS": "30/minute",  # explanations and their charts together (model extraction)
    "RATELIMIT_METRICS": "60/minute",  # GET /metrics per key (a scraper every 15 s needs 4)
    # /metrics serves figures at most this old: computed at most once per interval per process, so a scrape
    # costs the same at 10^3 and 10^6 decisions.
    "METRICS_MAX_AGE_S": 15.0,
    # ... and a refresh reads only what changed: finished events are rolled up per period once the period ended
    # this long ago (gateway.rollups); a write transaction never takes that long to commit.
    "METRICS_ROLLUP_PERIOD_S": 3600.0,
    "METRICS_ROLLUP_SETTLE_S": 600.0,
    "RATELIMIT_KEY_PREFIX": "gateway",
    # Number of reverse proxies in front of the gateway whose X-Forwarded-For is trusted (0: none).
    "PROXY_FIX_X_FOR": 0,
}


def load_config(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Fill app.config in the fixed order and check what must be set."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("GATEWAY")
    if test_config:
        app.config.from_mapping(test_config)
    app.config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(app.config["DATABASE_URL"])
    app.config["KEYSTORE_DATABASE_URI"] = normalise_database_url(
        keystore_database_url(app.config["DATABASE_URL"], app.config.get("KEYSTORE_URL")))
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    _check_secrets(app)
    _check_citizen_auth(app)
    _check_retention(app)
    _check_batches(app)
    _check_metrics(app)


def keystore_database_url(database_url: str, configured: str | None) -> str:
    """The key store's database URL: KEYSTORE_URL, else derived from the main database's.

    SQLite: a file of its own next to the main one (`gateway.db` → `gateway.keys.db`; in memory stays in
    memory, a database of its own). PostgreSQL: the main database itself — its backups then keep the keys,
    which `gateway db upgrade` warns about; production sets KEYSTORE_URL to a database of its own.
    """
    if configured:
        return configured
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            return database_url
        folder, slash, name = path.rpartition("/")
        stem, dot, suffix = name.rpartition(".")
        keys_name = f"{stem}.keys.{suffix}" if dot and stem else f"{name}.keys"
        return url.set(database=f"{folder}{slash}{keys_name}").render_as_string(hide_password=False)
    return database_url


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _hex_key(app: Flask, name: str, length: int | None, minimum: int = 32) -> bytes:
    value = app.config.get(name)
    if not value:
        raise ConfigError(
            f"GATEWAY_{name} is not set: run `gateway init` to write random keys into the instance "
            f"folder ({app.instance_path}), or set the environment variable"
        )
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
    except ValueError:
        raise ConfigError(f"GATEWAY_{name} must be hex") from None
    if (length is not None and len(key) != length) or len(key) < minimum:
        want = f"exactly {length}" if length else f"at least {minimum}"
        raise ConfigError(f"GATEWAY_{name} must be {want} bytes ({2 * (length or minimum)} hex characters)")
    return key


def _check_secrets(app: Flask) -> None:
    app.config["SUBJECT_KEY_BYTES"] = _hex_key(app, "SUBJECT_KEY", None)
    app.config["CONTACT_KEY_BYTES"] = _hex_key(app, "CONTACT_KEY", 32)
    if not app.config.get("SECRET_KEY"):
        raise ConfigError("GATEWAY_SECRET_KEY is not set: run `gateway init` or set the environment variable")


RETENTION_FLOOR_DAYS = 180  # EU practice keeps decision logs at least 6 months (AI Act Art. 19, 26(6))


def _check_retention(app: Flask) -> None:
    days = app.config.get("RETENTION_DAYS")
    if isinstance(days, str) and days.strip().isdigit():
        days = app.config["RETENTION_DAYS"] = int(days)
    if not isinstance(days, int) or isinstance(days, bool) or days < RETENTION_FLOOR_DAYS:
        raise ConfigError(f"GATEWAY_RETENTION_DAYS must be a whole number of days of at least {RETENTION_FLOOR_DAYS}, "
                          f"not {days!r}")
    interval = app.config.get("PURGE_INTERVAL_S")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
        raise ConfigError(f"GATEWAY_PURGE_INTERVAL_S must be a positive number of seconds, not {interval!r}")


ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


def _check_batches(app: Flask) -> None:
    for key in ("BATCH_CHUNK_SIZE", "BATCH_MAX_ROWS", "BATCH_MAX_BYTES", "LIST_COUNT_CAP"):
        value = app.config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"GATEWAY_{key} must be a positive integer, not {value!r}")


def _check_metrics(app: Flask) -> None:
    for key, least, what in (("METRICS_ROLLUP_PERIOD_S", 0.0, "a positive"), ("METRICS_ROLLUP_SETTLE_S", None, "a non-negative")):
        value = app.config.get(key)
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or (value <= least if least is not None else value < 0)):
            raise ConfigError(f"GATEWAY_{key} must be {what} number of seconds, not {value!r}")
    sample = app.config.get("OVERSIGHT_METRICS_SAMPLE")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ConfigError(f"GATEWAY_OVERSIGHT_METRICS_SAMPLE must be a positive integer, not {sample!r}")


def _check_citizen_auth(app: Flask) -> None:
    days = app.config.get("CAPABILITY_MAX_AGE_DAYS")
    if not isinstance(days, int | float) or isinstance(days, bool) or days <= 0:
        raise ConfigError("GATEWAY_CAPABILITY_MAX_AGE_DAYS must be a positive number of days")
    if not app.config.get("OIDC_ISSUER"):
        return
    if not app.config.get("OIDC_AUDIENCE"):
        raise ConfigError("GATEWAY_OIDC_ISSUER is set but GATEWAY_OIDC_AUDIENCE is not")
    if not (app.config.get("OIDC_JWKS_FILE") or app.config.get("OIDC_JWKS_URL")):
        raise ConfigError("GATEWAY_OIDC_ISSUER is set: set GATEWAY_OIDC_JWKS_FILE (or GATEWAY_OIDC_JWKS_URL) too")
    lifetime = app.config.get("OIDC_MAX_TOKEN_LIFETIME_S")
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        raise ConfigError("GATEWAY_OIDC_MAX_TOKEN_LIFETIME_S must be a positive number of seconds")
    algorithms = app.config.get("OIDC_ALGORITHMS") or []
    if not algorithms or not set(algorithms) <= ASYMMETRIC_ALGORITHMS:
        raise ConfigError(f"GATEWAY_OIDC_ALGORITHMS must be asymmetric algorithms from {sorted(ASYMMETRIC_ALGORITHMS)}")
