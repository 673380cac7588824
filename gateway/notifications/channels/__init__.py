"""Delivery channels: one small interface (base.Channel), an explicit registry, one conformance test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.notifications.channels.base import (
    Channel,
    DeliveryError,
    Message,
    PermanentFailure,
    RecipientGone,
    TemporaryFailure,
)
from gateway.notifications.channels.email import EmailChannel
from gateway.notifications.channels.file import FileChannel
from gateway.notifications.channels.log import LogChannel
from gateway.notifications.channels.webhook import WebhookChannel

CHANNELS: dict[str, type[Channel]] = {
    EmailChannel.name: EmailChannel,
    WebhookChannel.name: WebhookChannel,
    LogChannel.name: LogChannel,
    FileChannel.name: FileChannel,
}


class UnknownChannel(LookupError):
    """No channel of that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown notification channel {name!r}; known channels: {', '.join(sorted(CHANNELS))}")
        self.name = name


def make_channel(name: str, config: Mapping[str, Any]) -> Channel:
    """Build the channel registered under `name` from the app's configuration."""
    try:
        cls = CHANNELS[name]
    except KeyError:
        raise UnknownChannel(name) from None
    return cls(config)


__all__ = [
    "CHANNELS",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "FileChannel",
    "LogChannel",
    "Message",
    "PermanentFailure",
    "RecipientGone",
    "TemporaryFailure",
    "UnknownChannel",
    "WebhookChannel",
    "make_channel",
]
