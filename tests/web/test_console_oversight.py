"""The confirmation queue in the officers' console and the oversight report in the auditors' console.

A low-autonomy version holds every decision; an officer signs in with a one-time link, takes the next held
decision, reads it and confirms it (or changes it, which needs reasons); only then is the person's notice
queued. An auditor opens the oversight report as a page, downloads the same figures as the API gives."""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway import oversight
from gateway.extensions import db
from tests.conftest import Gateway
from tests.oversight.test_confirmation import register_low_autonomy
from tests.web.console_support import official, post_form

pytestmark = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                     indirect=True)
HELD = re.compile(r'href="/console/confirmations/(rev_[\w-]+)"')


def rows(gw: Gateway, sql: str, **params: object) -> list[sa.Row]:
    with gw.app.app_context():
        return list(db.session.execute(sa.text(sql), params).all())


def held_decision(gw: Gateway, reference: str = "held-1") -> str:
    body = copy.deepcopy(gw.sample)
    body["reference"] = reference
    made = gw.decide(body)
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["confirmation"] == "pending_confirmation"
    return str(made.get_json()["decision_id"])


def take_next(browser: object) -> str:
    page = browser.get("/console/confirmations")  # type: ignore[attr-defined]
    token = page.get_data(as_text=True).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    resp = browser.post("/console/confirmations/next", data={"csrf_token": token})  # type: ignore[attr-defined]
    assert resp.status_code == 303, resp.status_code
    return str(resp.headers["Location"])


def notices(gw: Gateway, decision_id: str) -> int:
    return int(rows(gw, "SELECT count(*) FROM notifications WHERE decision_id = :d AND kind = 'decision_notice'",
                    d=decision_id)[0][0])


def test_an_officer_takes_the_next_held_decision_and_confirms_it(gateway: Gateway, german_manifest: Path) -> None:
    register_low_autonomy(gateway, german_manifest)
    first = held_decision(gateway, "held-1")
    second = held_decision(gateway, "held-2")
    officer = official(gateway)
    queue = officer.get("/console/confirmations")
    body = queue.get_data(as_text=True)
    assert queue.status_code == 200 and 'id="confirmations"' in body and 'id="next-form"' in body
    assert "Decisions waiting: 2." in body
    ids = {r.decision_id: r.id for r in rows(gateway, "SELECT id, decision_id FROM reviews WHERE kind = 'confirmation'")}
    assert HELD.findall(body) == [ids[first], ids[second]]  # by due date
    # The review queue does not list them (another kind of case).
    assert ids[first] not in officer.get("/console").get_data(as_text=True)

    location = take_next(officer)
    assert location == f"/console/confirmations/{ids[first]}"
    page = officer.get(location)
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    for part in ('id="decision"', 'id="inputs"', 'id="explanation"', 'id="lease-left"', 'id="confirm-form"',
                 'id="renew-form"', 'id="release-form"'):
        assert part in text, part
    assert 'class="withheld" data-feature=' in text  # the full explanation, as the review case page shows it
    assert rows(gateway, "SELECT count(*) FROM access_events WHERE decision_id = :d AND what = 'confirmation_case'",
                d=first)[0][0] >= 1
    # The review case URL of a held decision leads to its confirmation page.
    assert officer.get(f"/console/cases/{ids[first]}").headers["Location"].endswith(location)
    before = rows(gateway, "SELECT lease_expires_at FROM reviews WHERE id = :r", r=ids[first])[0][0]
    assert post_form(officer, location, f"{location}/renew").status_code == 303
    assert rows(gateway, "SELECT lease_expires_at FROM reviews WHERE id = :r", r=ids[first])[0][0] >= before

    assert notices(gateway, first) == 0  # held: no notice yet
    bad = post_form(officer, location, f"{location}/confirm", outcome="maybe")
    assert bad.status_code == 422 and 'id="outcome-error"' in bad.get_data(as_text=True)
    done = post_form(officer, location, f"{location}/confirm", outcome="confirmed")
    assert done.status_code == 303 and done.headers["Location"].endswith("?confirmed=1")
    case = rows(gateway, "SELECT status, outcome, resolved_by FROM reviews WHERE id = :r", r=ids[first])[0]
    assert (case.status, case.outcome) == ("resolved", "confirmed")
    assert rows(gateway, "SELECT confirmation FROM decisions WHERE id = :d", d=first)[0][0] == "confirmed"
    assert notices(gateway, first) >= 1  # the person's notice is now queued
    leaf = rows(gateway, "SELECT record FROM log_leaves WHERE kind = 'decision:confirmed'")
    assert len(leaf) == 1 and case.resolved_by in leaf[0][0]  # the same leaf as the API writes
    page = officer.get(f"{location}?confirmed=1").get_data(as_text=True)
    assert 'id="confirmed"' in page and 'id="confirm-form"' not in page
    # Acting again on a decided case: 409 page, nothing changes.
    again = officer.post(f"{location}/confirm", data={
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page).group(1),  # type: ignore[union-attr]
        "fencing_token": "1", "outcome": "confirmed"})
    assert again.status_code == 409 and 'id="problem"' in again.get_data(as_text=True)
    assert "Decisions waiting: 1." in officer.get("/console/confirmations").get_data(as_text=True)
    assert second and HELD.findall(officer.get("/console/confirmations?status=resolved").get_data(as_text=True)) == [ids[first]]


