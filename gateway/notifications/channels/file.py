"""Development channel: write each notice as an email file (.eml) into a folder instead of sending it.

Like Django's file-based email backend: `make run` has no mail server, and the person's link in a notice
is a credential, so it must not go to a log. The file holds exactly what the email would (text and HTML,
the personal link included), readable by the owner only; the log says where it is, never what it says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.notifications.channels.base import Message, TemporaryFailure
from gateway.notifications.channels.email import EmailChannel

log = logging.getLogger("gateway.notifications.file")


class FileChannel:
    """Write notices to GATEWAY_NOTIFY_FILE_DIR as `<notification id>.eml` (the same file on a re-send)."""

    name: ClassVar[str] = "file"

    def __init__(self, config: Mapping[str, Any]) -> None:
        folder = config.get("NOTIFY_FILE_DIR")
        self.folder = Path(folder) if folder else None
        self.email = EmailChannel(config)  # builds the very message an email notice would carry

    def send(self, message: Message) -> None:
        if self.folder is None:
            raise TemporaryFailure("GATEWAY_NOTIFY_FILE_DIR is not set (the folder file notices are written to)")
        try:
            path = self.folder / f"{message.id}.eml"
            part = self.folder / f"{message.id}.part"
            try:
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except FileNotFoundError:  # the folder is made on the first notice (or again, if it was removed)
                self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.email.build_bytes(message))
            os.replace(part, path)  # a reader never sees half a notice
        except OSError as exc:
            raise TemporaryFailure(f"the notice could not be written to GATEWAY_NOTIFY_FILE_DIR: {exc.strerror}") from None
        log.info("notice %s (%s, %s) written to %s", message.id, message.kind, message.language, path)

    def close(self) -> None:
        """Nothing to release."""
