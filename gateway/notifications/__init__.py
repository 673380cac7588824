"""Notices to the people decisions are about: the outbox, its dispatcher, channels and templates.

``record_decision`` writes pending rows in the decision's transaction; everything here happens after
commit. Public API:

- ``Dispatcher`` / ``DispatcherThread`` / ``run_worker``: deliver due rows (tests / ``gateway serve`` /
  ``gateway worker``);
- ``notification_stats(model_name=None)``: counts by status, kind and model over every row (for oversight);
  ``GET /metrics`` reads ``outbox.notification_metrics()`` instead, which never reads the delivered history;
- ``requeue(...)``: send dead rows again after fixing what killed them;
- ``init_app(app)``: check the configuration (``GET /metrics`` is gateway.observability's).

Later kinds (``review_received``, ``review_extended``, ``review_outcome``) need only a row with
``context={"review_id": ...}``: rendering picks the templates by kind.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from typing import Any

from flask import Flask

from gateway.errors import ConfigError
from gateway.gate import RequestGate
from gateway.notifications.channels import CHANNELS, UnknownChannel
from gateway.notifications.channels.email import SECURITY
from gateway.notifications.channels.webhook import signers
from gateway.notifications.dispatcher import Dispatcher, DispatcherThread, ensure_logging, run_worker
from gateway.notifications.outbox import notification_stats, requeue
from gateway.notifications.render import KINDS

__all__ = ["KINDS", "Dispatcher", "DispatcherThread", "check_config", "init_app", "notification_stats", "requeue",
           "run_worker", "start_thread"]


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse notification settings that could never work (at start, not at the first send)."""
    for kind, name in dict(config.get("NOTIFY_ROUTES") or {}).items():
        if name not in CHANNELS:
            raise ConfigError(f"GATEWAY_NOTIFY_ROUTES[{kind!r}]: {UnknownChannel(name)}")
    schedule = config["NOTIFY_RETRY_SCHEDULE"]
    if not isinstance(schedule, list | tuple) or not schedule or any(
            not isinstance(s, int | float) or s < 0 for s in schedule):
        raise ConfigError("GATEWAY_NOTIFY_RETRY_SCHEDULE must be a non-empty JSON list of seconds, e.g. [5, 300, 1800]")
    if int(config["NOTIFY_MAX_ATTEMPTS"]) < 1:
        raise ConfigError("GATEWAY_NOTIFY_MAX_ATTEMPTS must be at least 1")
    if not 0 <= float(config["NOTIFY_RETRY_JITTER"]) < 1:
        raise ConfigError("GATEWAY_NOTIFY_RETRY_JITTER must be in [0, 1)")
    if float(config["NOTIFY_LEASE_S"]) <= 0 or int(config["NOTIFY_BATCH_SIZE"]) < 1:
        raise ConfigError("GATEWAY_NOTIFY_LEASE_S must be positive and GATEWAY_NOTIFY_BATCH_SIZE at least 1")
    if str(config.get("SMTP_SECURITY") or "starttls").lower() not in SECURITY:
        raise ConfigError(f"GATEWAY_SMTP_SECURITY must be one of {', '.join(SECURITY)}")
    signers(config)  # every webhook secret decodes
    try:
        zoneinfo.ZoneInfo(config["TIMEZONE"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"GATEWAY_TIMEZONE {config['TIMEZONE']!r} is not a known time zone") from None


def init_app(app: Flask) -> None:
    """Check the notification settings. Starts nothing: see start_thread()."""
    check_config(app.config)


def start_thread(app: Flask, **options: Any) -> DispatcherThread | None:
    """Start the in-process dispatcher (one per serving process, after fork) unless the config turns it off."""
    if not app.config["NOTIFY_DISPATCHER_THREAD"]:
        return None
    ensure_logging()
    gate = RequestGate(app.wsgi_app)
    app.wsgi_app = gate  # type: ignore[method-assign]
    return DispatcherThread(app, yield_to=gate.idle, **options).start()
