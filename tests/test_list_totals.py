"""A list's `total` is exact up to LIST_COUNT_CAP and a flagged lower bound beyond it (issue 17).

A page must cost the same whatever the size of the table, so no list counts more than cap + 1 rows: the JSON lists
say `total_is_lower_bound: true` (and `overdue_total_is_lower_bound` for the review queue) and the console writes
"2+" when the cap is reached. tests/test_scale_plans.py checks that the counts read index ranges.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from gateway import create_app, reviews
from gateway.db import Total
from gateway.errors import ConfigError
from tests.conftest import SECRETS, Gateway
from tests.support.registration import request_reviews
from tests.web.console_support import official

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
CAP = 2
pytestmark = pytest.mark.gateway_config(LIST_COUNT_CAP=CAP)



@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_review_queue_counts_exactly_up_to_the_cap_and_flags_a_lower_bound_beyond(gateway: Gateway) -> None:
    request_reviews(gateway, 3, "totals")
    reviewer = gateway.auth("reviewer")
    claimed = gateway.client.post("/v1/reviews/claim", json={}, headers=reviewer)
    assert claimed.status_code == 200
    every = gateway.client.get("/v1/reviews", headers=reviewer).get_json()
    assert len(every["reviews"]) == 3  # the page is whole: only the count stops at the cap
    assert (every["total"], every["total_is_lower_bound"]) == (CAP, True)
    assert (every["overdue_total"], every["overdue_total_is_lower_bound"]) == (0, False)
    queued = gateway.client.get("/v1/reviews", headers=reviewer, query_string={"status": "queued"}).get_json()
    assert (queued["total"], queued["total_is_lower_bound"]) == (2, False)  # exactly the cap: exact
    one = gateway.client.get("/v1/reviews", headers=reviewer, query_string={"status": "claimed"}).get_json()
    assert (one["total"], one["total_is_lower_bound"]) == (1, False)
    held = gateway.client.get("/v1/confirmations", headers=reviewer).get_json()
    assert (held["total"], held["total_is_lower_bound"], held["overdue_total_is_lower_bound"]) == (0, False, False)
    # Overdue: counted on the open cases only, with the same cap (a month on, all three are past due).
    with gateway.app.app_context():
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
        assert reviews.overdue_count(now=later) == Total(CAP, True)
        late, total = reviews.list_reviews(overdue=True, now=later, limit=10)
        assert len(late) == 3 and total == Total(CAP, True)
        assert reviews.count_reviews(status="open") == Total(CAP, True)
        assert reviews.count_reviews(status="claimed") == Total(1, False)


def test_an_access_log_and_the_register_say_whether_their_total_is_exact(gateway: Gateway) -> None:
    decision = gateway.decide(key="totals-log").get_json()["decision_id"]
    auditor = gateway.auth("auditor")
    url = f"/v1/decisions/{decision}/access-log"
    first = gateway.client.get(url, headers=auditor).get_json()
    assert (first["total"], first["total_is_lower_bound"]) == (0, False)  # read before its own read is recorded
    gateway.client.get(url, headers=auditor)
    second = gateway.client.get(url, headers=auditor).get_json()
    assert (second["total"], second["total_is_lower_bound"]) == (2, False)
    third = gateway.client.get(url, headers=auditor).get_json()
    assert (third["total"], third["total_is_lower_bound"]) == (CAP, True) and len(third["events"]) == 3
    register = gateway.client.get("/v1/models").get_json()
    assert (register["total"], register["total_is_lower_bound"]) == (1, False)


def text(page: object) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.get_data(as_text=True)))  # type: ignore[attr-defined]


def test_the_console_writes_a_capped_count_with_a_plus_and_pages_by_cursor(gateway: Gateway) -> None:
    made = request_reviews(gateway, 3, "totals")
    browser = official(gateway)
    page = browser.get("/console")
    assert page.status_code == 200
    assert "Cases waiting: 2+, of them overdue: 0." in text(page)
    assert "Cases (2+)" in text(page)
    body = page.get_data(as_text=True)
    assert 'id="next-page"' not in body and 'id="first-page"' not in body  # one page: 3 cases of 50
    # The next page starts after a cursor (the API's cursors are the console's): the same cost however deep.
    cursor = gateway.client.get("/v1/reviews", headers=gateway.auth("reviewer"),
                                query_string={"limit": 1}).get_json()["next_after"]
    rest = browser.get("/console", query_string={"after": cursor}).get_data(as_text=True)
    shown = re.findall(r'data-review-id="(rev_[\w-]+)"', rest)
    listed = [r["review_id"] for r in gateway.client.get("/v1/reviews", headers=gateway.auth("reviewer")).get_json()["reviews"]]
    assert sorted(made) == sorted(listed) and shown == listed[1:]
    assert 'id="first-page"' in rest
    # A cursor that is not one starts at the top instead of failing.
    top = browser.get("/console", query_string={"after": "not-a-cursor"}).get_data(as_text=True)
    assert re.findall(r'data-review-id="(rev_[\w-]+)"', top) == listed


def test_the_cap_must_be_a_positive_integer() -> None:
    for bad in (0, -1, "many", 2.5):
        with pytest.raises(ConfigError, match="GATEWAY_LIST_COUNT_CAP must be a positive integer"):
            create_app({**SECRETS, "DATABASE_URL": "sqlite://", "LIST_COUNT_CAP": bad})
