"""Fixtures for the jobs engine: a model only the model-agnostic explainer can explain, trained once."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from gateway import create_app, registry
from gateway.auth import create_key
from gateway.config import normalise_database_url
from gateway.db import write_transaction
from gateway.extensions import db
from gateway.manifest import load_manifest
from tests.conftest import POSTGRES_URL
from tests.support.agnostic import TRUSTED_TYPES, TRUSTED_TYPES_ENV, train_mlp
from tests.support.gateway_server import (
    UNLIMITED_RATES,
    Instance,
    decision_body,
    valid_iin,
)

MLP = "german-credit-mlp"


@pytest.fixture(scope="session")
def mlp_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The German-credit MLP (model-agnostic explanations) trained once per session; its manifest path."""
    return train_mlp(tmp_path_factory.mktemp("german-mlp"))


@pytest.fixture(scope="session")
def mlp_manifest_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model of the same kind under another name (other bytes, other model id)."""
    return train_mlp(tmp_path_factory.mktemp("german-mlp-b"), name="german-credit-mlp-b", seed=1)


@dataclass
class JobsInstance:
    """A gateway instance folder on SQLite with the MLP model active, an agency key, and an app on it."""

    instance: Instance
    app: Any
    key: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def decide(self, features: dict[str, Any], n: int) -> str:
        headers = {**self.auth(), "Idempotency-Key": f"jobs-{n}"}
        resp = self.app.test_client().post(f"/v1/models/{MLP}/decisions", json=decision_body(features, iin=valid_iin(n)),
                                           headers=headers)
        assert resp.status_code == 201, resp.get_json()
        did: str = resp.get_json()["decision_id"]
        return did

    def explanation(self, did: str) -> Any:
        return self.app.test_client().get(f"/v1/decisions/{did}/explanation", headers=self.auth())

    def rows(self) -> dict[str, Any]:
        with self.app.app_context():
            found = db.session.execute(sa.text("SELECT * FROM explanations")).mappings().all()
            db.session.commit()
        return {r["decision_id"]: dict(r) for r in found}

    def recorded_leaves(self) -> list[str]:
        with self.app.app_context():
            found = db.session.execute(sa.text("SELECT object_id FROM log_leaves WHERE kind = "
                                               "'decision:explanation:recorded'")).scalars().all()
            db.session.commit()
        return list(found)


def provision_mlp(folder: Path, manifest_path: Path, env: dict[str, str] | None = None,
                  database_url: str | None = None) -> JobsInstance:
    """Secrets, a migrated database (SQLite in `folder` unless `database_url`), the MLP registered and active,
    an agency key (in this process)."""
    folder.mkdir(parents=True)
    keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
    (folder / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in keys.items()))
    url = database_url or f"sqlite:///{folder / 'gateway.db'}"
    app = create_app({"DATABASE_URL": url, "SKOPS_TRUSTED_TYPES": TRUSTED_TYPES, **keys,
                      "RATELIMIT_ENABLED": False, "NOTIFY_ROUTES": {"email": "log"}})
    manifest, manifest_folder = load_manifest(manifest_path)
    assert manifest.artifact and manifest.explanation.background
    with app.app_context():
        upgrade()
        with write_transaction():
            registry.register(manifest, (manifest_folder / manifest.artifact).read_bytes(),
                              (manifest_folder / manifest.explanation.background).read_bytes(), activate=True,
                              registered_by="tests")
        with write_transaction():
            _, key = create_key(name="jobs-agency", role="agency")
    full_env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(folder), **TRUSTED_TYPES_ENV, **UNLIMITED_RATES,
                "GATEWAY_NOTIFY_ROUTES": '{"email": "log"}', **(env or {})}
    full_env.pop("GATEWAY_DATABASE_URL", None)
    if database_url is not None:
        full_env["GATEWAY_DATABASE_URL"] = database_url
    return JobsInstance(Instance(folder=folder, env=full_env, key=key, database_url=database_url), app, key)


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for SQLite (the instance folder's file); for PostgreSQL an empty database of this test's own."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set (CI sets it when PostgreSQL answers on 127.0.0.1:5432)")
    admin_url = sa.make_url(normalise_database_url(POSTGRES_URL))
    name = f"gw_jobs_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@pytest.fixture
def mlp_instance(tmp_path: Path, mlp_manifest: Path, fresh_database: str | None) -> Iterator[JobsInstance]:
    found = provision_mlp(tmp_path / "instance", mlp_manifest, database_url=fresh_database)
    yield found
    with found.app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()
