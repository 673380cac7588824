"""What every delivery channel is: a Message in, None out, or a DeliveryError saying whether to retry."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable


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


def scrub(text: str, *secrets: str) -> str:
    """Remove personal data (the recipient's address) from an error text before it is stored or logged."""
    for secret in secrets:
        if secret:
            text = re.sub(re.escape(secret), "<recipient>", text, flags=re.IGNORECASE)
    return text[:500]
