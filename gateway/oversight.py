"""The oversight report (AI Law Art. 17: the owner monitors continuously), ground truth and the incident register.

One function computes every figure for a model and a period (`report`); `to_json`, `to_csv` and `to_html`
write it out. The report is reproducible: it depends only on what is stored and on its period (no "now":
states are read as of the period's end), and every number is rounded to a fixed precision, so the same
inputs give the same bytes.

Fairness figures are computed with fairlearn's MetricFrame on the monitor-only attributes (decrypted here,
never shown per person); groups smaller than FAIRNESS_MIN_GROUP are reported as too small and left out of the
differences and ratios. Drift compares each model input and the score with the version's background data:
population stability index (PSI, 10 bins on the background's deciles, or the categories) and the two-sample
Kolmogorov–Smirnov statistic (numbers and the score).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy.stats import ks_2samp
from sqlalchemy import and_, func, or_, select, text

from gateway import keystore, registry, rollups, runtime
from gateway.audit import record_leaf
from gateway.auth import Principal
from gateway.contacts import decrypt_monitoring
from gateway.errors import Conflict, NotFound, ValidationFailed
from gateway.extensions import db
from gateway.ids import isoformat, new_id, utcnow
from gateway.manifest import Manifest, Policy
from gateway.models import (
    OPEN_REVIEW_SQL,
    AccessEvent,
    Decision,
    Explanation,
    GroundTruth,
    Incident,
    MonitoringValues,
    Notification,
    ReviewRequest,
    ScoringModel,
)
from gateway.settings import Settings, current_settings

DIGITS = 6
PSI_FLAG = 0.2  # a population stability index at or above this is flagged (0.1–0.2: moderate; ≥ 0.2: major)
KS_FLAG = 0.1  # a Kolmogorov–Smirnov statistic at or above this is flagged
SCORE_BINS = 10
NOTICE = "decision_notice"


def _r(value: float | None) -> float | None:
    """Round for the report (fixed precision: reproducible bytes); NaN and infinities become null."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, DIGITS) + 0.0  # + 0.0: never "-0.0"


def _rate(part: int, whole: int) -> float | None:
    return _r(part / whole) if whole else None


def _percentile(values: list[float], q: float) -> float | None:
    return _r(float(np.percentile(np.asarray(values, dtype=float), q))) if values else None


