"""Webhooks: HTTPS POST of the JSON payload, signed per the Standard Webhooks spec, to public addresses only."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import json
import logging
import socket
import ssl
from collections.abc import Mapping
from typing import Any, ClassVar

import httpcore
import httpx
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from gateway._version import __version__
from gateway.errors import ConfigError
from gateway.notifications.channels.addresses import ADDRESS_REFUSED, is_public, refusal
from gateway.notifications.channels.base import (
    Message,
    PermanentFailure,
    RecipientGone,
    TemporaryFailure,
    scrub,
)

_RETRY_STATUSES = {408, 425, 429}


class _NoRequestLines(logging.Filter):
    """Drop httpx's "HTTP Request: POST <url>" lines: a webhook URL is the person's contact detail."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP Request:")


_HTTPX_FILTER = _NoRequestLines()


class AddressRefused(PermanentFailure):
    """The webhook's host resolves to an address the gateway does not send to."""


def url_sha256(url: str) -> str:
    """The key under which a disabled endpoint is stored (the URL itself is personal data)."""
    return hashlib.sha256(url.encode()).hexdigest()


def check_url(url: str, *, allow_private: bool) -> str:
    """Refuse what the gateway never posts to: other schemes, http:// and literal non-public addresses (unless
    allowed), no host, an invalid host name, credentials. The reason never names any part of the URL."""
    reason = refusal(url, allow_private=allow_private)
    if reason == ADDRESS_REFUSED:
        raise AddressRefused(reason + "; refused (GATEWAY_WEBHOOK_ALLOW_PRIVATE=1 allows it)")
    if reason is not None:
        raise PermanentFailure(reason)
    return url


class _GuardedBackend(httpcore.SyncBackend):
    """Resolve the host and check every address at connect time, then connect to a checked address.

    Checking here rather than before the request leaves no gap for DNS to answer differently in between.
    """

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve the webhook host: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.allow_private:
            refused = [a for a in addresses if not is_public(a)]
            if refused:
                raise AddressRefused(
                    "the webhook host resolves to a loopback, private, link-local or reserved address; refused "
                    "(GATEWAY_WEBHOOK_ALLOW_PRIVATE=1 allows it)"
                )
        error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError("the webhook host has no address")


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, *, allow_private: bool, verify: ssl.SSLContext | bool) -> None:
        super().__init__(verify=verify, trust_env=False)
        # httpx offers no network_backend argument; its pool is replaced by an equal one that uses ours.
        # (tests/notifications/test_webhook.py fails if a newer httpx stops honouring this.)
        ssl_context = self._pool._ssl_context
        self._pool.close()
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=_GuardedBackend(allow_private))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds()) if when.tzinfo else None


def signers(config: Mapping[str, Any]) -> dict[str, Webhook]:
    """A signer per agency (API client body) from WEBHOOK_SECRETS, and "" for WEBHOOK_DEFAULT_SECRET."""
    secrets = config.get("WEBHOOK_SECRETS") or {}
    if not isinstance(secrets, Mapping):
        raise ConfigError("GATEWAY_WEBHOOK_SECRETS must map an agency (API client body) to a whsec_ secret")
    default = config.get("WEBHOOK_DEFAULT_SECRET")
    found: dict[str, Webhook] = {}
    for agency, secret in [*secrets.items(), *([("", default)] if default else [])]:
        try:
            if not isinstance(secret, str) or not secret.startswith("whsec_"):
                raise ValueError("no whsec_ prefix")
            if len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) < 24:
                raise ValueError("shorter than 24 bytes")
            found[agency] = Webhook(secret)
        except (EmptyWebhookSecretError, ValueError, TypeError, RuntimeError) as exc:  # binascii.Error is a ValueError
            raise ConfigError(f"the webhook secret for {agency or 'the default'!r} is not a whsec_<base64> secret of "
                              f"at least 24 bytes ({exc})") from None
    return found


class WebhookChannel:
    """POST the notice's JSON payload to the contact's webhook URL, signed with the agency's secret."""

    name: ClassVar[str] = "webhook"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.allow_private = bool(config.get("WEBHOOK_ALLOW_PRIVATE"))
        self._signers = signers(config)
        httpx_log = logging.getLogger("httpx")
        if _HTTPX_FILTER not in httpx_log.filters:
            httpx_log.addFilter(_HTTPX_FILTER)
        ca_file = config.get("WEBHOOK_CA_FILE")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._client = httpx.Client(
            transport=_GuardedTransport(allow_private=self.allow_private, verify=verify),
            timeout=float(config["NOTIFY_SEND_TIMEOUT_S"]),
            follow_redirects=False,
            headers={"User-Agent": f"decision-rights-gateway/{__version__}"},
        )

    def body(self, message: Message) -> bytes:
        """The exact bytes sent and signed: the same for every attempt of the same notification."""
        return json.dumps(message.payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()

    def headers(self, message: Message, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        """Standard Webhooks headers: webhook-id (the notification id), -timestamp and -signature."""
        signer = self._signers.get(message.agency) or self._signers.get("")
        if signer is None:
            raise TemporaryFailure(
                f"no webhook secret is configured for {message.agency!r}: set GATEWAY_WEBHOOK_SECRETS or "
                "GATEWAY_WEBHOOK_DEFAULT_SECRET (webhook notices wait until then)"
            )
        at = (at or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        return {
            "content-type": "application/json",
            "webhook-id": message.id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signer.sign(message.id, at, body.decode()),
        }

    def send(self, message: Message) -> None:
        url = check_url(message.recipient, allow_private=self.allow_private)
        body = self.body(message)
        headers = self.headers(message, body)
        try:
            response = self._client.post(url, content=body, headers=headers)
        except AddressRefused:
            raise
        except httpx.InvalidURL:  # the client's own URL rules (e.g. IDNA): never quote the URL or its host
            raise PermanentFailure("the webhook URL is refused by the HTTP client (invalid host or URL)") from None
        except httpx.HTTPError as exc:  # connect errors, timeouts, protocol errors
            raise TemporaryFailure(scrub(f"webhook {type(exc).__name__}: {exc}", url)) from None
        except (ValueError, UnicodeError) as exc:  # idna and URL errors quote a label of the host: name the kind only
            raise PermanentFailure(f"the webhook URL is refused by the HTTP client ({type(exc).__name__})") from None
        response.close()
        status = response.status_code
        if 200 <= status < 300:
            return
        text = f"webhook answered HTTP {status}"
        if status == 410:
            raise RecipientGone(text + " (Gone): the endpoint is disabled")
        if status in _RETRY_STATUSES or status >= 500 or status < 400:
            raise TemporaryFailure(text, retry_after=_retry_after(response.headers.get("retry-after")))
        raise PermanentFailure(text)

    def close(self) -> None:
        self._client.close()
