"""The dispatcher: claim due outbox rows, send each through its channel, record the result.

One loop: ``Dispatcher.run_once(now=...)`` (tests, with a controllable clock). ``gateway serve``'s thread
and ``gateway worker`` run it as the ``deliver`` task kind of the jobs engine (``task.py``,
gateway/jobs/runner.py; SIGTERM finishes the row in hand, gives the rest back, exits); ``DispatcherThread``
and ``run_worker`` run it alone. The decision path never waits for any of them: they poll the outbox.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from gateway.extensions import db
from gateway.ids import utcnow
from gateway.notifications import outbox, render
from gateway.notifications.channels import (
    Channel,
    PermanentFailure,
    RecipientGone,
    TemporaryFailure,
    UnknownChannel,
    make_channel,
)
from gateway.notifications.channels.base import redact, scrub
from gateway.notifications.channels.webhook import url_sha256

log = logging.getLogger("gateway.notifications")

Clock = Callable[[], dt.datetime]


def dispatcher_name() -> str:
    """A name unique to this dispatcher, written into the rows it claims."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


class Dispatcher:
    """Deliver due notifications of one app's database."""

    def __init__(
        self,
        app: Flask,
        *,
        name: str | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        channels: Mapping[str, Channel] | None = None,
        batch_size: int | None = None,
        lease_s: float | None = None,
        poll_interval_s: float | None = None,
        retries: outbox.Retries | None = None,
        yield_to: threading.Event | None = None,
    ) -> None:
        cfg = app.config
        self.app = app
        self.name = name or dispatcher_name()
        self.clock = clock
        self.rng = rng or random.Random()
        self.batch_size = int(batch_size or cfg["NOTIFY_BATCH_SIZE"])
        self.lease_s = float(lease_s or cfg["NOTIFY_LEASE_S"])
        self.poll_interval_s = float(poll_interval_s if poll_interval_s is not None else cfg["NOTIFY_POLL_INTERVAL_S"])
        self.send_timeout_s = float(cfg["NOTIFY_SEND_TIMEOUT_S"])
        # Read once here, like the batch size and lease: the deliver kind passes its own settings.
        self.retries = retries or outbox.Retries(tuple(float(s) for s in cfg["NOTIFY_RETRY_SCHEDULE"]),
                                                 int(cfg["NOTIFY_MAX_ATTEMPTS"]), float(cfg["NOTIFY_RETRY_JITTER"]))
        self.routes: dict[str, str] = dict(cfg.get("NOTIFY_ROUTES") or {})
        self._channels: dict[str, Channel] = dict(channels or {})
        self.flush_interval_s = 0.5  # results are written at least this often while a batch is being sent
        # In a serving process: set while no request is being handled. The dispatcher waits for it (a little)
        # before each row, so that notices are rendered and recorded between requests rather than during them.
        self.yield_to = yield_to
        self.yield_max_s = 0.2
        # ... but only for notices younger than this: under sustained load the worker is rarely idle, and a
        # notice that has waited this long is sent at once (the backlog cannot grow without bound).
        self.yield_grace_s = 2.0
        self.stopping = threading.Event()  # set: finish the row in hand, give the rest back

    def channel(self, contact_kind: str) -> Channel:
        """The channel that delivers to a contact of this kind ("email", "webhook"), built on first use."""
        name = self.routes.get(contact_kind, contact_kind)
        found = self._channels.get(name)
        if found is None:
            found = self._channels[name] = make_channel(name, self.app.config)
        return found

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Claim one batch and deliver it; return how many rows were claimed. `now` fixes the clock."""
        with self.app.app_context():
            started = now or self.clock()
            jobs = outbox.claim(self.name, now=started, limit=self.batch_size, lease_s=self.lease_s)
            try:
                prefetched: render.Prefetched | None = render.Prefetched.of(jobs)
            except SQLAlchemyError:  # each row then reads on its own, and records what fails
                db.session.rollback()
                log.warning("dispatcher %s: reading the batch's decisions failed; reading them row by row", self.name,
                            exc_info=True)
                prefetched = None
            # Don't start a send that could outlive the claim: another dispatcher would take the row over.
            margin = min(self.send_timeout_s, self.lease_s / 2)
            deadline = started + dt.timedelta(seconds=self.lease_s - margin)
            results: list[outbox.Outcome] = []
            flushed = time.monotonic()
            for i, job in enumerate(jobs):
                if self.stopping.is_set() or (i > 0 and now is None and self.clock() >= deadline):
                    self._record(results)
                    outbox.release(jobs[i:], self.name)
                    return len(jobs)
                if self.yield_to is not None and self._fresh(job, started):
                    self.yield_to.wait(self.yield_max_s)
                results.append(self.attempt(job, now, prefetched))
                # Results are written together (one short transaction), but never held for long: a dispatcher
                # killed now re-sends at most what it sent since the last write.
                if time.monotonic() - flushed >= self.flush_interval_s:
                    self._record(results)
                    results, flushed = [], time.monotonic()
            self._record(results)
            return len(jobs)

    def _fresh(self, job: render.Job, at: dt.datetime) -> bool:
        """Whether `job` was enqueued less than ``yield_grace_s`` before `at` (it may still wait for a gap)."""
        created = job.created_at if job.created_at.tzinfo is not None else job.created_at.replace(tzinfo=dt.UTC)
        return (at - created).total_seconds() < self.yield_grace_s

    def attempt(self, job: render.Job, now: dt.datetime | None = None,
                prefetched: render.Prefetched | None = None) -> outbox.Outcome:
        """Render and send one claimed row; return what happened (nothing is written here)."""
        message = None
        try:
            message = render.message_for(job, prefetched)
            if job.channel == "webhook":
                disabled = outbox.disabled_endpoint(url_sha256(message.recipient))
                if disabled is not None:
                    raise PermanentFailure(f"the webhook endpoint was disabled on {disabled.disabled_at:%Y-%m-%d}: "
                                           f"{disabled.reason}")
            if db.session().in_transaction():  # a batch read up front usually leaves none open: no commit to pay
                db.session.commit()  # end the read transaction before the network
            self.channel(job.channel).send(message)
        except RecipientGone as exc:
            assert message is not None
            return self._failed(job, now, exc.message, permanent=True, gone_url_sha256=url_sha256(message.recipient))
        except PermanentFailure as exc:
            return self._failed(job, now, exc.message, permanent=True)
        except TemporaryFailure as exc:
            return self._failed(job, now, exc.message, retry_after=exc.retry_after)
        except UnknownChannel as exc:  # a configuration mistake: wait for it to be fixed
            return self._failed(job, now, str(exc))
        except Exception as exc:  # a bug or an unavailable database: recorded on the row and retried, not lost
            recipient = message.recipient if message else ""
            # The exception's text (and a chained one's) may quote the address: the traceback is logged with
            # every part of it removed, never through log.exception, which would print the raw text.
            trace = redact("".join(traceback.format_exception(exc)), recipient)
            log.error("notification %s (%s): unexpected error\n%s", job.id, job.kind, trace.rstrip())
            return self._failed(job, now, scrub(f"{type(exc).__name__}: {exc}", recipient))
        return outbox.Outcome(job, now or self.clock())

    def _failed(self, job: render.Job, now: dt.datetime | None, error: str, *, permanent: bool = False,
                retry_after: float | None = None, gone_url_sha256: str | None = None) -> outbox.Outcome:
        db.session.rollback()
        return outbox.Outcome(job, now or self.clock(), error, permanent, retry_after, gone_url_sha256)

    def _record(self, results: list[outbox.Outcome]) -> None:
        for result, status in zip(results, outbox.record(results, self.name, retries=self.retries, rng=self.rng), strict=True):
            job = result.job
            if status is None:
                log.warning("notification %s: the claim passed to another dispatcher before the result was written "
                            "(it will be sent again, with the same id)", job.id)
            elif status == "dead":
                log.error("notification %s (%s, %s) is dead after %d attempt(s): %s", job.id, job.kind, job.channel,
                          job.attempts + 1, result.error)
            elif status == "retrying":
                log.warning("notification %s (%s, %s) attempt %d failed, will retry: %s", job.id, job.kind,
                            job.channel, job.attempts + 1, result.error)

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Deliver until `stop` is set: poll every poll interval, at once again after a full batch."""
        if stop is not None:
            self.stopping = stop
        log.info("dispatcher %s started (batch %d, lease %.0f s)", self.name, self.batch_size, self.lease_s)
        if not self.app.config.get("SMTP_HOST") and self.routes.get("email", "email") == "email":
            log.warning("GATEWAY_SMTP_HOST is not set: email notices wait (retrying) until it is; "
                        "GATEWAY_NOTIFY_ROUTES='{\"email\": \"log\"}' writes them to the log instead")
        errors = 0
        try:
            while not self.stopping.is_set():
                try:
                    claimed = self.run_once()
                    errors = 0
                except Exception:  # the database went away: keep trying, slower
                    errors += 1
                    log.exception("dispatcher %s: a batch failed (%d in a row)", self.name, errors)
                    claimed = 0
                if claimed < self.batch_size:
                    self.stopping.wait(self.poll_interval_s * min(2 ** errors, 60))
        finally:
            self.close()
            log.info("dispatcher %s stopped", self.name)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


class DispatcherThread:
    """A dispatcher in a daemon thread of the serving process."""

    def __init__(self, app: Flask, **options: Any) -> None:
        self.dispatcher = Dispatcher(app, **options)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.dispatcher.run_forever, args=(self.stop_event,),
                                       name="gateway-dispatcher", daemon=True)

    def start(self) -> DispatcherThread:
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to finish the row in hand; return True when it ended within `timeout`."""
        self.stop_event.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def ensure_logging() -> None:
    """Show the dispatcher's INFO lines when nothing else configured logging (gunicorn, `gateway worker`)."""
    logger = logging.getLogger("gateway.notifications")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # Flask's handler on "gateway" would print every line a second time


def run_worker(app: Flask, **options: Any) -> None:
    """Run a dispatcher in this process until SIGTERM or SIGINT; the row in hand is finished first."""
    ensure_logging()
    dispatcher = Dispatcher(app, **options)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("dispatcher %s: %s received, finishing the row in hand", dispatcher.name, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    dispatcher.run_forever(stop)
