"""Every registered channel passes one conformance test; the webhook channel refuses private targets."""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateway.config import DEFAULTS
from gateway.notifications.channels import (
    CHANNELS,
    Channel,
    DeliveryError,
    Message,
    PermanentFailure,
    TemporaryFailure,
    UnknownChannel,
    make_channel,
)
from gateway.notifications.channels.webhook import (
    AddressRefused,
    WebhookChannel,
    is_public,
)
from gateway.notifications.outbox import retry_delay
from tests.notifications.conftest import SECRET_A, SMTPServer, free_port

CONFIG = {**DEFAULTS, "PUBLIC_BASE_URL": "https://gateway.test", "WEBHOOK_SECRETS": {"Agency A": SECRET_A}}


def message(recipient: str, notification_id: str = "ntf_conformance0000000001") -> Message:
    return Message(id=notification_id, kind="decision_notice", language="ru", recipient=recipient, agency="Agency A",
                   subject="Уведомление", text="Текст уведомления\n", html="<p>Текст уведомления</p>",
                   payload={"type": "notification.decision_notice", "data": {"notification_id": notification_id}},
                   created_at=dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.UTC))


@dataclass
class Harness:
    """What a channel needs to deliver for real, how to see what arrived, and how to make delivery fail."""

    name: str
    config: dict[str, Any]
    recipient: str
    arrived_ids: Callable[[], list[str]]  # the de-duplication id of everything that arrived, in order
    broken: tuple[dict[str, Any], str] | None  # (config, recipient) under which delivery fails; None: can't fail


@pytest.fixture
def harness(request: pytest.FixtureRequest, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture,
            tmp_path: Path) -> Iterator[Harness]:
    """One harness per registered channel: a channel without one fails the conformance test."""
    name = request.param
    if name == "email":
        server = SMTPServer().start()
        config = {**CONFIG, **server.config()}
        yield Harness(name, config, "citizen@example.kz",
                      lambda: [r.message["Message-ID"].strip("<>").split("@")[0] for r in server.received],
                      ({**config, "SMTP_PORT": free_port()}, "citizen@example.kz"))
        server.stop()
    elif name == "webhook":
        ids: list[str] = []

        def handler(req: Request) -> Response:
            ids.append(req.headers["webhook-id"])
            return Response("", status=204)

        httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
        config = {**CONFIG, "WEBHOOK_ALLOW_PRIVATE": True}
        yield Harness(name, config, httpserver.url_for("/hook"), lambda: list(ids),
                      (config, f"http://127.0.0.1:{free_port()}/hook"))
    elif name == "log":
        # Alembic's fileConfig() (run by the migrations of other fixtures) disables loggers that existed then.
        logging.getLogger("gateway.notifications.log").disabled = False
        caplog.set_level(logging.INFO, logger="gateway.notifications.log")
        yield Harness(name, dict(CONFIG), "citizen@example.kz",
                      lambda: [r.args[0] for r in caplog.records if r.name == "gateway.notifications.log"], None)
    elif name == "file":
        folder = tmp_path / "notices"
        (tmp_path / "a-file").write_text("")  # the broken case: the folder's parent is a file
        logging.getLogger("gateway.notifications.file").disabled = False
        caplog.set_level(logging.INFO, logger="gateway.notifications.file")
        yield Harness(name, {**CONFIG, "NOTIFY_FILE_DIR": str(folder)}, "citizen@example.kz",
                      lambda: [r.args[0] for r in caplog.records if r.name == "gateway.notifications.file"],
                      ({**CONFIG, "NOTIFY_FILE_DIR": str(tmp_path / "a-file" / "notices")}, "citizen@example.kz"))
    else:
        pytest.fail(f"channel {name!r} has no conformance harness: add one to this fixture")


@pytest.mark.parametrize("harness", sorted(CHANNELS), indirect=True)
def test_channel_conformance(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert CHANNELS[harness.name].name == harness.name
    channel = make_channel(harness.name, harness.config)
    try:
        assert isinstance(channel, Channel)
        first = message(harness.recipient)
        assert channel.send(first) is None
        assert channel.send(first) is None  # delivery is at least once: a repeat carries the same id
        assert harness.arrived_ids() == [first.id, first.id]
    finally:
        channel.close()
    if harness.broken is not None:
        config, recipient = harness.broken
        failing = make_channel(harness.name, config)
        try:  # a failure is a DeliveryError saying whether to retry, never anything else
            with pytest.raises(DeliveryError) as caught:
                failing.send(message(recipient, "ntf_conformance0000000002"))
            assert isinstance(caught.value, TemporaryFailure | PermanentFailure)
        finally:
            failing.close()
    # Channels never log the address (the test servers' own logs, mail.log and werkzeug, may).
    ours = [r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("gateway", "httpx", "httpcore")]
    assert not [line for line in ours if harness.recipient in line]


def test_an_unknown_channel_names_the_known_ones() -> None:
    with pytest.raises(UnknownChannel, match="unknown notification channel 'fax'; known channels: email, file, log, webhook"):
        make_channel("fax", CONFIG)


# --- the webhook channel's guard against requests to internal addresses ---------------------------------

@pytest.fixture
def webhook() -> Iterator[WebhookChannel]:
    channel = WebhookChannel({**CONFIG, "NOTIFY_SEND_TIMEOUT_S": 3.0})
    yield channel
    channel.close()


@pytest.mark.parametrize("url", [
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://127.0.0.1/hook",
    "https://[::1]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://localhost/hook",
    "https://192.168.1.10:8443/hook",
    "https://100.64.0.1/hook",
    "https://[fe80::1]/hook",
])
def test_private_loopback_and_link_local_targets_are_refused_without_a_connection(webhook: WebhookChannel, url: str) -> None:
    started = time.monotonic()
    with pytest.raises(AddressRefused, match="loopback, private, link-local or reserved"):
        webhook.send(message(url))
    assert time.monotonic() - started < 1.0  # refused before connecting (10.0.0.1 would hang until the timeout)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://93.184.216.34/hook", "not https://"),
    ("ftp://example.kz/hook", r"not an http\(s\) URL"),
    ("https://user:pw@example.kz/hook", "carries credentials"),
])
def test_only_plain_https_urls_are_posted_to(webhook: WebhookChannel, url: str, reason: str) -> None:
    with pytest.raises(PermanentFailure, match=reason):
        webhook.send(message(url))


