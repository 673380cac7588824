"""Fixtures: a fresh gateway (app, client, keys) per test on SQLite, or on PostgreSQL when configured."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from flask_migrate import upgrade

from gateway import create_app, keystore
from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.manifest import load_manifest
from tests.support.registration import SERVED_AS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "german_credit"
SAMPLE_REQUEST = json.loads((EXAMPLE / "sample_request.json").read_text())
POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")

SECRETS = {"SUBJECT_KEY": "a1" * 32, "CONTACT_KEY": "b2" * 32, "SECRET_KEY": "c3" * 32}
CLIENTS = {  # name: (role, body)
    "agency_a": ("agency", "Agency A"),
    "agency_b": ("agency", "Agency B"),
    "admin": ("admin", "Gateway operators"),
    "reviewer": ("reviewer", "Review office"),
    "auditor": ("auditor", "Audit office"),
}


def load_train_module() -> Any:
    spec = importlib.util.spec_from_file_location("german_credit_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def german_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model trained once per session into a temporary folder; its manifest path."""
    path: Path = load_train_module().train(tmp_path_factory.mktemp("german"), verbose=False)
    return path


def make_config(database_url: str, instance: Path, **extra: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": "https://gateway.test",
        # Tests read /metrics right after changing what it counts: no cached copy (tests/security covers it).
        "METRICS_MAX_AGE_S": 0,
        **SECRETS,
        **extra,
    }


def seed(app: Any, manifest_path: Path) -> dict[str, str]:
    """Migrate, register the example model, create one client per role; return the plaintext keys."""
    from gateway import registry

    with app.app_context():
        upgrade()
        manifest, folder = load_manifest(manifest_path)
        assert manifest.artifact and manifest.explanation.background
        # The example ships high-risk with adverse outcomes confirmed by an officer first (tests/test_oversight.py
        # runs it so). The shared fixture serves it as medium-risk, every decision taking effect at once, so that
        # the tests of the decision, notice, explanation and review flows see a declined decision notified at once.
        manifest = manifest.model_copy(update=SERVED_AS)
        with write_transaction():
            registry.register(
                manifest,
                (folder / manifest.artifact).read_bytes(),
                (folder / manifest.explanation.background).read_bytes(),
                activate=True,
                registered_by="tests",
            )
        keys = {}
        with write_transaction():
            for name, (role, body) in CLIENTS.items():
                _, keys[name] = create_key(name=name, role=role, body=body)
        db.engine.dispose()
        db.engines["keys"].dispose()  # closing the last connection checkpoints the WAL into the file copied
    return keys


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory, german_manifest: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("template")
    path = folder / "template.db"
    keys = seed(create_app(make_config(f"sqlite:///{path}", folder)), german_manifest)
    return path, keys


