"""The reviewers' console: queue, take the next case, the case page, rescore, resolve, extend, lost leases."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from gateway.extensions import db
from tests.conftest import Gateway
from tests.support.citizens import notice_token
from tests.web.console_support import CASE, official, post_form, waiting_case
from tests.web.support import IIN_2, text

pytestmark = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                     indirect=True)

def rows(gw: Gateway, sql: str, **params: object) -> list[sa.Row]:
    with gw.app.app_context():
        return list(db.session.execute(sa.text(sql), params).all())


def take_next(browser: object) -> str:
    page = browser.get("/console")  # type: ignore[attr-defined]
    token = page.get_data(as_text=True).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    resp = browser.post("/console/next", data={"csrf_token": token})  # type: ignore[attr-defined]
    assert resp.status_code == 303, resp.status_code
    return str(resp.headers["Location"])


def test_the_queue_lists_open_cases_by_due_date_and_counts_them(gateway: Gateway) -> None:
    first, second = waiting_case(gateway), waiting_case(gateway, iin=IIN_2)
    reviewer = official(gateway)
    page = reviewer.get("/console")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="queue"' in body and 'id="next-form"' in body
    assert "Cases waiting: 2, of them overdue: 0." in text(page)
    order = CASE.findall(body)
    ids = {r.decision_id: r.id for r in rows(gateway, "SELECT id, decision_id FROM reviews")}
    assert order == [ids[first.decision_id], ids[second.decision_id]]
    # Overdue cases are highlighted.
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE reviews SET due_at = :t WHERE decision_id = :d"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(days=1), "d": second.decision_id})
        db.session.commit()
    body = reviewer.get("/console").get_data(as_text=True)
    assert f'class="overdue" data-review-id="{ids[second.decision_id]}"' in body
    assert "of them overdue: 1" in text(reviewer.get("/console"))
    # Filters: a model nobody has, a status, a due date.
    assert CASE.findall(reviewer.get("/console?model=nope").get_data(as_text=True)) == []
    assert CASE.findall(reviewer.get("/console?status=resolved").get_data(as_text=True)) == []
    yesterday = dt.date.today().isoformat()
    assert CASE.findall(reviewer.get(f"/console?due_before={yesterday}").get_data(as_text=True)) == [ids[second.decision_id]]
    bad = reviewer.get("/console?due_before=soon")
    assert bad.status_code == 200 and 'id="problem"' in bad.get_data(as_text=True)


def test_a_reviewer_takes_the_next_case_rescores_and_resolves_it(gateway: Gateway) -> None:
    me = waiting_case(gateway)
    reviewer = official(gateway)
    location = take_next(reviewer)
    review_id = location.rsplit("/", 1)[1]
    page = reviewer.get(location)
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    for part in ('id="decision"', 'id="inputs"', 'id="explanation"', 'id="point-of-view"', 'id="corrected"',
                 'id="lease-left"', 'id="resolve-form"', 'id="extend-form"', 'id="rescore-form"', 'id="renew-form"'):
        assert part in body, part
    assert "Мой доход вырос." in body
    # The full explanation: the factors withheld from the person are there, marked withheld.
    assert 'class="withheld" data-feature=' in body
    # Score the corrected data: the re-score is shown side by side.
    resp = post_form(reviewer, location, f"/console/cases/{review_id}/rescore")
    assert resp.status_code == 303
    page = reviewer.get(location).get_data(as_text=True)
    assert 'id="rescore"' in page and 'id="rescore-score"' in page
    assert rows(gateway, "SELECT count(*) FROM log_leaves WHERE kind = 'review:rescored'")[0][0] == 1
    # Resolve: reasons in Kazakh and Russian and the point of view checkbox are all required.
    missing = post_form(reviewer, location, f"/console/cases/{review_id}/resolve", outcome="annulled", reasons_ru="Причины.")
    assert missing.status_code == 422
    body = missing.get_data(as_text=True)
    assert 'id="reasons_kk-error"' in body and 'id="point_of_view_considered-error"' in body
    assert rows(gateway, "SELECT status FROM reviews")[0][0] == "claimed"
    done = post_form(reviewer, location, f"/console/cases/{review_id}/resolve", outcome="annulled",
                     reasons_kk="Себептері.", reasons_ru="Причины.", point_of_view_considered="yes")
    assert done.status_code == 303
    review = rows(gateway, "SELECT status, outcome, resolved_by, reasons FROM reviews")[0]
    assert (review.status, review.outcome) == ("resolved", "annulled")
    reasons = review.reasons if isinstance(review.reasons, dict) else json.loads(review.reasons)
    assert reasons == {"kk": "Себептері.", "ru": "Причины."}
    leaf = rows(gateway, "SELECT record FROM log_leaves WHERE kind = 'review:resolved'")
    assert len(leaf) == 1 and review.resolved_by in leaf[0][0]  # the same leaf the API writes, by the same client
    # The person's page shows the new outcome.
    assert me.browser.get(f"/d/{me.decision_id}").status_code == 200
    assert rows(gateway, "SELECT effective_outcome FROM decisions WHERE id = :d", d=me.decision_id)[0][0] == "annulled"


def test_a_reviewer_whose_lease_ran_out_is_told_and_nothing_changes(gateway: Gateway) -> None:
    waiting_case(gateway)
    slow, fast = official(gateway), official(gateway)
    location = take_next(slow)
    review_id = location.rsplit("/", 1)[1]
    stale_page = slow.get(location).get_data(as_text=True)  # the form as the slow reviewer has it
    with gateway.app.app_context():  # the lease runs out; another reviewer takes the case
        db.session.execute(sa.text("UPDATE reviews SET lease_expires_at = :t"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)})
        db.session.commit()
    assert take_next(fast) == location
    csrf = stale_page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    fencing = stale_page.split('name="fencing_token" value="', 1)[1].split('"', 1)[0]
    resp = slow.post(f"/console/cases/{review_id}/resolve", data={
        "csrf_token": csrf, "fencing_token": fencing, "outcome": "upheld", "reasons_kk": "а", "reasons_ru": "б",
        "point_of_view_considered": "yes"})
    assert resp.status_code == 409 and 'id="lease-lost"' in resp.get_data(as_text=True)
    assert rows(gateway, "SELECT status, fencing_token FROM reviews")[0] == ("claimed", 2)
    assert rows(gateway, "SELECT count(*) FROM log_leaves WHERE kind = 'review:resolved'")[0][0] == 0


def test_renew_release_and_extend(gateway: Gateway) -> None:
    waiting_case(gateway)
    reviewer = official(gateway)
    location = take_next(reviewer)
    review_id = location.rsplit("/", 1)[1]
    before = rows(gateway, "SELECT lease_expires_at FROM reviews")[0][0]
    assert post_form(reviewer, location, f"/console/cases/{review_id}/renew").status_code == 303
    assert rows(gateway, "SELECT lease_expires_at FROM reviews")[0][0] >= before
    no_reason = post_form(reviewer, location, f"/console/cases/{review_id}/extend", until="2099-01-01", reason="")
    assert no_reason.status_code == 422 and 'id="reason-error"' in no_reason.get_data(as_text=True)
    too_far = post_form(reviewer, location, f"/console/cases/{review_id}/extend", until="2099-01-01", reason="Нужна экспертиза.")
    assert too_far.status_code == 422 and 'id="until-error"' in too_far.get_data(as_text=True)
    until = (dt.date.today() + dt.timedelta(days=40)).isoformat()
    ok = post_form(reviewer, location, f"/console/cases/{review_id}/extend", until=until, reason="Нужна экспертиза.")
    assert ok.status_code == 303
    assert rows(gateway, "SELECT extension_reason FROM reviews")[0][0] == "Нужна экспертиза."
    assert 'id="extend-form"' not in reviewer.get(location).get_data(as_text=True)  # once only
    assert post_form(reviewer, location, f"/console/cases/{review_id}/release").status_code == 303
    assert rows(gateway, "SELECT status FROM reviews")[0][0] == "queued"


def test_a_reviewer_never_gets_a_case_they_operated(gateway: Gateway) -> None:
    body = json.loads(json.dumps(gateway.sample))
    body["operator"] = "reviewer"  # the reviewer's recorded identity (the client's name)
    resp = gateway.decide(body)
    assert resp.status_code == 201, resp.get_json()
    decision_id = resp.get_json()["decision_id"]
    browser = gateway.app.test_client()
    assert browser.get(f"/d/{decision_id}?token={notice_token(gateway, decision_id)}").status_code == 303
    page = browser.get(f"/d/{decision_id}/review").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert browser.post(f"/d/{decision_id}/review", data={"csrf_token": csrf, "point_of_view": "Нет.",
                                                          "contest_grounds": ["other"], "language": "ru"}).status_code == 303
    reviewer = official(gateway)
    assert take_next(reviewer) == "/console?none=1"
    review_id = rows(gateway, "SELECT id FROM reviews")[0][0]
    page = reviewer.get(f"/console/cases/{review_id}?lang=en").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    refused = reviewer.post(f"/console/cases/{review_id}/claim", data={"csrf_token": csrf})
    assert refused.status_code == 403 and "You operated this decision" in text(refused)
    assert rows(gateway, "SELECT status FROM reviews")[0][0] == "queued"


def test_every_console_form_needs_its_csrf_token(gateway: Gateway) -> None:
    waiting_case(gateway)
    reviewer = official(gateway)
    assert reviewer.post("/console/next").status_code == 400
    assert rows(gateway, "SELECT status FROM reviews")[0][0] == "queued"


def test_the_console_speaks_kazakh_and_russian(gateway: Gateway) -> None:
    reviewer = official(gateway)
    assert "Қарау кезегі" in text(reviewer.get("/console?lang=kk"))
    assert "Очередь на рассмотрение" in text(reviewer.get("/console?lang=ru"))
