"""Upgrading the schema inside a process that already logs leaves its loggers working.

Alembic's `fileConfig` disables every logger that exists unless told otherwise; an in-process upgrade (a
test provisioning an instance, an operator's script) then silenced the app's own error lines — the ones
that must say, without personal data, why a decision was not recorded.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from flask_migrate import upgrade

from gateway.app import create_app


def test_an_in_process_upgrade_keeps_existing_loggers_enabled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = {name: secrets.token_hex(32) for name in ("SUBJECT_KEY", "CONTACT_KEY", "SECRET_KEY")}
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}", **keys, "RATELIMIT_ENABLED": False})
    watched = [app.logger, logging.getLogger("gateway.jobs"), logging.getLogger("gateway.notifications")]
    assert not any(logger.disabled for logger in watched)
    with app.app_context():
        upgrade()
    assert [logger.name for logger in watched if logger.disabled] == []
    caplog.set_level(logging.ERROR)
    app.logger.error("still heard after the upgrade")
    assert "still heard after the upgrade" in caplog.text
