"""Finding 14 (tokens and limits): an ID token with an expiry a century ahead was accepted; the explanation
limit was per worker (two workers: twice the budget) without a word. The tests present the token again and
count the budget across two app instances ("workers")."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway import create_app
from gateway.security import warn_unshared_limits
from gateway.server import GatewayServer
from tests.conftest import SECRETS, Gateway, make_config
from tests.security.support import decided
from tests.support.citizens import IdentityProvider, notice_token

CENTURY = 100 * 365 * 24 * 3600


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gateway_extra(idp: IdentityProvider) -> dict[str, Any]:
    return idp.config()


def me(gw: Gateway, token: str) -> Any:
    return gw.client.get("/v1/me/decisions", headers={"Authorization": f"Bearer {token}"})


def test_an_id_token_valid_for_a_century_is_refused(gateway: Gateway, idp: IdentityProvider) -> None:
    person = gateway.sample["subject"]["iin"]
    now = int(time.time())
    assert me(gateway, idp.token(person, iat=now, exp=now + CENTURY)).status_code == 401
    assert me(gateway, idp.token(person, iat=now, exp=now + 24 * 3600 + 120)).status_code == 401
    assert me(gateway, idp.token(person, iat=now, exp=now + 3600)).status_code == 200


@pytest.mark.gateway_config(OIDC_MAX_TOKEN_LIFETIME_S=600)
def test_the_token_lifetime_cap_is_configurable(gateway: Gateway, idp: IdentityProvider) -> None:
    person, now = gateway.sample["subject"]["iin"], int(time.time())
    assert me(gateway, idp.token(person, iat=now, exp=now + 3600)).status_code == 401
    assert me(gateway, idp.token(person, iat=now, exp=now + 300)).status_code == 200


def test_per_worker_limits_are_announced_at_start(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    gateway.app.logger.addHandler(caplog.handler)  # the dispatcher's logging set-up may stop propagation
    try:
        message = warn_unshared_limits(gateway.app, 2)
    finally:
        gateway.app.logger.removeHandler(caplog.handler)
    assert message is not None and "per worker" in message and "redis://" in message
    assert any("per worker" in r.getMessage() for r in caplog.records)
    assert warn_unshared_limits(gateway.app, 1) is None


def test_a_shared_storage_holds_the_budget_across_workers(gateway: Gateway, tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    shared = {"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0", "RATELIMIT_EXPLANATIONS": "30/minute",
              "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}"}
    url = gateway.app.config["DATABASE_URL"]
    workers = [create_app(make_config(url, tmp_path, KEYSTORE_URL=gateway.app.config["KEYSTORE_URL"], **shared))
               for _ in range(2)]
    assert warn_unshared_limits(workers[0], 2) is None
    did = decided(gateway)["decision_id"]
    token = {"Authorization": f"Bearer {notice_token(gateway, did)}"}
    answers = [workers[i % 2].test_client().get(f"/v1/decisions/{did}/explanation", headers=token).status_code
               for i in range(32)]
    assert answers.count(200) == 30 and answers[-2:] == [429, 429]



@pytest.mark.parametrize(("workers", "storage", "warned"), [(2, None, True), (1, None, False),
                                                            (2, "redis://127.0.0.1:6379/0", False)])
def test_the_server_says_at_start_that_limits_are_per_worker(gateway: Gateway, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture,
                                                             workers: int, storage: str | None, warned: bool) -> None:
    """`gateway serve`'s own start-up (GatewayServer.load, run by the gunicorn master before it forks)."""
    env = {"INSTANCE_PATH": str(tmp_path), "DATABASE_URL": gateway.app.config["DATABASE_URL"],
           "PUBLIC_BASE_URL": "https://gateway.test", **SECRETS}
    if gateway.app.config["KEYSTORE_URL"]:
        env["KEYSTORE_URL"] = gateway.app.config["KEYSTORE_URL"]
    if storage is not None:
        env["RATELIMIT_STORAGE_URI"] = storage
    for name, value in env.items():
        monkeypatch.setenv(f"GATEWAY_{name}", value)
    caplog.set_level(logging.WARNING)
    server = GatewayServer({"bind": "127.0.0.1:0", "workers": workers})
    app = server.load()
    app.logger.addHandler(caplog.handler)  # in case the app's logging set-up stops propagation
    try:
        said = [r.getMessage() for r in caplog.records if "per worker" in r.getMessage()]
    finally:
        app.logger.removeHandler(caplog.handler)
    assert bool(said) is warned, said
    if warned:
        assert "2 workers serve" in said[0] and "RATELIMIT_EXPLANATIONS" in said[0]