def test_changing_the_outcome_needs_reasons_and_a_new_outcome(gateway: Gateway, german_manifest: Path) -> None:
    register_low_autonomy(gateway, german_manifest)
    did = held_decision(gateway)
    officer = official(gateway)
    location = take_next(officer)
    no_reasons = post_form(officer, location, f"{location}/confirm", outcome="changed", new_outcome="approved")
    body = no_reasons.get_data(as_text=True)
    assert no_reasons.status_code == 422
    assert 'id="reasons_kk-error"' in body and 'id="reasons_ru-error"' in body
    no_outcome = post_form(officer, location, f"{location}/confirm", outcome="changed", reasons_kk="Себеп.",
                           reasons_ru="Причина.")
    assert no_outcome.status_code == 422 and 'id="new_outcome-error"' in no_outcome.get_data(as_text=True)
    assert rows(gateway, "SELECT status FROM reviews")[0][0] == "claimed" and notices(gateway, did) == 0
    done = post_form(officer, location, f"{location}/confirm", outcome="changed", new_outcome="approved",
                     reasons_kk="Табысы расталды.", reasons_ru="Доход подтверждён.")
    assert done.status_code == 303
    decision = rows(gateway, "SELECT outcome, effective_outcome, confirmation FROM decisions WHERE id = :d", d=did)[0]
    assert tuple(decision) == ("declined", "approved", "changed")
    reasons = rows(gateway, "SELECT reasons FROM reviews")[0][0]
    reasons = reasons if isinstance(reasons, dict) else json.loads(reasons)
    assert reasons == {"kk": "Табысы расталды.", "ru": "Доход подтверждён."}
    assert notices(gateway, did) >= 1


def test_an_officer_whose_lease_ran_out_is_told_and_nothing_changes(gateway: Gateway, german_manifest: Path) -> None:
    register_low_autonomy(gateway, german_manifest)
    did = held_decision(gateway)
    slow, fast = official(gateway), official(gateway)
    location = take_next(slow)
    stale = slow.get(location).get_data(as_text=True)
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE reviews SET lease_expires_at = :t"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)})
        db.session.commit()
    assert take_next(fast) == location
    csrf = stale.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    fencing = stale.split('name="fencing_token" value="', 1)[1].split('"', 1)[0]
    resp = slow.post(f"{location}/confirm", data={"csrf_token": csrf, "fencing_token": fencing, "outcome": "confirmed"})
    assert resp.status_code == 409 and 'id="lease-lost"' in resp.get_data(as_text=True)
    assert tuple(rows(gateway, "SELECT status, fencing_token FROM reviews")[0]) == ("claimed", 2)
    assert notices(gateway, did) == 0
    # Claiming a case another officer holds: a 409 page naming it; giving it back returns it to the queue.
    taken = post_form(slow, location, f"{location}/claim")
    assert taken.status_code == 409 and 'id="problem"' in taken.get_data(as_text=True)
    assert post_form(fast, location, f"{location}/release").status_code == 303
    assert rows(gateway, "SELECT status FROM reviews")[0][0] == "queued"
    # No CSRF token: refused.
    assert slow.post(f"{location}/claim", data={}).status_code == 400
    # A review id that is not a held decision, and one that does not exist: 404.
    assert slow.get("/console/confirmations/rev_AAAAAAAAAAAAAAAAAAAAAA").status_code == 404


