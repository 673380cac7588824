"""What every delivery channel is: a Message in, None out, or a DeliveryError saying whether to retry."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import urlsplit

import idna


@dataclass(frozen=True)
class Message:
    """One rendered notice, ready for any channel. `id` is the notification id: every attempt to deliver
    the same notification carries it (webhook-id, Message-ID), so receivers can de-duplicate on it."""

    id: str
    kind: str
    language: str
    recipient: str = field(repr=False)  # an email address or a webhook URL: personal data, never logged
    agency: str  # the body of the API client that made the decision (selects the webhook secret)
    subject: str
    text: str
    html: str
    payload: dict[str, Any]  # the JSON webhook body: the same content as structured fields + the text
    created_at: dt.datetime


class DeliveryError(Exception):
    """The message was not delivered."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TemporaryFailure(DeliveryError):
    """Delivery failed in a way that may pass (network, 5xx, 4xx SMTP replies, rate limits): retry later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # the receiver's own Retry-After, in seconds, when it gave one


class PermanentFailure(DeliveryError):
    """Delivery can never succeed as addressed (refused target, 4xx webhook reply, 5xx SMTP reply)."""


class RecipientGone(PermanentFailure):
    """The receiver said the address is gone for good (HTTP 410): stop sending anything to it."""


@runtime_checkable
class Channel(Protocol):
    """A way to deliver a Message. Channels do I/O only: the dispatcher records the outcome."""

    name: ClassVar[str]

    def __init__(self, config: Mapping[str, Any]) -> None: ...

    def send(self, message: Message) -> None:
        """Deliver `message` or raise TemporaryFailure / PermanentFailure (nothing else)."""

    def close(self) -> None:
        """Release connections."""


def _host_forms(host: str) -> set[str]:
    """A host as written, lower-cased, in IDNA (ASCII) and in Unicode form, and its labels beyond the TLD."""
    forms = {host, host.lower()}
    with contextlib.suppress(idna.IDNAError, UnicodeError, ValueError):
        forms.add(idna.encode(host, uts46=True).decode("ascii"))
    with contextlib.suppress(idna.IDNAError, UnicodeError, ValueError):
        forms.add(str(idna.decode(host)))
    for form in list(forms):
        labels = form.split(".")
        forms.update(label for label in labels[:-1] if label)  # an error may quote one label of it
        forms.update(".".join(labels[i:]) for i in range(1, len(labels) - 1))
    return forms


def address_parts(secret: str) -> set[str]:
    """Every part of a contact address an error text could quote: the whole, the host or domain in each form,
    the local part, the path and query of a URL."""
    parts = {secret}
    if "://" in secret:
        try:
            url = urlsplit(secret)
            host = url.hostname
        except ValueError:
            url, host = None, None
        if url is not None:
            parts.update({url.netloc, url.query, url.path if len(url.path) > 1 else ""})
            parts.update(segment for segment in url.path.split("/") if len(segment) > 2)
        if host:
            parts.update(_host_forms(host))
    elif "@" in secret:
        local, _, domain = secret.rpartition("@")
        parts.add(local)
        parts.update(_host_forms(domain))
    return {p for p in parts if len(p) >= 3 or (p and not p.isascii())}


def scrub(text: str, *secrets: str) -> str:
    """Remove personal data (the recipient's address, or any part of it in any form) from an error text
    before it is stored or logged."""
    return redact(text, *secrets)[:500]


def redact(text: str, *secrets: str) -> str:
    """`text` with every part of the addresses `secrets`, in any form, replaced (any length: tracebacks)."""
    found: set[str] = set()
    for secret in secrets:
        if secret:
            found |= address_parts(secret)
    for part in sorted(found, key=len, reverse=True):  # the whole before its parts
        text = re.sub(re.escape(part), "<recipient>", text, flags=re.IGNORECASE)
        escaped = part.encode("unicode_escape").decode("ascii")  # repr() of a non-ASCII host
        if escaped != part:
            text = text.replace(escaped, "<recipient>")
    return text
