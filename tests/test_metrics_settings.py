"""The /metrics rollup and sample settings are checked when the app starts, each refusal naming the setting."""

from __future__ import annotations

import pytest

from gateway import create_app
from gateway.errors import ConfigError
from tests.conftest import SECRETS


@pytest.mark.parametrize(("setting", "bad", "says"), [
    ("METRICS_ROLLUP_PERIOD_S", 0, "a positive number of seconds"),
    ("METRICS_ROLLUP_PERIOD_S", "hourly", "a positive number of seconds"),
    ("METRICS_ROLLUP_SETTLE_S", -1, "a non-negative number of seconds"),
    ("OVERSIGHT_METRICS_SAMPLE", 0, "a positive integer"),
    ("OVERSIGHT_METRICS_SAMPLE", 2.5, "a positive integer"),
])
def test_the_rollup_settings_are_checked_at_start(setting: str, bad: object, says: str) -> None:
    with pytest.raises(ConfigError, match=f"GATEWAY_{setting} must be {says}, not"):
        create_app({**SECRETS, "DATABASE_URL": "sqlite://", setting: bad})
