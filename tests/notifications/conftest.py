"""Real parts for notification tests: an aiosmtpd SMTP server, a webhook receiver, a dispatcher with a fixed clock."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import ipaddress
import random
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from gateway.extensions import db
from gateway.notifications import Dispatcher
from tests.conftest import Gateway

SECRET_A = "whsec_" + base64.b64encode(b"agency A signs its webhooks with this").decode()
SECRET_B = "whsec_" + base64.b64encode(b"agency B has a secret of its own!").decode()
SMTP_USER, SMTP_PASSWORD = "gateway", "correct horse battery staple"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (aiosmtpd's Controller can't take port 0: see LIBRARY-NOTES)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


@dataclass
class SMTPServer:
    """An aiosmtpd server on 127.0.0.1 recording what it accepts; `refuse` answers RCPT with that reply."""

    tls_context: ssl.SSLContext | None = None
    require_auth: bool = False
    refuse: str | None = None
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, raw))
        return "250 Message accepted"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == (
            SMTP_USER, SMTP_PASSWORD)
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    def start(self) -> SMTPServer:
        self.port = free_port()
        options: dict[str, Any] = {}
        if self.tls_context is not None:
            options.update(tls_context=self.tls_context, require_starttls=True)
        if self.require_auth:
            options.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=True)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": self.port, "SMTP_SECURITY": "none", **extra}


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, written as PEM files (the test CA is the certificate itself)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_smtp_server(tmp_path: Path) -> Iterator[tuple[SMTPServer, Path]]:
    """An SMTP server that requires STARTTLS and then a login; yields it and the CA file that verifies it."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = SMTPServer(tls_context=context, require_auth=True).start()
    yield server, cert
    server.stop()


# --- the outbox as the tests see it -------------------------------------------------------------------



Dispatch = Callable[..., Dispatcher]


@pytest.fixture
def dispatch() -> Iterator[Dispatch]:
    """Make dispatchers for a test's gateway (config applied first, seeded jitter); closed after the test."""
    made: list[Dispatcher] = []

    def make(gw: Gateway, *, name: str = "test-dispatcher", **config: Any) -> Dispatcher:
        gw.app.config.update(config)
        found = Dispatcher(gw.app, rng=random.Random(7), name=name)
        made.append(found)
        return found

    yield make
    for found in made:
        found.close()


def rows(gw: Gateway) -> list[Any]:
    with gw.app.app_context():
        return list(db.session.execute(sa.text(
            "SELECT id, decision_id, kind, channel, language, status, attempts, next_attempt_at, last_error, "
            "delivered_at, claimed_by, lease_expires_at FROM notifications ORDER BY created_at, id")).all())


def row(gw: Gateway) -> Any:
    found = rows(gw)
    assert len(found) == 1, found
    return found[0]


def as_utc(value: Any) -> dt.datetime:
    """A timestamp read with raw SQL (a string on SQLite, an aware datetime on PostgreSQL), as aware UTC."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