def test_no_held_decision_waiting(gateway: Gateway) -> None:
    officer = official(gateway)
    assert take_next(officer).endswith("/console/confirmations?none=1")
    assert 'id="none-waiting"' in officer.get("/console/confirmations?none=1").get_data(as_text=True)
    # The review queue says so too (`none` is a Jinja literal: the page variable is none_waiting).
    assert 'id="none-waiting"' in officer.get("/console?none=1").get_data(as_text=True)


def test_an_auditor_reads_the_oversight_report_and_downloads_the_same_figures(
        gateway: Gateway, german_manifest: Path) -> None:
    register_low_autonomy(gateway, german_manifest)
    held_decision(gateway)
    incident = gateway.client.post("/v1/incidents", headers=gateway.auth("auditor"), json={
        "model": "german-credit", "severity": "high", "description": "Declines rose after the data feed changed."})
    assert incident.status_code == 201, incident.get_json()
    auditor = official(gateway, "auditor")
    empty = auditor.get("/audit/report")
    assert empty.status_code == 200 and 'id="report-form"' in empty.get_data(as_text=True)
    assert 'id="report-json"' not in empty.get_data(as_text=True)
    today = dt.datetime.now(dt.UTC).date()
    query = f"model=german-credit&from={today - dt.timedelta(days=1)}&to={today}"
    page = auditor.get(f"/audit/report?{query}")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    for part in ('id="volume"', 'id="reviews"', 'id="confirmations"', 'id="fairness"', 'id="drift"', 'id="incidents"',
                 'id="report-json"', 'id="report-csv"'):
        assert part in body, part
    assert "Decisions in the period: 1." in body
    assert incident.get_json()["incident_id"] in body and "Declines rose after the data feed changed." in body
    api = gateway.client.get(f"/v1/reports/oversight?{query}", headers=gateway.auth("auditor"))
    api_csv = gateway.client.get(f"/v1/reports/oversight?{query}&format=csv", headers=gateway.auth("auditor"))
    assert api.status_code == api_csv.status_code == 200
    data = api.get_json()
    assert data["confirmations"] and data["data"]["decisions"] == 1
    # Every figure the API gives is on the page, with its value.
    shown = dict(re.findall(r'<tr data-figure="([^"]+)"><th scope="row"><code>[^<]*</code></th><td[^>]*>([^<]*)</td>',
                            body))
    expected = {f"{section}.{key}": value for section in oversight.SECTIONS if section != "incidents"
                for key, value in oversight.figures(data[section])}
    assert len(expected) > 50 and {k: html.unescape(v) for k, v in shown.items()} == expected
    downloaded = auditor.get(f"/audit/report.json?{query}")
    assert downloaded.status_code == 200 and "attachment" in downloaded.headers["Content-Disposition"]
    assert downloaded.get_data() == api.get_data()
    csv = auditor.get(f"/audit/report.csv?{query}")
    assert csv.status_code == 200 and csv.mimetype == "text/csv" and csv.get_data() == api_csv.get_data()
    # Bad input: named per field, 422; an unknown model too.
    bad = auditor.get("/audit/report?model=german-credit&from=yesterday&to=2026-01-01")
    assert bad.status_code == 422 and 'id="from-error"' in bad.get_data(as_text=True)
    backwards = auditor.get(f"/audit/report?model=german-credit&from={today}&to={today - dt.timedelta(days=3)}")
    assert backwards.status_code == 422 and 'id="to-error"' in backwards.get_data(as_text=True)
    unknown = auditor.get(f"/audit/report?model=no-such&from={today}&to={today}")
    assert unknown.status_code == 422 and 'id="model-error"' in unknown.get_data(as_text=True)
    assert auditor.get(f"/audit/report.csv?model=no-such&from={today}&to={today}").status_code == 422
    # A reviewer cannot open it; an auditor cannot confirm.
    assert official(gateway).get(f"/audit/report?{query}").status_code == 403
    assert auditor.get("/console/confirmations").status_code == 403