@contextmanager
def postgres_databases(*suffixes: str) -> Iterator[list[str]]:
    """Databases of their own on the configured PostgreSQL server (dropped afterwards), one per suffix."""
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set (CI sets it when PostgreSQL answers on 127.0.0.1:5432)")
    from gateway.config import normalise_database_url

    admin_url = sa.make_url(normalise_database_url(POSTGRES_URL))
    stem = f"gw_test_{uuid.uuid4().hex[:12]}"
    names = [stem + suffix for suffix in suffixes]
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield [admin_url.set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        with engine.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session on the configured PostgreSQL server."""
    with postgres_databases("") as (url,):
        yield url


@pytest.fixture(scope="session")
def postgres_keystore() -> Iterator[str]:
    """The key store's database of this session's PostgreSQL gateway: a database of its own, as in production."""
    with postgres_databases("_keys") as (url,):
        yield url


@pytest.fixture(scope="session")
def postgres_seeded(postgres_database: str, postgres_keystore: str, german_manifest: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    folder = tmp_path_factory.mktemp("pg")
    keys = seed(create_app(make_config(postgres_database, folder, KEYSTORE_URL=postgres_keystore)), german_manifest)
    return postgres_database, keys


SEEDED_TABLES = ("alembic_version", "api_clients", "blobs", "scoring_models")


def _reset_postgres(url: str, keystore_url: str) -> None:
    """Empty what tests write, keeping the seeded model and clients (restored to their seeded state)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        tables = [t for t in db.metadata.sorted_tables if t.name not in SEEDED_TABLES]
        conn.exec_driver_sql("TRUNCATE " + ", ".join(t.name for t in tables) + " CASCADE")
        conn.exec_driver_sql("DELETE FROM scoring_models WHERE registered_by <> 'tests'")
        conn.exec_driver_sql("UPDATE scoring_models SET status = 'active', status_reason = NULL")
        conn.exec_driver_sql("DELETE FROM api_clients WHERE name NOT IN ({})".format(", ".join(f"'{n}'" for n in CLIENTS)))
        conn.exec_driver_sql("UPDATE api_clients SET revoked_at = NULL")
        conn.exec_driver_sql("DELETE FROM blobs WHERE sha256 NOT IN (SELECT artifact_sha256 FROM scoring_models "
                             "UNION SELECT background_sha256 FROM scoring_models WHERE background_sha256 IS NOT NULL)")
    engine.dispose()
    keys = sa.create_engine(keystore_url)
    with keys.begin() as conn:
        conn.exec_driver_sql("TRUNCATE data_keys")
    keys.dispose()


@dataclass
class Gateway:
    """One fresh gateway for a test: the app, a client, and a key per role."""

    app: Any
    client: FlaskClient
    keys: dict[str, str]
    backend: str
    sample: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(SAMPLE_REQUEST))

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def decide(self, body: dict[str, Any] | None = None, *, who: str = "agency_a", key: str | None = None,
               model: str = "german-credit") -> Any:
        headers = {**self.auth(who), "Idempotency-Key": key or secrets.token_hex(8)}
        return self.client.post(f"/v1/models/{model}/decisions", json=body or self.sample, headers=headers)

    def count(self, table: str) -> int:
        with self.app.app_context():
            return int(db.session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def gateway_extra() -> dict[str, Any]:
    """Extra app config for the gateway fixture; a test module overrides it (e.g. with an OIDC provider)."""
    return {}


@pytest.fixture
def gateway(backend: str, request: pytest.FixtureRequest, tmp_path: Path, gateway_extra: dict[str, Any]) -> Iterator[Gateway]:
    extra = {**getattr(request, "param_config", {}), **gateway_extra}
    for marker in reversed(list(request.node.iter_markers("gateway_config"))):  # module's, then the test's own
        extra = {**extra, **marker.kwargs}
    if backend == "postgres":
        url, keys = request.getfixturevalue("postgres_seeded")
        extra = {"KEYSTORE_URL": request.getfixturevalue("postgres_keystore"), **extra}
        _reset_postgres(url, extra["KEYSTORE_URL"])
    else:
        template, keys = request.getfixturevalue("sqlite_template")
        path = tmp_path / "gateway.db"
        shutil.copyfile(template, path)
        # The key store: a SQLite file of its own next to the main one (gateway.keystore), migrated with it.
        shutil.copyfile(template.with_name("template.keys.db"), tmp_path / "gateway.keys.db")
        url = f"sqlite:///{path}"
    app = create_app(make_config(url, tmp_path, **extra))
    keystore.forget_pool()  # keys committed ahead for another test's key store (PostgreSQL's is emptied)
    yield Gateway(app, app.test_client(), keys, backend)
    with app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


_engines_in_test: list[sa.Engine] = []


@sa.event.listens_for(sa.Engine, "engine_connect")
def _track_engine(connection: sa.Connection) -> None:
    if connection.engine not in _engines_in_test:
        _engines_in_test.append(connection.engine)


@pytest.fixture(autouse=True)
def _dispose_engines_after_test() -> Iterator[None]:
    """Close the pooled connections of every engine a test connected with (its apps' main database and key
    store, raw engines), so none is left for the garbage collector to find open in a later test (psycopg's
    ResourceWarning there fails that other test). Disposing is harmless for engines still in use: their pools
    open new connections when asked."""
    yield
    while _engines_in_test:
        _engines_in_test.pop().dispose()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gateway_config(**config): extra app config for the gateway fixture")
