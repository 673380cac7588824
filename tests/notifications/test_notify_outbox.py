"""The outbox under a controllable clock: retry schedule, dead letters, leases, metrics and statistics."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import re
import threading
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateway.notifications import notification_stats, outbox, requeue
from gateway.notifications.channels.webhook import url_sha256
from gateway.notifications.task import DeliverKind
from tests.conftest import Gateway
from tests.notifications.conftest import SECRET_A, Dispatch, as_utc, row, rows

pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True),
    # The receivers listen on 127.0.0.1 over http://: a lab deployment, whose intake accepts them (issue 11).
    pytest.mark.gateway_config(WEBHOOK_ALLOW_PRIVATE=True),
]
SETTINGS = {"WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_SECRETS": {"Agency A": SECRET_A}}
SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 86400]  # the default, in seconds


def _receiver(server: HTTPServer, status: int, path: str = "/hook") -> list[str]:
    ids: list[str] = []

    def handler(request: Request) -> Response:
        ids.append(request.headers["webhook-id"])
        return Response("", status=status)

    server.expect_request(path, method="POST").respond_with_handler(handler)
    return ids


def _decide(gw: Gateway, url: str) -> str:
    body = copy.deepcopy(gw.sample)
    body["subject"]["contact"] = {"webhook": url}
    resp = gw.decide(body)
    assert resp.status_code == 201
    decision_id: str = resp.get_json()["decision_id"]
    return decision_id


def _metrics(gw: Gateway) -> dict[str, float]:
    text = gw.client.get("/metrics", headers=gw.auth("auditor")).get_data(as_text=True)  # a key: issue 11
    found = {}
    for name, labels, value in re.findall(r"^(gateway_\w+)\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        found[f"{name}{{{labels}}}"] = float(value)
    return found


def test_retry_schedule_then_dead_letter(dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    assert gateway.app.config["NOTIFY_RETRY_SCHEDULE"] == SCHEDULE and gateway.app.config["NOTIFY_MAX_ATTEMPTS"] == 12
    seen = _receiver(httpserver, 503)
    did = _decide(gateway, httpserver.url_for("/hook"))
    sender = dispatch(gateway, **SETTINGS)
    now = as_utc(row(gateway).next_attempt_at)
    delays = []
    for attempt in range(1, 13):
        # Not a moment early: a row waits for its time.
        assert sender.run_once(now=now - dt.timedelta(milliseconds=1)) == 0
        assert sender.run_once(now=now) == 1
        note = row(gateway)
        assert note.attempts == attempt and note.claimed_by is None and note.last_error == "webhook answered HTTP 503"
        if attempt < 12:
            assert note.status == "retrying"
            following = as_utc(note.next_attempt_at)
            delays.append((following - now).total_seconds())
            now = following
            view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
            assert view["notifications"][0]["status"] == "retrying"
            assert as_utc(dt.datetime.fromisoformat(view["notifications"][0]["next_attempt_at"])) == following
    assert note.status == "dead"
    assert len(seen) == 12 and set(seen) == {note.id}
    expected = SCHEDULE + [86400] * 4  # about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then every 24 h
    assert len(delays) == 11
    for got, want in zip(delays, expected, strict=True):
        assert want * 0.9 - 0.001 <= got <= want * 1.1 + 0.001, (got, want)
    assert len({round(d / w, 6) for d, w in zip(delays, expected, strict=False)}) > 1  # jittered, not exact
    assert sender.run_once(now=now + dt.timedelta(days=30)) == 0  # dead rows are never claimed again

    view = gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")).get_json()
    shown = view["notifications"][0]
    assert shown["status"] == "dead" and shown["attempts"] == 12 and shown["next_attempt_at"] is None
    metrics = _metrics(gateway)
    assert metrics['gateway_notifications_dead_total{model="german-credit"}'] == 1
    assert metrics['gateway_notifications_retried_total{model="german-credit"}'] == 11
    assert metrics['gateway_notifications_delivered_total{model="german-credit"}'] == 0
    assert metrics['gateway_notifications{model="german-credit",status="dead"}'] == 1
    with gateway.app.app_context():
        stats = notification_stats("german-credit")
    assert stats["by_status"]["dead"] == 1 and stats["retries"] == 11
    assert stats["by_kind"]["decision_notice"]["dead"] == 1


@pytest.mark.gateway_config(NOTIFY_MAX_ATTEMPTS=3, NOTIFY_RETRY_SCHEDULE=[1])
def test_requeue_sends_dead_notices_again(dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    statuses = iter([500, 500, 500, 200])

    def handler(request: Request) -> Response:
        return Response("", status=next(statuses))

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    _decide(gateway, httpserver.url_for("/hook"))
    sender = dispatch(gateway, **SETTINGS)
    now = dt.datetime.now(dt.UTC)
    for _ in range(3):
        sender.run_once(now=now)
        now += dt.timedelta(seconds=2)
    assert row(gateway).status == "dead"
    with gateway.app.app_context():
        assert requeue(now=now) == 1
    assert row(gateway).status == "pending" and row(gateway).attempts == 0
    sender.run_once(now=now)
    assert row(gateway).status == "delivered"


def test_the_deliver_kind_retries_on_its_own_settings(gateway: Gateway, httpserver: HTTPServer) -> None:
    """The kind's KindSettings (not a second read of the config) decide the retry delay and the dead letter."""
    gateway.app.config.update(SETTINGS)
    assert gateway.app.config["NOTIFY_MAX_ATTEMPTS"] == 12 and gateway.app.config["NOTIFY_RETRY_SCHEDULE"] == SCHEDULE
    seen = _receiver(httpserver, 503)
    _decide(gateway, httpserver.url_for("/hook"))
    settings = dataclasses.replace(DeliverKind.read_settings(gateway.app.config), retry_schedule=(7.0,),
                                   max_attempts=2, retry_jitter=0.0)
    kind = DeliverKind(gateway.app, settings=settings, owner="deliver-kind")
    try:
        now = as_utc(row(gateway).next_attempt_at)
        assert kind.run_once(now) == 1
        note = row(gateway)
        assert note.status == "retrying" and as_utc(note.next_attempt_at) == now + dt.timedelta(seconds=7)
        assert kind.run_once(now + dt.timedelta(seconds=7)) == 1
        assert row(gateway).status == "dead" and row(gateway).attempts == 2 and len(seen) == 2
    finally:
        kind.close()


