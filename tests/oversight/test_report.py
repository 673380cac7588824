"""The oversight report on a generated history of 5,200 decisions of the real example model (5,000 in the period).

The history is written in bulk (Core inserts of what the decision path writes: decisions scored by the real
model, their real TreeSHAP explanations, encrypted monitor-only values, notices, reviews, confirmations, access
events, ground truth), with known delays, review states, groups and a drift in one input. Every figure is then
checked against counts computed here from the generated data, and the fairness figures against fairlearn called
directly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    selection_rate,
)
from flask.cli import ScriptInfo
from scipy.stats import ks_2samp
from sqlalchemy import insert

from gateway import keystore, oversight, runtime
from gateway.cli import main
from gateway.contacts import DataKey, encrypt_monitoring, new_data_key
from gateway.extensions import db
from gateway.manifest import load_manifest
from gateway.models import (
    AccessEvent,
    Decision,
    Explanation,
    GroundTruth,
    Incident,
    MonitoringValues,
    Notification,
    ReviewRequest,
    table,
)
from tests.conftest import Gateway

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True),
    pytest.mark.gateway_config(OVERSIGHT_METRICS_DAYS=4000, OVERSIGHT_METRICS_SAMPLE=10_000),
]

START, END = dt.date(2026, 10, 1), dt.date(2026, 10, 31)
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
IN_PERIOD, OUTSIDE = 5000, 200
MIN_GROUP = 30


@dataclass
class History:
    """What was generated, per decision index (in-period decisions first), to count from independently."""

    ids: list[str] = field(default_factory=list)
    inside: list[bool] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    adverse: list[bool] = field(default_factory=list)
    sex: list[str | None] = field(default_factory=list)
    truth: dict[int, bool] = field(default_factory=dict)
    notice: dict[int, tuple[str, float | None]] = field(default_factory=dict)  # status, delay
    reviews: dict[int, dict[str, Any]] = field(default_factory=dict)
    confirmations: dict[int, dict[str, Any]] = field(default_factory=dict)
    explained_by_person: set[int] = field(default_factory=set)
    person_reads: int = 0
    age_in_top: int = 0
    current_rows: list[dict[str, Any]] = field(default_factory=list)


def register_version(gw: Gateway, german_manifest: Path) -> str:
    """german-credit 1.5.0: age declared sensitive (with its legal basis), adverse outcomes confirmed first."""
    m, folder = load_manifest(german_manifest)
    body = m.model_dump(mode="json") | {"version": "1.5.0", "risk_class": "medium"}
    body["features"] = [f | ({"sensitive": "other", "legal_basis": "Example: consent to age-based pricing"}
                             if f["name"] == "age" else {}) for f in body["features"]]
    resp = gw.client.post("/v1/models", json=body, headers=gw.auth("admin"))
    assert resp.status_code == 201, resp.get_json()
    with gw.app.app_context():
        return str(db.session.execute(
            db.select(db.text("id")).select_from(db.text("scoring_models")).where(db.text("version = '1.5.0'"))
        ).scalar_one())


def generate(gw: Gateway, model_id: str) -> History:
    h = History()
    rng = np.random.default_rng(16)
    with gw.app.app_context():
        loaded = runtime.cache().get(model_id)
        assert loaded.background is not None and loaded.explanation is not None
        settings = gw.app.extensions["gateway.settings"]
        manifest = loaded.manifest
        bg = loaded.background
        client = db.session.execute(db.text("SELECT id FROM api_clients WHERE name = 'agency_a'")).scalar_one()
        total = IN_PERIOD + OUTSIDE
        picks = rng.integers(0, len(bg), total)
        rows = []
        for i, k in enumerate(picks):
            row = {c: (v.item() if hasattr(v, "item") else v) for c, v in bg.iloc[int(k)].items()}
            if i >= IN_PERIOD // 2:  # the second half drifts: 24 months longer (within the declared range)
                row["duration_months"] = min(120, int(row["duration_months"]) + 24)
            rows.append(row)
        scores = loaded.score(rows)
        explained = loaded.explanation.explainer.explain(pd.DataFrame.from_records(rows, columns=list(bg.columns)))
        decisions, explanations, monitoring, notices, cases, events, truths = [], [], [], [], [], [], []
        data_keys: list[DataKey] = []
        for i, row in enumerate(rows):
            inside = i < IN_PERIOD
            if inside:
                created = dt.datetime(2026, 10, 1, tzinfo=dt.UTC) + dt.timedelta(days=i % 31, seconds=(i * 7919) % 86000)
            elif i % 2:
                created = dt.datetime(2026, 9, 30, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
            else:
                created = dt.datetime(2026, 11, 1, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
            did = f"dec_gen{i:06d}"
            score = float(scores[i])
            outcome, adverse = manifest.policy.decide(score)
            sex = None if i % 200 == 13 else ("female" if rng.random() < 0.31 else "male")
            held = adverse
            attributions = {k: float(v) for k, v in explained[i].attributions.items()}
            top = sorted(attributions, key=lambda n: (-abs(attributions[n]), n))[:manifest.explanation.max_factors]
            confirmation, effective = None, outcome
            if held:
                done = i % 10 < 7
                changed = done and i % 10 == 0
                confirmation = ("changed" if changed else "confirmed") if done else "pending_confirmation"
                effective = ("approved" if changed else outcome)
                resolved = created + dt.timedelta(minutes=5 + i % 120)
                cases.append({"id": f"rev_cnf{i:06d}", "decision_id": did, "kind": "confirmation",
                              "status": "resolved" if done else "queued", "point_of_view": "", "contest_grounds": [],
                              "language": "kk", "requested_by": "gateway", "requested_at": created,
                              "due_at": created + dt.timedelta(days=21), "extended_until": None,
                              "fencing_token": 1 if done else 0,
                              "outcome": ("changed" if changed else "confirmed") if done else None,
                              "new_outcome": "approved" if changed else None,
                              "resolved_at": resolved if done else None, "resolved_by": "officer" if done else None,
                              "late": False})
                if inside:  # as of the period's end: one confirmed after it still waited then
                    h.confirmations[i] = {"done": done and resolved < AS_OF, "changed": changed,
                                          "seconds": (resolved - created).total_seconds() if done else None}
            decisions.append({
                "id": did, "model_id": model_id, "model_name": "german-credit", "model_version": "1.5.0",
                "artifact_sha256": loaded.sha256, "client_id": client, "subject_ref": hashlib.sha256(did.encode()).hexdigest(),
                "contact_ciphertext": None, "language": "kk", "inputs": row, "score": score, "outcome": outcome,
                "adverse": adverse, "role_of_ai": "sole_basis", "operator": None, "reference": None,
                "created_at": created, "effective_outcome": effective, "confirmation": confirmation})
            explanations.append({"decision_id": did, "status": "ready", "method": "tree", "output_space": "probability",
                                 "base_value": float(explained[i].base_value), "output": score,
                                 "attributions": attributions, "attempts": 0, "created_at": created})
            data_key = new_data_key(settings.contact_key, did)
            data_keys.append(data_key)  # the data key: in the key store, a database of its own
            if sex is not None:
                monitoring.append({"decision_id": did, "model_id": model_id,
                                   "ciphertext": encrypt_monitoring(data_key, {"sex": sex})})
            notified = not held or confirmation in ("confirmed", "changed")
            if notified:
                status = "dead" if i % 97 == 0 else "pending" if i % 89 == 0 else "delivered"
                delay = float((i * 37) % 600 + 1) if status == "delivered" else None
                notices.append({"id": f"ntf_gen{i:06d}", "decision_id": did, "kind": "decision_notice",
                                "channel": "email", "language": "kk", "status": status, "attempts": 1,
                                "next_attempt_at": created, "created_at": created,
                                "delivered_at": created + dt.timedelta(seconds=delay) if delay else None})
                if inside:
                    h.notice[i] = (status, delay)
            if adverse and notified and i % 5 == 0:
                j = (i // 5) % 10
                requested = created + dt.timedelta(days=1)
                due = requested + dt.timedelta(days=21)
                extended = due + dt.timedelta(days=20) if j == 6 else None
                status, resolved_at, outcome_r = "queued", None, None
                if j <= 4 or j == 6:
                    status = "resolved"
                    resolved_at = requested + dt.timedelta(days=(j + 1) * 2 if j < 4 else 25 if j == 4 else 30)
                    outcome_r = ("upheld", "changed", "annulled")[(i // 50) % 3]
                elif j == 5:
                    status = "withdrawn"
                cases.append({"id": f"rev_gen{i:06d}", "decision_id": did, "kind": "review", "status": status,
                              "point_of_view": "x", "contest_grounds": ["other"], "language": "kk",
                              "requested_by": "citizen", "requested_at": requested, "due_at": due,
                              "extended_until": extended, "fencing_token": 1, "outcome": outcome_r,
                              "new_outcome": "approved" if outcome_r == "changed" else None,
                              "resolved_at": resolved_at, "resolved_by": "reviewer" if resolved_at else None,
                              "late": False})
                if inside:
                    h.reviews[i] = {"status": status, "requested": requested, "due": extended or due,
                                    "resolved": resolved_at, "outcome": outcome_r, "extended": extended is not None}
            if i % 3 == 0:
                reads = 2 if i % 6 == 0 else 1
                for r in range(reads):
                    events.append({"id": f"acc_gen{i:06d}_{r}", "at": created + dt.timedelta(hours=r + 1),
                                   "decision_id": did, "principal_kind": "citizen", "principal_id": "citizen:link",
                                   "principal_body": None, "what": "explanation"})
                if inside:
                    h.explained_by_person.add(i)
                    h.person_reads += reads
            if i % 4 == 0:
                events.append({"id": f"acc_agy{i:06d}", "at": created, "decision_id": did, "principal_kind": "agency",
                               "principal_id": client, "principal_body": "Agency A", "what": "explanation"})
            if i % 2 == 0:
                positive = bool(rng.random() < 0.2 + 0.6 * score)
                truths.append({"decision_id": did, "positive": positive, "posted_by": client, "posted_at": created})
                if inside:
                    h.truth[i] = positive
            if inside:
                h.ids.append(did)
                h.scores.append(score)
                h.outcomes.append(outcome)
                h.adverse.append(adverse)
                h.sex.append(sex)
                h.current_rows.append(row)
                h.age_in_top += "age" in top
        keystore.store(data_keys, dt.datetime.now(dt.UTC))
        with db.engine.begin() as conn:
            for model, values in ((Decision, decisions), (Explanation, explanations), (MonitoringValues, monitoring),
                                  (Notification, notices), (ReviewRequest, cases), (AccessEvent, events),
                                  (GroundTruth, truths)):
                conn.execute(insert(table(model)), values)
            conn.execute(insert(table(Incident)), [{
                "id": "inc_generated0001", "model_name": "german-credit", "model_version": "1.5.0", "severity": "high",
                "description": "score drift after a data-supplier change", "status": "reported",
                "opened_by": "owner", "opened_at": dt.datetime(2026, 10, 20, tzinfo=dt.UTC),
                "report_due_at": dt.datetime(2026, 10, 23, tzinfo=dt.UTC),
                "reported_at": dt.datetime(2026, 10, 22, tzinfo=dt.UTC), "closed_at": None}])
    return h


def get_report(gw: Gateway, fmt: str = "json") -> Any:
    return gw.client.get(f"/v1/reports/oversight?model=german-credit&from={START}&to={END}&format={fmt}",
                         headers=gw.auth("auditor"))


def test_every_figure_matches_an_independent_count(gateway: Gateway, german_manifest: Path) -> None:
    model_id = register_version(gateway, german_manifest)
    h = generate(gateway, model_id)
    resp = get_report(gateway)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    r = resp.get_json()
    n = len(h.ids)
    assert n == IN_PERIOD == r["data"]["decisions"] and r["data"]["versions"] == ["1.5.0"]
    assert r["period"] == {"from": "2026-10-01", "to": "2026-10-31", "from_utc": "2026-10-01T00:00:00.000000Z",
                           "until_utc": "2026-11-01T00:00:00.000000Z", "as_of": "2026-11-01T00:00:00.000000Z"}

    # Volume, outcomes, scores.
    v = r["volume"]
    assert v["decisions"] == n and v["outcomes"] == dict(sorted(Counter(h.outcomes).items()))
    assert v["adverse"] == sum(h.adverse) and v["adverse_rate"] == round(sum(h.adverse) / n, 6)
    assert [b["count"] for b in v["score"]["histogram"]] == [sum(1 for s in h.scores if min(int(s * 10), 9) == b)
                                                             for b in range(10)]
    assert v["score"]["p50"] == round(statistics.median(h.scores), 6)
    assert v["score"]["mean"] == round(statistics.fmean(h.scores), 6)

    # Notices: delivered, dead letters, delay percentiles.
    delays = [d for s, d in h.notice.values() if s == "delivered"]
    statuses = Counter(s for s, _ in h.notice.values())
    assert r["notices"] == {
        "sent": len(h.notice), "delivered": statuses["delivered"], "dead_lettered": statuses["dead"],
        "waiting": statuses["pending"], "delivery_seconds_p50": round(float(np.percentile(delays, 50)), 6),
        "delivery_seconds_p95": round(float(np.percentile(delays, 95)), 6)}
    assert statuses["dead"] > 10 and statuses["pending"] > 10

    # Explanations the person asked for (agency reads are not counted).
    assert r["explanations"] == {"requested_by_the_person": len(h.explained_by_person), "reads": h.person_reads,
                                 "share_of_decisions": round(len(h.explained_by_person) / n, 6)}

    # Reviews, as of the period's end.
    rv = h.reviews
    resolved = {i: c for i, c in rv.items() if c["status"] == "resolved" and c["resolved"] < AS_OF}
    withdrawn = [i for i, c in rv.items() if c["status"] == "withdrawn"]
    open_ = [i for i in rv if i not in resolved and i not in withdrawn]
    on_time = [i for i, c in resolved.items() if c["resolved"] <= c["due"]]
    outcomes = Counter(c["outcome"] for c in resolved.values())
    hours = [(c["resolved"] - c["requested"]).total_seconds() / 3600 for c in resolved.values()]
    expected_reviews = {
        "requested": len(rv), "rate_per_adverse_decision": round(len(rv) / sum(h.adverse), 6),
        "resolved": len(resolved), "resolved_on_time": len(on_time), "on_time_rate": round(len(on_time) / len(resolved), 6),
        "resolved_late": len(resolved) - len(on_time), "open": len(open_),
        "overdue": sum(1 for i in open_ if rv[i]["due"] < AS_OF),
        "extended": sum(1 for c in rv.values() if c["extended"]), "withdrawn": len(withdrawn),
        "upheld": outcomes["upheld"], "changed": outcomes["changed"], "annulled": outcomes["annulled"],
        "overturn_rate": round((outcomes["changed"] + outcomes["annulled"]) / len(resolved), 6),
        "median_hours_to_resolve": round(statistics.median(hours), 6),
    }
    assert r["reviews"] == expected_reviews
    assert min(expected_reviews[k] for k in ("resolved_late", "overdue", "extended", "withdrawn", "upheld",
                                              "changed", "annulled")) > 0  # every kind of case occurs

    # Confirmations of held (adverse) decisions.
    cf = h.confirmations
    done = [c for c in cf.values() if c["done"]]
    changed = sum(1 for c in done if c["changed"])
    assert r["confirmations"] == {
        "held": len(cf), "waiting": len(cf) - len(done), "confirmed": len(done) - changed, "changed": changed,
        "share_changed": round(changed / len(done), 6),
        "median_seconds_to_confirm": round(statistics.median(c["seconds"] for c in done), 6)}

    # Fairness on the monitor-only attribute, against fairlearn called directly.
    f = r["fairness"]["sex"]
    groups = ["(not given)" if s is None else s for s in h.sex]
    assert f["groups"] == dict(sorted(Counter(groups).items())) and f["too_small"] == ["(not given)"]
    assert 0 < f["groups"]["(not given)"] < MIN_GROUP and f["minimum_group"] == MIN_GROUP
    keep = [k for k, g in enumerate(groups) if g != "(not given)"]
    favourable = np.asarray([not h.adverse[k] for k in keep], dtype=int)
    sf = np.asarray([groups[k] for k in keep])
    direct = MetricFrame(metrics=selection_rate, y_true=favourable, y_pred=favourable, sensitive_features=sf)
    assert f["selection_rate"] == {g: round(float(direct.by_group[g]), 6) for g in ("female", "male")}
    assert f["demographic_parity_difference"] == round(
        float(demographic_parity_difference(favourable, favourable, sensitive_features=sf)), 6)
    assert f["demographic_parity_ratio"] == round(
        float(demographic_parity_ratio(favourable, favourable, sensitive_features=sf)), 6)
    known = [k for k in keep if k in h.truth]
    y_true = np.asarray([h.truth[k] for k in known], dtype=int)
    y_pred = np.asarray([h.outcomes[k] == "approved" for k in known], dtype=int)
    sf_gt = np.asarray([groups[k] for k in known])
    gt = f["ground_truth"]
    assert gt["known"] == sum(1 for k in range(n) if k in h.truth)
    assert gt["equalized_odds_difference"] == round(
        float(equalized_odds_difference(y_true, y_pred, sensitive_features=sf_gt)), 6)
    for g in ("female", "male"):
        mine = sf_gt == g
        tpr = float(np.sum((y_true == 1) & (y_pred == 1) & mine) / np.sum((y_true == 1) & mine))
        fpr = float(np.sum((y_true == 0) & (y_pred == 1) & mine) / np.sum((y_true == 0) & mine))
        assert gt["true_positive_rate"][g] == round(tpr, 6) and gt["false_positive_rate"][g] == round(fpr, 6)

    # Drift: only the shifted input is flagged; the KS statistic is scipy's on the same samples.
    d = r["drift"]["versions"]["1.5.0"]
    assert d["flagged"] == ["duration_months"] and d["inputs"]["duration_months"]["psi"] > 0.2
    with gateway.app.app_context():
        background = runtime.cache().get(model_id).background
        assert background is not None
        ks = ks_2samp(background["duration_months"].to_numpy(dtype=float),
                      np.asarray([row["duration_months"] for row in h.current_rows], dtype=float)).statistic
    assert d["inputs"]["duration_months"]["ks"] == round(float(ks), 6)
    assert d["inputs"]["purpose"]["ks"] is None and not d["inputs"]["purpose"]["flag"]
    assert d["score"]["psi"] is not None and d["decisions"] == n

    # A sensitive input among the main factors (age, declared with its legal basis in this version).
    assert r["sensitive_factors"]["sensitive_inputs"] == ["age"] and r["sensitive_factors"]["explained"] == n
    assert r["sensitive_factors"]["in_top_factors"]["age"] == {"count": h.age_in_top, "share": round(h.age_in_top / n, 6)}

    # The incident register, linked from the report.
    [incident] = r["incidents"]
    assert incident["incident_id"] == "inc_generated0001" and incident["status"] == "reported"
    assert incident["link"] == "https://gateway.test/v1/incidents/inc_generated0001" and not incident["report_overdue"]

    # Reproducible: the same data give the same bytes, in every format and from the CLI.
    assert get_report(gateway).data == resp.data
    csv_body, html_body = get_report(gateway, "csv"), get_report(gateway, "html")
    assert csv_body.data == get_report(gateway, "csv").data and html_body.data == get_report(gateway, "html").data
    assert b"reviews.overturn_rate," + str(expected_reviews["overturn_rate"]).encode() in csv_body.data
    assert b"<script" not in html_body.data and b'<section id="fairness">' in html_body.data
    runner = CliRunner()
    args = ["report", "--model", "german-credit", "--from", str(START), "--to", str(END), "--format", "json"]
    out = runner.invoke(main, args, obj=ScriptInfo(create_app=lambda: gateway.app))
    assert out.exit_code == 0, out.output
    assert out.output.encode() == resp.data
    assert json.loads(out.output)["reviews"] == expected_reviews

    # The same figures are Prometheus metrics (a window and a sample wide enough to hold the whole history).
    metrics = gateway.client.get("/metrics", headers=gateway.auth("auditor")).get_data(as_text=True)
    with gateway.app.app_context():
        wide = oversight.recent_reports(4000)["german-credit"]
    assert f'gateway_oversight_decisions{{model="german-credit"}} {float(wide["volume"]["decisions"])}' in metrics
    assert wide["volume"]["decisions"] == IN_PERIOD + OUTSIDE
    assert (f'gateway_oversight_demographic_parity_difference{{attribute="sex",model="german-credit"}} '
            f'{wide["fairness"]["sex"]["demographic_parity_difference"]}') in metrics
    assert 'gateway_oversight_inputs_drifting{model="german-credit",version="1.5.0"} 1.0' in metrics


def test_the_report_is_for_auditors_and_checks_its_period(gateway: Gateway) -> None:
    assert gateway.client.get(f"/v1/reports/oversight?model=german-credit&from={START}&to={END}").status_code == 401
    assert gateway.client.get(f"/v1/reports/oversight?model=german-credit&from={START}&to={END}",
                              headers=gateway.auth("agency_a")).status_code == 403
    backwards = gateway.client.get("/v1/reports/oversight?model=german-credit&from=2026-10-31&to=2026-10-01",
                                   headers=gateway.auth("auditor"))
    assert backwards.status_code == 422 and backwards.get_json()["error"]["details"][0]["field"] == "to"
    unknown = gateway.client.get(f"/v1/reports/oversight?model=nothing&from={START}&to={END}",
                                 headers=gateway.auth("auditor"))
    assert unknown.status_code == 404
    empty = gateway.client.get(f"/v1/reports/oversight?model=german-credit&from={START}&to={END}",
                               headers=gateway.auth("auditor")).get_json()
    assert empty["volume"]["decisions"] == 0 and empty["reviews"]["overturn_rate"] is None