def period_bounds(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start 00:00Z, the day after `end` 00:00Z): a period of whole UTC days, both dates included."""
    if end < start:
        raise ValidationFailed("the period ends before it starts",
                               details=[{"field": "to", "rule": "after_from", "message": "must not be before from"}])
    lo = dt.datetime.combine(start, dt.time(), dt.UTC)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    return lo, hi


# --- the report ------------------------------------------------------------------------------------------

def report(model: str, start: dt.date, end: dt.date, *, settings: Settings | None = None) -> dict[str, Any]:
    """Every oversight figure for the decisions of `model` (all its versions) made in [start, end]."""
    settings = settings or current_settings()
    lo, hi = period_bounds(start, end)
    versions = list(db.session.execute(
        select(ScoringModel).where(ScoringModel.name == model).order_by(ScoringModel.registered_at, ScoringModel.id)
    ).scalars())
    if not versions:
        raise NotFound(f"no model named {model!r} is registered")
    rows: list[Any] = list(db.session.execute(
        select(Decision.id, Decision.model_id, Decision.score, Decision.outcome, Decision.adverse, Decision.inputs,
               Decision.created_at, Decision.confirmation)
        .where(Decision.model_name == model, Decision.created_at >= lo, Decision.created_at < hi)
        .order_by(Decision.created_at, Decision.id)
    ).all())
    ids = [r.id for r in rows]
    manifests = {v.id: registry.manifest_of(v.id) for v in versions}
    return {
        "report": "oversight",
        "model": model,
        "period": {"from": start.isoformat(), "to": end.isoformat(), "from_utc": isoformat(lo), "until_utc": isoformat(hi),
                   "as_of": isoformat(hi)},
        "data": {"decisions": len(rows), "versions": [v.version for v in versions if any(r.model_id == v.id for r in rows)],
                 "note": "decisions made in the period (UTC days, both included); reviews, notices and "
                         "confirmations of those decisions as recorded, states as of the period's end"},
        "volume": _volume(rows),
        "notices": _notices(ids),
        "explanations": _explanations(ids),
        "reviews": _reviews(ids, sum(1 for r in rows if r.adverse), hi),
        "confirmations": _confirmations(ids, hi),
        "fairness": _fairness(rows, manifests, settings),
        "drift": _drift(rows, versions, manifests),
        "sensitive_factors": _sensitive_factors(rows, manifests),
        "incidents": _incidents(model, lo, hi, settings),
    }


def _volume(rows: list[Any]) -> dict[str, Any]:
    scores = [float(r.score) for r in rows]
    outcomes = Counter(r.outcome for r in rows)
    adverse = sum(1 for r in rows if r.adverse)
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    histogram = np.histogram(np.asarray(scores, dtype=float), bins=edges)[0] if scores else np.zeros(SCORE_BINS)
    return {
        "decisions": len(rows),
        "outcomes": dict(sorted(outcomes.items())),
        "adverse": adverse,
        "adverse_rate": _rate(adverse, len(rows)),
        "score": {
            "mean": _r(float(np.mean(scores))) if scores else None,
            "p10": _percentile(scores, 10), "p50": _percentile(scores, 50), "p90": _percentile(scores, 90),
            "histogram": [{"from": _r(edges[i]), "to": _r(edges[i + 1]), "count": int(histogram[i])}
                          for i in range(SCORE_BINS)],
        },
    }


def _chunks(ids: list[str], size: int = 500) -> list[list[str]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _notices(ids: list[str]) -> dict[str, Any]:
    rows: list[Any] = []
    for chunk in _chunks(ids):
        rows += db.session.execute(
            select(Notification.status, Notification.created_at, Notification.delivered_at)
            .where(Notification.decision_id.in_(chunk), Notification.kind == NOTICE)
        ).all()
    status = Counter(r.status for r in rows)
    delays = [(r.delivered_at - r.created_at).total_seconds() for r in rows if r.delivered_at is not None]
    return {
        "sent": len(rows), "delivered": status.get("delivered", 0), "dead_lettered": status.get("dead", 0),
        "waiting": status.get("pending", 0) + status.get("retrying", 0),
        "delivery_seconds_p50": _percentile(delays, 50), "delivery_seconds_p95": _percentile(delays, 95),
    }


def _explanations(ids: list[str]) -> dict[str, Any]:
    requested: set[str] = set()
    events = 0
    for chunk in _chunks(ids):
        found = db.session.execute(
            select(AccessEvent.decision_id)
            .where(AccessEvent.decision_id.in_(chunk), AccessEvent.what == "explanation",
                   AccessEvent.principal_kind == "citizen")
        ).scalars().all()
        events += len(found)
        requested.update(found)
    return {"requested_by_the_person": len(requested), "reads": events,
            "share_of_decisions": _rate(len(requested), len(ids))}


def _cases(ids: list[str], kind: str) -> list[ReviewRequest]:
    found: list[ReviewRequest] = []
    for chunk in _chunks(ids):
        found += db.session.execute(
            select(ReviewRequest).where(ReviewRequest.decision_id.in_(chunk), ReviewRequest.kind == kind)
            .order_by(ReviewRequest.requested_at, ReviewRequest.id)
        ).scalars().all()
    return found


def _reviews(ids: list[str], adverse: int, as_of: dt.datetime) -> dict[str, Any]:
    cases = _cases(ids, "review")
    resolved = [c for c in cases if c.status == "resolved" and c.resolved_at is not None and c.resolved_at < as_of]
    withdrawn = [c for c in cases if c.status == "withdrawn"]
    open_ = [c for c in cases if c not in resolved and c not in withdrawn]
    due = {c.id: c.extended_until or c.due_at for c in cases}
    on_time = [c for c in resolved if c.resolved_at is not None and c.resolved_at <= due[c.id]]
    overdue_open = [c for c in open_ if due[c.id] < as_of]
    outcomes = Counter(c.outcome for c in resolved)
    hours = [(c.resolved_at - c.requested_at).total_seconds() / 3600 for c in resolved if c.resolved_at is not None]
    return {
        "requested": len(cases),
        "rate_per_adverse_decision": _rate(len(cases), adverse),
        "resolved": len(resolved),
        "resolved_on_time": len(on_time),
        "on_time_rate": _rate(len(on_time), len(resolved)),
        "resolved_late": len(resolved) - len(on_time),
        "open": len(open_),
        "overdue": len(overdue_open),
        "extended": sum(1 for c in cases if c.extended_until is not None),
        "withdrawn": len(withdrawn),
        "upheld": outcomes.get("upheld", 0), "changed": outcomes.get("changed", 0),
        "annulled": outcomes.get("annulled", 0),
        "overturn_rate": _rate(outcomes.get("changed", 0) + outcomes.get("annulled", 0), len(resolved)),
        "median_hours_to_resolve": _percentile(hours, 50),
    }


def _confirmations(ids: list[str], as_of: dt.datetime) -> dict[str, Any]:
    cases = _cases(ids, "confirmation")
    done = [c for c in cases if c.status == "resolved" and c.resolved_at is not None and c.resolved_at < as_of]
    changed = sum(1 for c in done if c.outcome == "changed")
    seconds = [(c.resolved_at - c.requested_at).total_seconds() for c in done if c.resolved_at is not None]
    return {"held": len(cases), "waiting": len(cases) - len(done), "confirmed": len(done) - changed,
            "changed": changed, "share_changed": _rate(changed, len(done)),
            "median_seconds_to_confirm": _percentile(seconds, 50)}


# --- fairness -------------------------------------------------------------------------------------------

def monitored_values(ids: list[str], settings: Settings) -> dict[str, dict[str, Any]]:
    """The monitor-only values of these decisions, decrypted (never leave this module per person)."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        rows = db.session.execute(
            select(MonitoringValues.decision_id, MonitoringValues.ciphertext)
            .where(MonitoringValues.decision_id.in_(chunk))
        ).all()
        keys = keystore.wrapped_many([row.decision_id for row in rows])
        for row in rows:
            # {} once the decision's data key was destroyed (the retention purge): counted as "(not given)".
            found[row.decision_id] = decrypt_monitoring(settings.contact_key, row.decision_id, bytes(row.ciphertext),
                                                        keys.get(row.decision_id))
    return found