def test_a_claim_expires_and_another_dispatcher_takes_over(dispatch: Dispatch, gateway: Gateway,
                                                           httpserver: HTTPServer) -> None:
    seen = _receiver(httpserver, 200)
    _decide(gateway, httpserver.url_for("/hook"))
    now = as_utc(row(gateway).next_attempt_at)
    with gateway.app.app_context():
        (crashed,) = outbox.claim("crashed-dispatcher", now=now, limit=10, lease_s=120)  # then it "died"
    note = row(gateway)
    assert note.claimed_by == "crashed-dispatcher" and as_utc(note.lease_expires_at) == now + dt.timedelta(seconds=120)
    other = dispatch(gateway, name="other", **SETTINGS)
    assert other.run_once(now=now + dt.timedelta(seconds=60)) == 0  # still held
    assert other.run_once(now=now + dt.timedelta(seconds=121)) == 1  # lease over: taken over and delivered
    assert row(gateway).status == "delivered" and seen == [crashed.id]
    with gateway.app.app_context():  # the first dispatcher comes back: its claim is gone, it can't write
        assert outbox.mark_delivered(crashed, "crashed-dispatcher", now=now) is False
        assert outbox.record_failure(crashed, "crashed-dispatcher", now=now, error="x", permanent=True,
                                     retries=other.retries) is None
    assert row(gateway).status == "delivered"


def test_two_dispatchers_never_claim_the_same_row(gateway: Gateway) -> None:
    for _ in range(6):
        assert gateway.decide().status_code == 201
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    with gateway.app.app_context():
        a = outbox.claim("a", now=now, limit=4, lease_s=60)
        b = outbox.claim("b", now=now, limit=4, lease_s=60)
        c = outbox.claim("c", now=now, limit=4, lease_s=60)
    assert len(a) == 4 and len(b) == 2 and c == []
    assert not {j.id for j in a} & {j.id for j in b}
    assert sorted(n.claimed_by for n in rows(gateway)) == ["a"] * 4 + ["b"] * 2