@pytest.mark.parametrize(("address", "public"), [
    ("10.0.0.1", False), ("172.16.0.1", False), ("192.168.0.1", False), ("127.0.0.1", False), ("169.254.169.254", False),
    ("0.0.0.0", False), ("100.64.0.1", False), ("224.0.0.1", False), ("::1", False), ("fe80::1", False),
    ("fc00::1", False), ("::ffff:127.0.0.1", False), ("93.184.216.34", True), ("2a00:1450:4001:81b::200e", True),
])
def test_is_public(address: str, public: bool) -> None:
    assert is_public(address) is public


# --- the retry schedule (gateway.notifications.outbox) ---------------------------------------------------

SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 86400]


def test_jitter_comes_from_the_injected_random_source() -> None:
    a = [retry_delay(n, schedule=SCHEDULE, jitter=0.1, rng=random.Random(3)) for n in range(1, 13)]
    b = [retry_delay(n, schedule=SCHEDULE, jitter=0.1, rng=random.Random(3)) for n in range(1, 13)]
    assert a == b
    assert retry_delay(1, schedule=[0.2, 0.5, 1], jitter=0.0, rng=random.Random()) == 0.2
    assert retry_delay(9, schedule=[0.2, 0.5, 1], jitter=0.0, rng=random.Random()) == 1  # the last delay repeats


@pytest.mark.parametrize("secrets", [{"Agency A": "whsec_"}, {"Agency A": "whsec_!!!"}, {"Agency A": 42}])
def test_an_unusable_webhook_secret_is_refused_at_start(secrets: dict[str, Any]) -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a whsec_<base64> secret"):
        WebhookChannel({**CONFIG, "WEBHOOK_SECRETS": secrets})


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("NOTIFY_ROUTES", {"email": "fax"}, "unknown notification channel 'fax'"),
    ("NOTIFY_RETRY_SCHEDULE", [], "NOTIFY_RETRY_SCHEDULE"),
    ("NOTIFY_RETRY_SCHEDULE", "5,300", "NOTIFY_RETRY_SCHEDULE"),
    ("SMTP_SECURITY", "tls", "SMTP_SECURITY"),
    ("WEBHOOK_DEFAULT_SECRET", "not-a-secret!", "the default"),
    ("TIMEZONE", "Asia/Nowhere", "TIMEZONE"),
])
def test_the_app_refuses_notification_settings_that_cannot_work(tmp_path: Any, setting: str, value: Any,
                                                                 says: str) -> None:
    from gateway import create_app
    from gateway.errors import ConfigError
    from tests.conftest import make_config

    with pytest.raises(ConfigError, match=re.escape(says)):
        create_app(make_config(f"sqlite:///{tmp_path}/x.db", tmp_path, **{setting: value}))


def test_the_file_channel_writes_the_email_with_the_persons_link_and_logs_only_where(tmp_path: Path,
                                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """`make run`'s notices: the whole email in a file only its owner reads; the log names the file, no more."""
    import email
    import stat

    logging.getLogger("gateway.notifications.file").disabled = False
    caplog.set_level(logging.INFO, logger="gateway.notifications.file")
    link = "https://gateway.test/d/dec_1?token=gwc_secret"
    note = message("citizen@example.kz")
    note = Message(**{**note.__dict__, "text": f"Откройте: {link}\n", "html": f'<a href="{link}">ссылка</a>'})
    channel = make_channel("file", {**CONFIG, "NOTIFY_FILE_DIR": str(tmp_path / "notices")})
    channel.send(note)
    path = tmp_path / "notices" / f"{note.id}.eml"
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["To"] == "citizen@example.kz" and parsed["Subject"] == note.subject
    assert link in parsed.get_body(("plain",)).get_content()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not list((tmp_path / "notices").glob("*.part"))
    logged = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert str(path) in logged and "gwc_secret" not in logged and "citizen@example.kz" not in logged