def _truths(ids: list[str]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for chunk in _chunks(ids):
        for row in db.session.execute(
            select(GroundTruth.decision_id, GroundTruth.positive).where(GroundTruth.decision_id.in_(chunk))
        ).all():
            found[row.decision_id] = bool(row.positive)
    return found


def _frame_figures(frame: MetricFrame, eligible: list[str]) -> dict[str, Any]:
    by_group = frame.by_group
    return {str(g): {str(k): (_r(v) if k != "count" else int(v)) for k, v in by_group.loc[g].items()} for g in eligible}


def fairness_of(groups: list[str], favourable: list[bool], minimum: int,
                truth: list[bool | None] | None = None, predicted_positive: list[bool] | None = None) -> dict[str, Any]:
    """Selection rate per group and demographic parity (difference, ratio) with fairlearn's MetricFrame; with
    ground truth, TPR and FPR per group and the equalized-odds difference. Groups below `minimum` are too small."""
    sizes = Counter(groups)
    small = sorted(g for g, n in sizes.items() if n < minimum)
    eligible = sorted(g for g, n in sizes.items() if n >= minimum)
    result: dict[str, Any] = {"groups": {g: sizes[g] for g in sorted(sizes)}, "too_small": small,
                              "minimum_group": minimum}
    keep = [i for i, g in enumerate(groups) if g in eligible]
    if len(eligible) >= 1:
        y = np.asarray([favourable[i] for i in keep], dtype=int)
        sf = pd.Series([groups[i] for i in keep], name="group")
        frame = MetricFrame(metrics={"selection_rate": selection_rate, "count": count}, y_true=y, y_pred=y,
                            sensitive_features=sf)
        result["selection_rate"] = {g: _r(frame.by_group.loc[g, "selection_rate"]) for g in eligible}
        if len(eligible) >= 2:
            result["demographic_parity_difference"] = _r(frame.difference()["selection_rate"])
            result["demographic_parity_ratio"] = _r(frame.ratio()["selection_rate"])
    if truth is not None and predicted_positive is not None:
        known = [i for i, t in enumerate(truth) if t is not None]
        gt_sizes = Counter(groups[i] for i in known)
        gt_eligible = sorted(g for g, n in gt_sizes.items() if n >= minimum)
        result["ground_truth"] = {"known": len(known), "groups": {g: gt_sizes[g] for g in sorted(gt_sizes)},
                                  "too_small": sorted(g for g, n in gt_sizes.items() if n < minimum)}
        rows = [i for i in known if groups[i] in gt_eligible]
        if gt_eligible:
            frame = MetricFrame(
                metrics={"true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate},
                y_true=np.asarray([bool(truth[i]) for i in rows], dtype=int),
                y_pred=np.asarray([predicted_positive[i] for i in rows], dtype=int),
                sensitive_features=pd.Series([groups[i] for i in rows], name="group"))
            result["ground_truth"]["true_positive_rate"] = {
                g: _r(frame.by_group.loc[g, "true_positive_rate"]) for g in gt_eligible}
            result["ground_truth"]["false_positive_rate"] = {
                g: _r(frame.by_group.loc[g, "false_positive_rate"]) for g in gt_eligible}
            if len(gt_eligible) >= 2:
                result["ground_truth"]["equalized_odds_difference"] = _r(float(frame.difference().max()))
    return result


def _fairness(rows: list[Any], manifests: dict[str, Manifest], settings: Settings) -> dict[str, Any]:
    attributes = sorted({f.name for m in manifests.values() for f in m.monitored})
    if not attributes:
        return {}
    values = monitored_values([r.id for r in rows], settings)
    truths = _truths([r.id for r in rows])
    result: dict[str, Any] = {}
    for name in attributes:
        groups: list[str] = []
        favourable: list[bool] = []
        truth: list[bool | None] = []
        predicted: list[bool] = []
        for r in rows:
            value = values.get(r.id, {}).get(name)
            groups.append("(not given)" if value is None else str(value))
            favourable.append(not r.adverse)
            truth.append(truths.get(r.id))
            # Binary: the positive class was predicted (its outcome above the threshold); other kinds: the
            # favourable outcome stands for the positive prediction.
            policy = manifests[r.model_id].policy
            predicted.append(r.outcome == policy.outcome_above if isinstance(policy, Policy) else not r.adverse)
        result[name] = fairness_of(groups, favourable, settings.fairness_min_group, truth, predicted)
    return result


# --- drift ----------------------------------------------------------------------------------------------

def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two shares over the same bins (empty bins smoothed by 1e-4)."""
    e = np.clip(expected, 1e-4, None)
    a = np.clip(actual, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_psi(background: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI with bins on the background's quantiles (unique edges; the outer ones open)."""
    edges = np.unique(np.quantile(background, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    e = np.bincount(np.searchsorted(inner, background, side="right"), minlength=len(inner) + 1) / len(background)
    a = np.bincount(np.searchsorted(inner, current, side="right"), minlength=len(inner) + 1) / len(current)
    return psi(e, a)


def category_psi(background: list[str], current: list[str]) -> float:
    levels = sorted(set(background) | set(current))
    b, c = Counter(background), Counter(current)
    return psi(np.asarray([b[v] / len(background) for v in levels]), np.asarray([c[v] / len(current) for v in levels]))


def _drift(rows: list[Any], versions: list[ScoringModel], manifests: dict[str, Manifest]) -> dict[str, Any]:
    result: dict[str, Any] = {"psi_flag": PSI_FLAG, "ks_flag": KS_FLAG, "versions": {}}
    for version in versions:
        mine = [r for r in rows if r.model_id == version.id]
        if not mine:
            continue
        loaded = runtime.cache().get(version.id)
        background = loaded.background
        if background is None or not len(background):
            result["versions"][version.version] = {"background": None}
            continue
        manifest = manifests[version.id]
        inputs: dict[str, Any] = {}
        for feature in manifest.features:
            base = background[feature.name].tolist()
            now = [r.inputs.get(feature.name) for r in mine]
            if feature.type == "number":
                b, c = np.asarray(base, dtype=float), np.asarray(now, dtype=float)
                value, ks = numeric_psi(b, c), float(ks_2samp(b, c).statistic)
                inputs[feature.name] = {"psi": _r(value), "ks": _r(ks),
                                        "flag": bool(value >= PSI_FLAG or ks >= KS_FLAG)}
            else:
                value = category_psi([str(v) for v in base], [str(v) for v in now])
                inputs[feature.name] = {"psi": _r(value), "ks": None, "flag": bool(value >= PSI_FLAG)}
        base_scores = np.asarray(loaded.score(background.to_dict("records")), dtype=float)
        scores = np.asarray([float(r.score) for r in mine], dtype=float)
        score_psi, score_ks = numeric_psi(base_scores, scores), float(ks_2samp(base_scores, scores).statistic)
        result["versions"][version.version] = {
            "background_rows": len(background), "decisions": len(mine), "inputs": inputs,
            "score": {"psi": _r(score_psi), "ks": _r(score_ks), "flag": bool(score_psi >= PSI_FLAG or score_ks >= KS_FLAG)},
            "flagged": sorted(n for n, v in inputs.items() if v["flag"]),
        }
    return result


def _sensitive_factors(rows: list[Any], manifests: dict[str, Manifest]) -> dict[str, Any]:
    """How often a sensitive model input is among a decision's main factors (top max_factors by |size|)."""
    sensitive = {m_id: {f.name for f in m.features if f.sensitive} for m_id, m in manifests.items()}
    names = sorted({n for s in sensitive.values() for n in s})
    counts = dict.fromkeys(names, 0)
    explained = 0
    ids = [r.id for r in rows]
    model_of = {r.id: r.model_id for r in rows}
    for chunk in _chunks(ids):
        for did, attributions in db.session.execute(
            select(Explanation.decision_id, Explanation.attributions)
            .where(Explanation.decision_id.in_(chunk), Explanation.status == "ready")
        ).all():
            if not attributions:
                continue
            explained += 1
            top_n = manifests[model_of[did]].explanation.max_factors
            top = sorted(attributions, key=lambda n: (-abs(float(attributions[n])), n))[:top_n]
            for name in sensitive[model_of[did]] & set(top):
                counts[name] += 1
    return {"sensitive_inputs": names, "explained": explained,
            "in_top_factors": {n: {"count": counts[n], "share": _rate(counts[n], explained)} for n in names}}


def recent_reports(days: int, today: dt.date | None = None) -> dict[str, dict[str, Any]]:
    """The report of every serving model over the last `days` UTC days (today included): /metrics."""
    today = today or utcnow().date()
    names = sorted(set(db.session.execute(
        select(ScoringModel.name).where(ScoringModel.status.in_(registry.SERVING))).scalars()))
    return {name: report(name, today - dt.timedelta(days=days - 1), today) for name in names}


# --- writing it out --------------------------------------------------------------------------------------

def to_json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(f"{prefix}[{i}]", item, out)
    else:
        out.append((prefix, "" if value is None else json.dumps(value, ensure_ascii=False).strip('"')))


def figures(value: Any) -> list[tuple[str, str]]:
    """A section of the report as (dotted figure name, value) rows, as the CSV and the HTML page write them."""
    rows: list[tuple[str, str]] = []
    _flatten("", value, rows)
    return rows


SECTIONS = ("data", "volume", "notices", "explanations", "reviews", "confirmations", "fairness", "drift",
            "sensitive_factors", "incidents")


def to_csv(data: dict[str, Any]) -> bytes:
    """One figure a line: `figure,value` (dotted names, e.g. reviews.overturn_rate)."""
    rows: list[tuple[str, str]] = []
    _flatten("", data, rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["figure", "value"])
    writer.writerows(rows)
    return buf.getvalue().encode()


def to_html(data: dict[str, Any]) -> bytes:
    """A self-contained page (no script, no external resource): one table per section."""
    rows: list[tuple[str, str]] = []
    esc = html.escape
    title = f"Oversight report: {data['model']}, {data['period']['from']} to {data['period']['to']}"
    parts = ['<!doctype html>\n<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
             "</head><body><main>", f"<h1>{esc(title)}</h1>"]
    for section in SECTIONS:
        rows = figures(data[section])
        parts.append(f'<section id="{section}"><h2>{esc(section.replace("_", " ").capitalize())}</h2>')
        if rows:
            parts.append("<table><thead><tr><th scope=\"col\">figure</th><th scope=\"col\">value</th></tr></thead><tbody>")
            parts += [f"<tr><th scope=\"row\">{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows]
            parts.append("</tbody></table>")
        else:
            parts.append("<p>none</p>")
        parts.append("</section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts).encode()


FORMATS = {"json": (to_json, "application/json"), "csv": (to_csv, "text/csv; charset=utf-8"),
           "html": (to_html, "text/html; charset=utf-8")}


# --- ground truth ---------------------------------------------------------------------------------------

def post_ground_truth(agency: Principal, decision: Decision, positive: bool, now: dt.datetime | None = None) -> GroundTruth:
    """Record the true outcome of a decision (its agency, once; no commit)."""
    now = now or utcnow()
    if db.session.get(GroundTruth, decision.id) is not None:
        raise Conflict("the ground truth of this decision was posted already", code="ground_truth_exists")
    row = GroundTruth(decision_id=decision.id, positive=positive, posted_by=agency.id, posted_at=now)
    db.session.add(row)
    record_leaf(db.session, "decision:ground_truth", decision.id,
                {"decision_id": decision.id, "positive": positive, "posted_by": agency.id, "at": isoformat(now)}, now)
    return row


# --- incidents ------------------------------------------------------------------------------------------

SEVERITIES = ("low", "medium", "high", "critical")
INCIDENT_STATUSES = ("open", "reported", "closed")
INCIDENT_TRANSITIONS = {("open", "reported"), ("open", "closed"), ("reported", "closed")}


def report_deadline(severity: str, opened_at: dt.datetime, settings: Settings) -> dt.datetime:
    """When the regulator must have the report: INCIDENT_REPORT_HOURS per severity after the incident opened."""
    hours = dict(settings.raw.get("INCIDENT_REPORT_HOURS") or {}).get(severity)
    if hours is None:
        hours = {"critical": 24, "high": 72, "medium": 15 * 24, "low": 30 * 24}[severity]
    return opened_at + dt.timedelta(hours=float(hours))


def open_incident(who: Principal, model: str, severity: str, description: str, version: str | None = None,
                  now: dt.datetime | None = None) -> Incident:
    """Register an incident with a model (no commit); its regulator report clock starts now."""
    now = now or utcnow()
    exists = db.session.execute(select(ScoringModel.id).where(ScoringModel.name == model).limit(1)).first()
    if exists is None:
        raise NotFound(f"no model named {model!r} is registered")
    incident = Incident(id=new_id("inc"), model_name=model, model_version=version, severity=severity,
                        description=description, status="open", opened_by=who.name, opened_at=now,
                        report_due_at=report_deadline(severity, now, current_settings()))
    db.session.add(incident)
    db.session.flush()
    record_leaf(db.session, "incident:opened", incident.id, {
        "incident_id": incident.id, "model": model, "version": version, "severity": severity,
        "description": description, "opened_by": who.name, "at": isoformat(now),
        "report_due_at": isoformat(incident.report_due_at)}, now)
    return incident


def set_incident_status(who: Principal, incident_id: str, status: str, now: dt.datetime | None = None) -> Incident:
    now = now or utcnow()
    incident = get_incident(incident_id)
    if (incident.status, status) not in INCIDENT_TRANSITIONS:
        raise Conflict(f"an incident that is {incident.status} cannot become {status}", code="invalid_transition",
                       details={"status": incident.status})
    incident.status = status
    if status == "reported":
        incident.reported_at = now
    if status == "closed":
        incident.closed_at = now
    record_leaf(db.session, f"incident:{status}", incident.id,
                {"incident_id": incident.id, "status": status, "by": who.name, "at": isoformat(now)}, now)
    return incident


def get_incident(incident_id: str) -> Incident:
    incident = db.session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("The resource does not exist.")
    return incident


def list_incidents(model: str | None = None, status: str | None = None, *, limit: int | None = None,
                   after: tuple[dt.datetime, str] | None = None) -> list[Incident]:
    """Incidents oldest first; `after`: the (opened_at, id) of the previous page's last one (keyset paging)."""
    query = select(Incident).order_by(Incident.opened_at, Incident.id)
    if model:
        query = query.where(Incident.model_name == model)
    if status:
        query = query.where(Incident.status == status)
    if after is not None:
        at, incident_id = after
        # `opened_at >= at` bounds the index range ((model_name,) opened_at, id): the page starts at the cursor.
        query = query.where(Incident.opened_at >= at,
                            or_(Incident.opened_at > at, and_(Incident.opened_at == at, Incident.id > incident_id)))
    if limit is not None:
        query = query.limit(limit)
    return list(db.session.execute(query).scalars())


def incident_view(incident: Incident, base_url: str, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """An incident as plain values; `overdue`: not reported to the regulator by its deadline (as of `as_of`)."""
    as_of = as_of or utcnow()
    reported = incident.reported_at
    return {
        "incident_id": incident.id, "model": incident.model_name, "version": incident.model_version,
        "severity": incident.severity, "description": incident.description, "status": incident.status,
        "opened_at": isoformat(incident.opened_at), "opened_by": incident.opened_by,
        "report_due_at": isoformat(incident.report_due_at),
        "reported_at": isoformat(reported) if reported else None,
        "closed_at": isoformat(incident.closed_at) if incident.closed_at else None,
        "report_overdue": (reported or as_of) > incident.report_due_at,
        "link": f"{base_url}/v1/incidents/{incident.id}",
    }


def _incidents(model: str, lo: dt.datetime, hi: dt.datetime, settings: Settings) -> list[dict[str, Any]]:
    found = db.session.execute(
        select(Incident).where(Incident.model_name == model, Incident.opened_at < hi)
        .order_by(Incident.opened_at, Incident.id)
    ).scalars()
    # As of the period's end (reproducible): later reports and closures are not known to this report.
    views = []
    for incident in found:
        if incident.closed_at is not None and incident.closed_at < lo:
            continue
        view = incident_view(incident, settings.base_url, hi)
        if incident.reported_at is not None and incident.reported_at >= hi:
            view.update(status="open", reported_at=None, report_overdue=hi > incident.report_due_at)
        if incident.closed_at is not None and incident.closed_at >= hi:
            view.update(closed_at=None, status="reported" if view["reported_at"] else "open")
        views.append(view)
    return views


# --- the figures /metrics shows ----------------------------------------------------------------------------

def recent_figures(days: int, sample: int, now: dt.datetime | None = None, *,
                   settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The oversight figures on /metrics for every serving model over the last `days` UTC days (today included),
    at a cost that does not grow with the record:

    - counts (decisions, adverse rate) from the hourly rollups of decisions (gateway.rollups): exact;
    - states few by nature (dead notices, overdue reviews, confirmations waiting, open incidents) read through their
      indexes: exact;
    - statistics (notice delivery p95, review overturn and on-time rates, fairness, drift) over the `sample` most
      recent decisions of the model in the window (all of them when there are fewer), read through the
      (model_name, created_at) index. `report` stays the exact, whole-period figures.
    """
    settings = settings or current_settings()
    now = now or utcnow()
    today = now.date()
    lo, hi = period_bounds(today - dt.timedelta(days=days - 1), today)
    names = sorted(set(db.session.execute(
        select(ScoringModel.name).where(ScoringModel.status.in_(registry.SERVING))).scalars()))
    decided = rollups.per_model(rollups.counts(rollups.DECISIONS, now, since=lo))
    in_window = and_(Decision.created_at >= lo, Decision.created_at < hi)
    due = func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at)
    def per_model(decision_ids: list[str]) -> dict[str, int]:
        """How many of these rows per model, counting only decisions made in the window."""
        rows_of = Counter(decision_ids)
        found: Counter[str] = Counter()
        for chunk in _chunks(sorted(rows_of)):
            for decision_id, model in db.session.execute(select(Decision.id, Decision.model_name)
                                                         .where(Decision.id.in_(chunk), in_window)):
                found[model] += rows_of[decision_id]
        return dict(found)

    # Dead notices (dead letters an operator requeues) and open cases (overdue ones are breaches; held decisions
    # wait for an officer): few rows, read through their own indexes, then named by their decisions.
    dead = per_model(list(db.session.execute(select(Notification.decision_id).where(
        Notification.status == "dead", Notification.kind == NOTICE)).scalars()))

    def open_cases(kind: str, *where: Any) -> dict[str, int]:
        return per_model(list(db.session.execute(select(ReviewRequest.decision_id).where(
            ReviewRequest.kind == kind, text(f"reviews.{OPEN_REVIEW_SQL}"), *where)).scalars()))

    overdue, waiting = open_cases("review", due < hi), open_cases("confirmation")
    figures_: dict[str, dict[str, Any]] = {}
    for name in names:
        versions = list(db.session.execute(
            select(ScoringModel).where(ScoringModel.name == name).order_by(ScoringModel.registered_at, ScoringModel.id)
        ).scalars())
        rows: list[Any] = list(db.session.execute(
            select(Decision.id, Decision.model_id, Decision.score, Decision.outcome, Decision.adverse, Decision.inputs,
                   Decision.created_at, Decision.confirmation)
            .where(Decision.model_name == name, in_window)
            .order_by(Decision.created_at.desc()).limit(sample)  # the index's order: no sort of the window
        ).all())
        rows.reverse()
        ids = [r.id for r in rows]
        manifests = {v.id: registry.manifest_of(v.id) for v in versions}
        counts = decided.get(name, {})
        reviews = _reviews(ids, sum(1 for r in rows if r.adverse), hi)
        figures_[name] = {
            "decisions": counts.get("decisions", 0),
            "adverse_rate": _rate(counts.get("adverse", 0), counts.get("decisions", 0)),
            "sample": len(rows),
            "notices_dead": int(dead.get(name, 0)),
            "notice_delivery_seconds_p95": _notices(ids)["delivery_seconds_p95"],
            "reviews_overdue": overdue.get(name, 0),
            "reviews_overturn_rate": reviews["overturn_rate"],
            "reviews_on_time_rate": reviews["on_time_rate"],
            "confirmations_waiting": waiting.get(name, 0),
            "fairness": _fairness(rows, manifests, settings),
            "drift": _drift(rows, versions, manifests),
            "incidents_open": sum(1 for i in _incidents(name, lo, hi, settings) if i["status"] != "closed"),
        }
    return figures_