def test_two_dispatchers_draining_in_parallel_deliver_each_notice_once(dispatch: Dispatch, gateway: Gateway,
                                                                       httpserver: HTTPServer) -> None:
    """Batches claimed, read, sent and recorded together by two dispatchers at once: nothing twice, nothing lost."""
    arrived = _receiver(httpserver, 200)
    decided = [_decide(gateway, httpserver.url_for("/hook")) for _ in range(24)]
    senders = [dispatch(gateway, name=f"dispatcher-{i}", NOTIFY_BATCH_SIZE=4, **SETTINGS) for i in range(2)]
    start = threading.Barrier(2)
    claimed: dict[str, int] = {}

    def drain(sender: Any) -> None:
        start.wait()
        total = 0
        while (n := sender.run_once()) > 0:
            total += n
        claimed[sender.name] = total

    threads = [threading.Thread(target=drain, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    notes = rows(gateway)
    assert sorted(arrived) == sorted(n.id for n in notes) and len(notes) == len(decided)
    assert {n.status for n in notes} == {"delivered"} and {n.attempts for n in notes} == {1}
    assert sum(claimed.values()) == len(decided) and all(claimed.values()), claimed  # both took part


def test_stopping_gives_claimed_rows_back_at_once(dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    _receiver(httpserver, 200)
    for _ in range(3):
        _decide(gateway, httpserver.url_for("/hook"))
    sender = dispatch(gateway, **SETTINGS)
    sender.stopping.set()  # as SIGTERM does: nothing new is started
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert sender.run_once(now=now) == 3
    assert {(n.status, n.claimed_by, n.lease_expires_at) for n in rows(gateway)} == {("pending", None, None)}


def test_review_kind_without_its_review_is_dead_not_stuck(dispatch: Dispatch, gateway: Gateway) -> None:
    from gateway.db import write_transaction
    from gateway.extensions import db
    from gateway.models import Notification

    did = gateway.decide().get_json()["decision_id"]
    with gateway.app.app_context(), write_transaction():
        db.session.execute(Notification.__table__.update().values(status="delivered"))
        db.session.add(Notification(id="ntf_orphan", decision_id=did, kind="review_outcome", channel="email",
                                    language="ru", status="pending", attempts=0, created_at=dt.datetime.now(dt.UTC),
                                    next_attempt_at=dt.datetime.now(dt.UTC), context={"review_id": "rev_missing"}))
    dispatch(gateway, NOTIFY_ROUTES={"email": "log"}).run_once(now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    orphan = next(n for n in rows(gateway) if n.id == "ntf_orphan")
    assert orphan.status == "dead" and "context.review_id" in orphan.last_error


def test_statistics_and_metrics_count_per_model_and_overdue_rows(dispatch: Dispatch, gateway: Gateway,
                                                                 httpserver: HTTPServer) -> None:
    _receiver(httpserver, 200)
    for _ in range(2):
        _decide(gateway, httpserver.url_for("/hook"))
    assert gateway.decide().status_code == 201  # an email notice that stays pending
    with gateway.app.app_context():
        stats: dict[str, Any] = notification_stats(now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    assert stats["total"] == 3 and stats["by_status"]["pending"] == 3 and stats["overdue"] == 3
    dispatch(gateway, **SETTINGS, NOTIFY_ROUTES={"email": "log"}).run_once()
    with gateway.app.app_context():
        stats = notification_stats()
        other = notification_stats("no-such-model")
    assert stats["by_model"]["german-credit"]["delivered"] == 3 and stats["overdue"] == 0
    assert other["total"] == 0
    metrics = _metrics(gateway)
    assert metrics['gateway_notifications_delivered_total{model="german-credit"}'] == 3
    assert metrics['gateway_notifications_overdue{model="german-credit"}'] == 0
    assert gateway.client.get("/metrics", headers=gateway.auth("auditor")).headers["Content-Type"].startswith("text/plain")


def test_the_in_process_thread_delivers_and_yields_to_requests(gateway: Gateway, httpserver: HTTPServer) -> None:
    import time

    from gateway.notifications import start_thread

    seen = _receiver(httpserver, 200)
    gateway.app.config.update(SETTINGS, NOTIFY_POLL_INTERVAL_S=0.05)
    thread = start_thread(gateway.app)
    assert thread is not None
    try:
        gate = gateway.app.wsgi_app
        assert gate.idle.is_set()  # type: ignore[attr-defined]
        did = _decide(gateway, httpserver.url_for("/hook"))  # through the gate
        assert gate.idle.is_set()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while row(gateway).status != "delivered":
            assert time.monotonic() < deadline, row(gateway)
            time.sleep(0.05)
        assert len(seen) == 1 and row(gateway).decision_id == did
    finally:
        assert thread.stop(timeout=10)


class _BusyGate(threading.Event):
    """A request gate whose worker is never idle; counts how often a dispatcher waited for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return False


def test_a_busy_worker_delays_only_fresh_notices(dispatch: Dispatch, gateway: Gateway, httpserver: HTTPServer) -> None:
    seen = _receiver(httpserver, 200)
    dispatcher = dispatch(gateway, **SETTINGS)
    gate = _BusyGate()
    dispatcher.yield_to, dispatcher.yield_max_s = gate, 0.0
    for _ in range(2):
        _decide(gateway, httpserver.url_for("/hook"))
    created = max(as_utc(r.next_attempt_at) for r in rows(gateway))
    assert dispatcher.run_once(now=created + dt.timedelta(seconds=0.5)) == 2  # fresh: each waits for a gap first
    assert gate.waits == 2 and len(seen) == 2
    for _ in range(3):
        _decide(gateway, httpserver.url_for("/hook"))
    waiting = [r for r in rows(gateway) if r.status != "delivered"]
    late = max(as_utc(r.next_attempt_at) for r in waiting) + dt.timedelta(seconds=dispatcher.yield_grace_s + 0.1)
    assert dispatcher.run_once(now=late) == 3  # older than the grace: sent at once, however busy the worker
    assert gate.waits == 2 and len(seen) == 5
    assert {r.status for r in rows(gateway)} == {"delivered"}


@pytest.mark.gateway_config(NOTIFY_DISPATCHER_THREAD=False)
def test_the_thread_can_be_turned_off(gateway: Gateway) -> None:
    from gateway.notifications import start_thread

    wsgi_app = gateway.app.wsgi_app
    assert start_thread(gateway.app) is None and gateway.app.wsgi_app == wsgi_app  # not wrapped


def test_one_batch_records_each_notice_with_its_own_outcome(dispatch: Dispatch, gateway: Gateway,
                                                           httpserver: HTTPServer) -> None:
    """A batch is claimed, read and recorded together, but every row keeps its own outcome: the receivers
    that failed don't mark the ones that took their notice, and the failed ones follow the schedule alone."""
    answers = {"/ok": 200, "/busy": 503, "/refused": 400, "/gone": 410}
    seen: dict[str, list[str]] = {}
    for path, status in answers.items():
        seen[path] = _receiver(httpserver, status, path)
    paths = ["/ok", "/busy", "/ok", "/refused", "/gone", "/ok"]
    decided = [_decide(gateway, httpserver.url_for(path)) for path in paths]
    by_decision = {n.decision_id: n.id for n in rows(gateway)}
    sender = dispatch(gateway, **SETTINGS)
    now = max(as_utc(n.next_attempt_at) for n in rows(gateway))
    assert sender.batch_size >= len(paths)
    assert sender.run_once(now=now) == len(paths)  # one claim, one batch

    notes = {n.decision_id: n for n in rows(gateway)}
    outcome: dict[str, list[tuple[str, int, str | None]]] = {path: [] for path in answers}
    for path, did in zip(paths, decided, strict=True):
        note = notes[did]
        assert note.claimed_by is None and note.lease_expires_at is None and note.attempts == 1
        outcome[path].append((note.status, note.attempts, note.last_error))
    assert outcome["/ok"] == [("delivered", 1, None)] * 3
    assert outcome["/busy"] == [("retrying", 1, "webhook answered HTTP 503")]
    assert [s for s, _, _ in outcome["/refused"]] == ["dead"] and [s for s, _, _ in outcome["/gone"]] == ["dead"]
    busy = notes[decided[1]]
    assert 5 * 0.9 <= (as_utc(busy.next_attempt_at) - now).total_seconds() <= 5 * 1.1  # its own first retry
    for did in (decided[0], decided[2], decided[5]):
        assert as_utc(notes[did].delivered_at) == now
    with gateway.app.app_context():  # only the receiver that answered 410 is disabled
        assert outbox.disabled_endpoint(url_sha256(httpserver.url_for("/gone"))) is not None
        assert outbox.disabled_endpoint(url_sha256(httpserver.url_for("/busy"))) is None
    assert {p: sorted(ids) for p, ids in seen.items()} == {
        p: sorted(by_decision[d] for q, d in zip(paths, decided, strict=True) if q == p) for p in answers}

    # The retried notice goes again alone, with its id, and nothing else is sent a second time.
    assert sender.run_once(now=as_utc(busy.next_attempt_at)) == 1
    assert seen["/busy"] == [busy.id, busy.id] and len(seen["/ok"]) == 3

