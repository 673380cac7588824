"""Finding 3: review deadlines in notices were one day late (the midnight that ends the last day was
formatted as a date). The tests render the real notices across a weekend, a holiday and the year end, and
a review_received notice rendered after an extension."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any

import pytest
import sqlalchemy as sa
from babel.dates import format_date

from gateway import deadlines, reviews
from gateway.auth import Principal
from gateway.extensions import db
from gateway.models import ApiClient
from gateway.notifications import render
from gateway.workdays import WorkCalendar
from tests.conftest import Gateway
from tests.security.support import decided

ALMATY = zoneinfo.ZoneInfo("Asia/Almaty")
CALENDAR = WorkCalendar()


def at_noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=ALMATY).astimezone(dt.UTC)


def principal(name: str) -> Principal:
    row = db.session.execute(sa.select(ApiClient).where(ApiClient.name == name)).scalar_one()
    return Principal(row.id, row.name, row.body, row.role)


def notices(kind: str) -> list[str]:
    """The plain text of every notice of `kind`, rendered now as the dispatcher would."""
    texts = []
    rows = db.session.execute(sa.text("SELECT id, decision_id, kind, channel, language, attempts, created_at, context "
                                      "FROM notifications WHERE kind = :k ORDER BY created_at"), {"k": kind}).all()
    for r in rows:
        context: Any = r.context if isinstance(r.context, dict) or r.context is None else json.loads(r.context)
        created = r.created_at if isinstance(r.created_at, dt.datetime) else dt.datetime.fromisoformat(r.created_at)
        job = render.Job(r.id, r.decision_id, r.kind, r.channel, r.language, r.attempts, created, context)
        message = render.message_for(job)
        texts.append(message.text + message.subject)
    return texts


def ru(day: dt.date) -> str:
    return format_date(day, "long", locale="ru").removesuffix(" г.")


@pytest.mark.parametrize("requested_on", [
    dt.date(2026, 12, 3),  # 16 December off; the last day is Friday 25 December (not "Saturday the 26th")
    dt.date(2026, 12, 10),  # across 16 December, the year end, 1-2 and 7 January
    dt.date(2026, 11, 30),  # due by the end of 22 December
])
def test_the_notice_names_the_last_day_itself(gateway: Gateway, requested_on: dt.date) -> None:
    body = gateway.sample | {"subject": gateway.sample["subject"] | {"language": "ru"}}
    did = decided(gateway, **body)["decision_id"]
    last = CALENDAR.add_working_days(requested_on, 15)
    with gateway.app.app_context():
        review = reviews.request_review(principal("agency_a"), did, point_of_view="…", contest_grounds=["other"],
                                        corrected_data=None, language="ru", now=at_noon(requested_on))
        assert deadlines.last_day(review.due_at, ALMATY) == last
        [text] = notices("review_received")
    assert f"не позднее {ru(last)}" in text, text
    assert ru(last + dt.timedelta(days=1)) not in text


def test_an_extension_is_announced_for_its_own_day_and_the_first_notice_keeps_its_date(gateway: Gateway) -> None:
    body = gateway.sample | {"subject": gateway.sample["subject"] | {"language": "ru"}}
    did = decided(gateway, **body)["decision_id"]
    requested_on, until = dt.date(2026, 11, 20), dt.date(2027, 1, 8)
    first_last = CALENDAR.add_working_days(requested_on, 15)  # Friday 11 December
    with gateway.app.app_context():
        now = at_noon(requested_on)
        review = reviews.request_review(principal("agency_a"), did, point_of_view="…", contest_grounds=["other"],
                                        corrected_data=None, language="ru", now=now)
        reviewer = principal("reviewer")
        claimed = reviews.claim(reviewer, review_id=review.id, now=now)
        assert claimed is not None
        reviews.extend(reviewer, review.id, claimed.fencing_token, until=until, reason="Нужна экспертиза", now=now)
        [received] = notices("review_received")  # rendered after the extension (e.g. a retry)
        [extended] = notices("review_extended")
    assert f"не позднее {ru(first_last)}" in received and ru(until) not in received
    assert ru(until) in extended and ru(until + dt.timedelta(days=1)) not in extended
