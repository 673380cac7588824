"""The engine's claim primitives: a runner's owner name, claiming and releasing rows, retry delays.

The SQL of a claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) lives in
``gateway.db`` and the retry schedule's rule in ``gateway.notifications.outbox``: the outbox, a layer
below the engine, claims and retries with the very same code.
"""

from __future__ import annotations

import os
import secrets
import socket

from gateway.db import claim_rows as claim
from gateway.db import release_rows as release
from gateway.notifications.outbox import retry_delay

__all__ = ["claim", "owner_name", "release", "retry_delay"]


def owner_name() -> str:
    """A name unique to one runner, written into the rows it claims (the fence of every later write)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
