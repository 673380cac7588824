"""Fixtures for reliability tests: the example model trained once, a fresh real gateway per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_server import (
    UNLIMITED_RATES,
    Instance,
    ServerProcess,
    gateway_server,
    provision,
    train_example_model,
)


@pytest.fixture(scope="session")
def example_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The German-credit example trained once per session by its own script; its manifest path."""
    return train_example_model(tmp_path_factory.mktemp("german-credit-model"))


@pytest.fixture
def gateway_instance(tmp_path: Path, example_manifest: Path) -> Instance:
    """A fresh instance on SQLite in tmp_path: secrets, migrated database, active model, agency key.

    Rate limits are raised: these tests send hundreds of decisions a minute on purpose.
    """
    # Some decisions name a webhook on 127.0.0.1 (never answered): a lab deployment allows it (issue 11).
    return provision(tmp_path / "instance", example_manifest,
                     extra_env={**UNLIMITED_RATES, "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "1"})


@pytest.fixture
def live_gateway(tmp_path: Path, gateway_instance: Instance) -> Iterator[ServerProcess]:
    """`gateway serve` (gunicorn, 2 sync workers, preloaded) on a free port; always stopped afterwards."""
    server = gateway_server(gateway_instance, tmp_path / "gateway.log", workers=2)
    try:
        yield server.start()
    finally:
        server.stop()  # SIGTERM, then SIGKILL, to the whole process group; a no-op once stopped
