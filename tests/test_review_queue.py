"""The review queue under concurrency and as a state machine (service level, real databases)."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway import reviews
from gateway.auth import Principal, authenticate, create_key
from gateway.db import write_transaction
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.ids import new_id
from gateway.models import Decision, ReviewRequest
from gateway.presenters.review import summary
from tests.conftest import Gateway

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def principal(gw: Gateway, who: str) -> Principal:
    with gw.app.app_context():
        return authenticate(db.session, f"Bearer {gw.keys[who]}")


def bulk_cases(gw: Gateway, n: int) -> list[str]:
    """n decisions with one queued review each, written directly (setup data for the race)."""
    did = gw.decide().get_json()["decision_id"]
    now = dt.datetime.now(dt.UTC)
    with gw.app.app_context():
        template = db.session.get(Decision, did)
        assert template is not None
        columns = {c.name: getattr(template, c.name) for c in Decision.__table__.columns}
        decisions, cases = [], []
        for i in range(n):
            decisions.append(columns | {"id": f"dec_bulk{i:05d}"})
            cases.append({"id": f"rev_bulk{i:05d}", "decision_id": f"dec_bulk{i:05d}", "status": "queued",
                          "point_of_view": "…", "contest_grounds": ["other"], "language": "kk", "requested_by": "t",
                          "requested_at": now, "due_at": now + dt.timedelta(minutes=i % 97), "fencing_token": 0})
        db.session.execute(sa.insert(Decision.__table__), decisions)
        db.session.execute(sa.insert(ReviewRequest.__table__), cases)
        db.session.commit()
    return [c["id"] for c in cases]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_eight_reviewers_racing_for_a_thousand_cases_each_claim_a_case_once(gateway: Gateway) -> None:
    ids = bulk_cases(gateway, 1000)
    with gateway.app.app_context(), write_transaction():
        names = [f"racer-{i}" for i in range(8)]
        for name in names:
            _, gateway.keys[name] = create_key(name=name, role="reviewer", body="Review office")
    claimed: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work(name: str) -> None:
        try:
            who = principal(gateway, name)
            start.wait()
            while True:
                with gateway.app.app_context():
                    review = reviews.claim(who, lease_seconds=3600)
                    if review is None:
                        return
                    with lock:
                        claimed.append((review.id, name))
        except BaseException as exc:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    counts = Counter(rid for rid, _ in claimed)
    assert sorted(counts) == sorted(ids)  # none lost
    assert max(counts.values()) == 1  # none claimed twice while its lease ran
    assert len({name for _, name in claimed}) >= 2  # the race was real
    with gateway.app.app_context():
        states = db.session.execute(sa.text("SELECT status, fencing_token, count(*) FROM reviews "
                                            "WHERE id LIKE 'rev_bulk%' GROUP BY status, fencing_token")).all()
    assert [tuple(s) for s in states] == [("claimed", 1, 1000)]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_holder_paused_past_its_lease_cannot_act(gateway: Gateway) -> None:
    with gateway.app.app_context(), write_transaction():
        _, gateway.keys["late"] = create_key(name="late-reviewer", role="reviewer", body="Review office")
    did = gateway.decide().get_json()["decision_id"]
    t0 = dt.datetime.now(dt.UTC)
    agency, first, second = (principal(gateway, w) for w in ("agency_a", "reviewer", "late"))
    with gateway.app.app_context():
        rid = reviews.request_review(agency, did, point_of_view="…", contest_grounds=["other"], corrected_data=None,
                                     language=None, now=t0).id
        token = reviews.claim(first, lease_seconds=60, now=t0).fencing_token
        assert reviews.claim(second, now=t0 + dt.timedelta(seconds=59)) is None  # lease still running
        taken = reviews.claim(second, lease_seconds=60, now=t0 + dt.timedelta(seconds=61))
        assert taken is not None and taken.fencing_token == token + 1
        for act in (lambda: reviews.renew(first, rid, token, now=t0 + dt.timedelta(seconds=62)),
                    lambda: reviews.resolve(first, rid, token, outcome="upheld", new_outcome=None,
                                            reasons={"kk": "…"}, point_of_view_considered=True,
                                            now=t0 + dt.timedelta(seconds=62))):
            with pytest.raises(reviews.StaleLease):
                act()
        assert db.session.get(ReviewRequest, rid).status == "claimed"  # type: ignore[union-attr]


class ReviewMachine(RuleBasedStateMachine):
    """Random sequences of review actions; the invariants hold after every step."""

    gateway: Gateway

    def __init__(self) -> None:
        super().__init__()
        gw = type(self).gateway
        self.ctx = gw.app.app_context()
        self.ctx.push()
        db.session.execute(sa.text("DELETE FROM log_leaves WHERE kind LIKE 'review:%'"))
        db.session.execute(sa.text("DELETE FROM notifications WHERE kind LIKE 'review_%'"))
        db.session.execute(sa.text("DELETE FROM reviews"))
        db.session.execute(sa.text("UPDATE decisions SET effective_outcome = outcome, effective_review_id = NULL"))
        db.session.commit()
        self.now = dt.datetime.now(dt.UTC)
        self.agency = authenticate(db.session, f"Bearer {gw.keys['agency_a']}")
        self.reviewers = [authenticate(db.session, f"Bearer {gw.keys[k]}") for k in ("reviewer", "reviewer_2")]
        self.decisions = [(d, o) for d, o in db.session.execute(sa.text("SELECT id, outcome FROM decisions ORDER BY id")).all()]
        self.holder: dict[str, tuple[int, int, dt.datetime]] = {}  # review -> (reviewer index, token, lease end)
        self.resolved: dict[str, dict[str, Any]] = {}
        self.expected_effective = {d: o for d, o in self.decisions}

    def teardown(self) -> None:
        db.session.rollback()
        self.ctx.pop()

    def _reviews(self) -> list[ReviewRequest]:
        db.session.expire_all()
        return list(db.session.execute(sa.select(ReviewRequest).order_by(ReviewRequest.id)).scalars())

    def _open_ids(self) -> list[str]:
        return [r.id for r in self._reviews() if r.status in ("queued", "claimed")]

    @rule(d=st.integers(0, 2))
    def request(self, d: int) -> None:
        did = self.decisions[d][0]
        try:
            reviews.request_review(self.agency, did, point_of_view="…", contest_grounds=["other"], corrected_data=None,
                                   language=None, now=self.now)
        except GatewayError as exc:
            assert exc.code == "review_open"

    @rule(r=st.integers(0, 1), lease=st.integers(30, 300))
    def claim(self, r: int, lease: int) -> None:
        review = reviews.claim(self.reviewers[r], lease_seconds=lease, now=self.now)
        if review is not None:
            self.holder[review.id] = (r, review.fencing_token, self.now + dt.timedelta(seconds=lease))

    @precondition(lambda self: bool(self.holder))
    @rule(data=st.data(), stale=st.booleans())
    def renew(self, data: st.DataObject, stale: bool) -> None:
        rid = data.draw(st.sampled_from(sorted(self.holder)))
        r, token, until = self.holder[rid]
        try:
            reviews.renew(self.reviewers[r], rid, token - stale, lease_seconds=120, now=self.now)
            assert not stale and until > self.now
            self.holder[rid] = (r, token, self.now + dt.timedelta(seconds=120))
        except GatewayError as exc:
            assert exc.status_code == 409

    @precondition(lambda self: bool(self.holder))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.holder)))
        r, token, until = self.holder[rid]
        try:
            reviews.release(self.reviewers[r], rid, token, now=self.now)
            assert until > self.now
            del self.holder[rid]
        except GatewayError as exc:
            assert exc.status_code == 409

    @rule(seconds=st.integers(1, 400))
    def time_passes(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)

    @precondition(lambda self: bool(self.holder))
    @rule(data=st.data(), outcome=st.sampled_from(["upheld", "changed", "annulled"]))
    def resolve(self, data: st.DataObject, outcome: str) -> None:
        rid = data.draw(st.sampled_from(sorted(self.holder)))
        r, token, until = self.holder[rid]
        review = db.session.get(ReviewRequest, rid)
        assert review is not None
        original = dict(self.decisions)[review.decision_id]
        new = ("approved" if original == "declined" else "declined") if outcome == "changed" else None
        try:
            reviews.resolve(self.reviewers[r], rid, token, outcome=outcome, new_outcome=new, reasons={"kk": "…"},
                            point_of_view_considered=True, now=self.now)
        except GatewayError as exc:
            assert exc.status_code == 409
            return
        # Only the current holder, with its token, within its lease, can resolve.
        assert until > self.now
        del self.holder[rid]
        self.expected_effective[review.decision_id] = {"upheld": original, "changed": new, "annulled": "annulled"}[outcome]
        db.session.expire_all()
        self.resolved[rid] = summary(db.session.get(ReviewRequest, rid), now=self.now).model_dump()  # type: ignore[arg-type]

    @precondition(lambda self: bool(self._open_ids()))
    @rule(data=st.data(), days=st.integers(20, 70))
    def extend(self, data: st.DataObject, days: int) -> None:
        rid = data.draw(st.sampled_from(self._open_ids()))
        # Issue 11 (finding 7): only the holder of a running lease extends, with its fencing token.
        r, token = (self.holder[rid][0], self.holder[rid][1]) if rid in self.holder else (0, 1)
        try:
            reviews.extend(self.reviewers[r], rid, token, until=(self.now + dt.timedelta(days=days)).date(), reason="r",
                           now=self.now)
        except GatewayError as exc:
            assert exc.status_code in (409, 422)

    @invariant()
    def at_most_one_open_review_and_one_lease_per_case(self) -> None:
        rows = self._reviews()
        open_decisions = [r.decision_id for r in rows if r.status in ("queued", "claimed")]
        assert len(open_decisions) == len(set(open_decisions))
        for r in rows:
            # A lease exists exactly while a case is claimed (a resolved case keeps who held it last).
            assert (r.lease_expires_at is not None) == (r.status == "claimed")
            if r.status == "claimed":
                assert r.claimed_by is not None and r.fencing_token >= 1
            if r.status == "queued":
                assert r.claimed_by is None

    @invariant()
    def resolved_cases_never_change(self) -> None:
        for rid, snapshot in self.resolved.items():
            review = db.session.get(ReviewRequest, rid)
            assert review is not None
            assert summary(review, now=self.now).model_dump() | {"overdue": False} == snapshot | {"overdue": False}

    @invariant()
    def effective_outcome_is_the_last_resolution(self) -> None:
        db.session.expire_all()
        for did, _ in self.decisions:
            decision = db.session.get(Decision, did)
            assert decision is not None and decision.effective_outcome == self.expected_effective[did]

    @invariant()
    def open_cases_are_terminal_or_visible_as_overdue(self) -> None:
        late, _ = reviews.list_reviews(overdue=True, limit=100, now=self.now)
        expected = {r.id for r in self._reviews()
                    if r.status in ("queued", "claimed") and reviews.effective_due(r) < self.now}
        assert {r.id for r in late} == expected


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_review_state_machine(gateway: Gateway) -> None:
    with gateway.app.app_context(), write_transaction():
        _, gateway.keys["reviewer_2"] = create_key(name=f"machine-reviewer-{new_id('x')}", role="reviewer", body="R")
    for _ in range(3):
        assert gateway.decide().status_code == 201
    ReviewMachine.gateway = gateway
    machine = ReviewMachine.TestCase
    machine.settings = settings(max_examples=20, stateful_step_count=20, deadline=None, derandomize=True,
                                suppress_health_check=list(HealthCheck))
    machine().runTest()
