"""Development channel: write the notice to the log instead of sending it."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.notifications.channels.base import Message

log = logging.getLogger("gateway.notifications.log")
_TOKEN = re.compile(r"token=[^\s\"'<&]+")


class LogChannel:
    """Log each notice's text for development; route a contact kind here with GATEWAY_NOTIFY_ROUTES.

    Never the recipient, and not the person's capability token either (a credential): the link is logged
    as ``token=<redacted>``.
    """

    name: ClassVar[str] = "log"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def send(self, message: Message) -> None:
        text = _TOKEN.sub("token=<redacted>", message.text)
        log.info("notice %s (%s, %s): %s\n%s", message.id, message.kind, message.language, message.subject, text)

    def close(self) -> None:
        """Nothing to release."""
