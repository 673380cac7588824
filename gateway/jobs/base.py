"""The TaskKind interface every kind of background work implements, its settings and the kinds' registry."""

from __future__ import annotations

import datetime as dt
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flask import Flask

from gateway.errors import ConfigError
from gateway.ids import utcnow
from gateway.jobs.claims import owner_name

Clock = Callable[[], dt.datetime]
# What /metrics and oversight count for every kind: waiting to be claimed, held under a lease, waiting for
# a retry after a failure, done, and dead (given up: never silent, see gateway_jobs_dead).
STATES = ("queued", "claimed", "retrying", "done", "dead")


class UnknownTaskKind(LookupError):
    """A task kind name that no kind registers."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown task kind {name!r}; known kinds: {', '.join(self.known) or 'none'}")


@dataclass(frozen=True)
class KindSettings:
    """How one kind is run: claims, leases, retries and threads per process."""

    batch_size: int  # rows claimed at a time
    lease_s: float  # a claim older than this is taken over by another runner
    poll_interval_s: float  # wait between polls when a batch was not full
    retry_schedule: tuple[float, ...]  # delay before attempt n+1 after n failures; the last one repeats
    max_attempts: int  # after this many failed attempts the job is dead
    retry_jitter: float  # each delay is multiplied by a random factor in [1 - j, 1 + j]
    concurrency: int  # runner threads of this kind per process

    @classmethod
    def from_config(cls, config: Mapping[str, Any], keys: Mapping[str, str]) -> KindSettings:
        """Read and check the settings named by `keys` (field → config key); ConfigError names the bad one."""

        def value(field: str, kind: Callable[[Any], Any], ok: Callable[[Any], bool], rule: str) -> Any:
            key = keys[field]
            raw = config.get(key)
            try:
                converted = kind(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"GATEWAY_{key} must be {rule}, not {raw!r}") from None
            if not ok(converted):
                raise ConfigError(f"GATEWAY_{key} must be {rule}, not {raw!r}")
            return converted

        def schedule(raw: Any) -> tuple[float, ...]:
            if not isinstance(raw, list | tuple) or any(isinstance(s, bool) or not isinstance(s, int | float) for s in raw):
                raise ValueError(raw)
            return tuple(float(s) for s in raw)

        return cls(
            batch_size=value("batch_size", int, lambda v: v >= 1, "an integer of at least 1"),
            lease_s=value("lease_s", float, lambda v: v > 0, "a positive number of seconds"),
            poll_interval_s=value("poll_interval_s", float, lambda v: v > 0, "a positive number of seconds"),
            retry_schedule=value("retry_schedule", schedule, lambda v: bool(v) and min(v) >= 0,
                                 "a non-empty JSON list of seconds, e.g. [5, 300, 1800]"),
            max_attempts=value("max_attempts", int, lambda v: v >= 1, "an integer of at least 1"),
            retry_jitter=value("retry_jitter", float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
            concurrency=value("concurrency", int, lambda v: 1 <= v <= 64, "an integer from 1 to 64"),
        )


class TaskKind(ABC):
    """One kind of background work: claim a batch of its due rows, do them, write the results fenced.

    A kind's jobs are rows written in the transaction of the use case that needs them (never enqueued
    after commit). ``run_once`` claims at most ``settings.batch_size`` of them under a lease and writes
    each result only while the claim is still this runner's; failures are retried on the kind's schedule
    and end dead after ``settings.max_attempts``. Subclasses set ``name`` and ``worker_role`` and
    implement ``read_settings``, ``run_once`` and ``stats``.
    """

    name: ClassVar[str]
    worker_role: ClassVar[str] = "runner"  # how log lines call one runner of this kind

    def __init__(
        self,
        app: Flask,
        *,
        settings: KindSettings | None = None,
        owner: str | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        stop: threading.Event | None = None,
        yield_to: threading.Event | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or self.read_settings(app.config)
        self.owner = owner or owner_name()
        self.clock = clock
        self.rng = rng or random.Random()
        self.stopping = stop or threading.Event()  # set: finish the job in hand, give the rest back
        # In a serving process: set while no request is being handled; the runner waits for it (a little)
        # before each job so that background work happens between requests rather than during them.
        self.yield_to = yield_to
        self.yield_max_s = 0.2

    @classmethod
    @abstractmethod
    def read_settings(cls, config: Mapping[str, Any]) -> KindSettings:
        """This kind's settings from the app config (raises ConfigError naming a bad value)."""

    @abstractmethod
    def run_once(self, now: dt.datetime | None = None) -> int:
        """Claim one batch and work it off; return how many jobs were claimed. `now` fixes the clock."""

    @classmethod
    @abstractmethod
    def stats(cls, now: dt.datetime) -> dict[str, int]:
        """Jobs of this kind by state (every name in STATES), read from the database (app context)."""

    def on_start(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Log what an operator must know before the first batch (a channel not configured, ...)."""

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what the runner holds (connections to channels, ...)."""

    def wait_for_idle(self) -> None:
        if self.yield_to is not None:
            self.yield_to.wait(self.yield_max_s)


class KindRegistry:
    """The task kinds an app runs, by name: explicit, built once by create_app."""

    def __init__(self, kinds: Iterable[type[TaskKind]]) -> None:
        self._kinds: dict[str, type[TaskKind]] = {}
        for kind in kinds:
            if kind.name in self._kinds:
                raise ValueError(f"task kind {kind.name!r} is registered twice")
            self._kinds[kind.name] = kind

    def get(self, name: str) -> type[TaskKind]:
        """The kind called `name`; UnknownTaskKind (listing the known names) for any other name."""
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownTaskKind(name, self._kinds) from None

    def names(self) -> list[str]:
        return list(self._kinds)

    def __iter__(self) -> Any:
        return iter(self._kinds.values())

    def check_config(self, config: Mapping[str, Any]) -> None:
        """Read every kind's settings now, so that a bad value stops the start, not the first batch."""
        for kind in self:
            kind.read_settings(config)
