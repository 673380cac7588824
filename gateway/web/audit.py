"""The auditors' pages: search the decisions, open any one read-only, export the result (CSV, Parquet).

Every page an auditor reads is in the access log (gateway.records records the search and export pages;
the decision page records its read, and its access log records itself). Exports stream: rows are written
one keyset page at a time (CSV text, or one Parquet row group per page through pyarrow's writer), so a
10^5-row export never holds all its rows.

| route                                 | page                                                                   |
|---------------------------------------|------------------------------------------------------------------------|
| GET /audit[?model=&version=&from=&to=&outcome=&adverse=&reviewed=&overturned=&reference=&after=] | `form#search`, `table#results`, `a#next-page` (keyset), `a#export-csv`, `a#export-parquet` |
| GET /audit/export.csv?…, /audit/export.parquet?… | the whole result as an attachment (streamed)                |
| GET /audit/decisions/{id}             | read-only: `#decision`, `#inputs`, `#explanation` (full, `tr.withheld`), `#notices`, `#reviews`, `#access-log` |
| GET /audit/report[?model=&from=&to=]  | the oversight report (gateway.oversight.report, the figures of GET /v1/reports/oversight): `form#report-form`, one `section` per part, `table#incidents`, `a#report-json`, `a#report-csv` |
| GET /audit/report.json?…, /audit/report.csv?… | the same report as a download (the same bytes as the API's `format=json` / `format=csv`) |

The oversight report holds aggregate figures only (no person's decision is shown), so, as with the API's
report, no decision's access log records it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from flask import Blueprint, Response, render_template, request, stream_with_context
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from gateway import access, explanations, oversight, records, registry
from gateway.auth import Principal
from gateway.errors import NotFound
from gateway.models import Role
from gateway.presenters import access as access_views
from gateway.presenters.decision import decision_view
from gateway.presenters.explanation import display_value, render
from gateway.web import labels, staff
from gateway.web.common import choose_language

bp = Blueprint("audit", __name__)
PAGE = 50
PARQUET_SCHEMA = pa.schema([
    ("decision_id", pa.string()), ("created_at", pa.string()), ("model_name", pa.string()),
    ("model_version", pa.string()), ("outcome", pa.string()), ("effective_outcome", pa.string()),
    ("adverse", pa.bool_()), ("score", pa.float64()), ("role_of_ai", pa.string()), ("reference", pa.string()),
    ("reviewed", pa.bool_()), ("overturned", pa.bool_()),
])


@bp.before_request
def _auditors_only() -> None:
    """Only auditors (401 without a session, 403 for another role). Every route here only reads (GET)."""
    choose_language()
    staff.official(Role.AUDITOR.value)


def _auditor() -> Principal:
    return staff.official(Role.AUDITOR.value)


def _flag(name: str) -> bool | None:
    return {"yes": True, "no": False}.get(request.args.get(name) or "")


def _day(name: str, errors: dict[str, str]) -> dt.date | None:
    text = (request.args.get(name) or "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        errors[name] = _("Enter the date as YYYY-MM-DD.")
        return None


def _filters() -> tuple[records.Filters, dict[str, str]]:
    errors: dict[str, str] = {}

    def text(name: str) -> str | None:
        return (request.args.get(name) or "").strip()[:200] or None

    filters = records.Filters(
        model=text("model"), version=text("version"), date_from=_day("from", errors), date_to=_day("to", errors),
        outcome=text("outcome"), adverse=_flag("adverse"), reviewed=_flag("reviewed"), overturned=_flag("overturned"),
        reference=text("reference"),
    )
    return filters, errors


def _after() -> records.Cursor | None:
    text = request.args.get("after") or ""
    at, sep, last = text.partition("~")
    if not sep:
        return None
    try:
        return dt.datetime.fromisoformat(at), last
    except ValueError:
        return None


@bp.get("/audit")
def search() -> Any:
    who = _auditor()
    filters, errors = _filters()
    rows, more = records.search(who, filters, after=_after(), limit=PAGE) if not errors else ([], False)
    query = {k: v for k, v in request.args.items() if k not in ("after", "lang") and v}
    next_after = f"{rows[-1].created_at.isoformat()}~{rows[-1].id}" if more and rows else None
    models = sorted({m.name for m in registry.list_models(serving_only=False)})
    return render_template("web/audit_search.html", rows=rows, args=query, next_after=next_after, errors=errors,
                           models=models, first=_after() is None)


def _csv(chunks: Iterator[list[dict[str, Any]]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=records.EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rows in chunks:
        writer.writerows(rows)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


class _Drain(io.RawIOBase):
    """A write-only stream whose bytes are taken out after each row group (nothing accumulates)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _parquet(chunks: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    sink = _Drain()
    writer = pq.ParquetWriter(sink, PARQUET_SCHEMA)
    for rows in chunks:
        writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=PARQUET_SCHEMA))
        yield sink.take()
    writer.close()
    yield sink.take()


def _export(kind: str) -> Response:
    who = _auditor()
    filters, errors = _filters()
    if errors:
        return Response(render_template("web/audit_search.html", rows=[], args={}, next_after=None, errors=errors,
                                        models=[], first=True), status=422)
    chunks = records.export_rows(who, filters)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if kind == "csv":
        resp = Response(stream_with_context(_csv(chunks)), mimetype="text/csv")
    else:
        resp = Response(stream_with_context(_parquet(chunks)), mimetype="application/vnd.apache.parquet")
    resp.headers["Content-Disposition"] = f'attachment; filename="decisions-{stamp}.{kind}"'
    return resp


@bp.get("/audit/export.csv")
def export_csv() -> Response:
    return _export("csv")


@bp.get("/audit/export.parquet")
def export_parquet() -> Response:
    return _export("parquet")


@bp.get("/audit/decisions/<decision_id>")
def decision(decision_id: str) -> Any:
    who = _auditor()
    lang = choose_language()
    row = access.visible_decision(who, decision_id)
    view = decision_view(who, decision_id).model_dump(mode="json", exclude_unset=True)
    manifest = registry.manifest_of(row.model_id)
    access.record_access(who, decision_id, "audit_decision")
    factors: list[dict[str, Any]] = []
    explained: dict[str, Any] | None = None
    try:
        decision_row, explanation, _manifest = explanations.stored(who, decision_id)
        explained = render(decision_row, explanation, manifest, lang)
        shown = {f["feature"] for f in explained["factors"]}
        for name, value in sorted((explanation.attributions or {}).items(), key=lambda kv: -abs(float(kv[1]))):
            feature = manifest.feature(name)
            factors.append({"name": name, "label": feature.labels.get(lang) or name, "contribution": float(value),
                            "withheld": feature.disclosure == "withhold", "shown": name in shown})
    except (explanations.ExplanationPending, explanations.ExplanationUnavailable, explanations.ExplanationFailed):
        explained = None
    inputs = [{"label": f.labels.get(lang) or f.name, "value": display_value(f, row.inputs[f.name], lang),
               "withheld": f.disclosure == "withhold"} for f in manifest.features if f.name in row.inputs]
    events, total = access.read_access_log(who, decision_id, limit=200, offset=0)
    log = access_views.access_log_view(decision_id, events, total, limit=200, offset=0).model_dump(mode="json")
    return render_template("web/audit_decision.html", d=view, inputs=inputs, factors=factors, explained=explained,
                           log=log, labels=labels, outcome_label=lambda code: labels.outcome(manifest, code, lang))


# --- the oversight report ---------------------------------------------------------------------------------

SECTION_TITLES = {
    "data": lazy_gettext("The data"), "volume": lazy_gettext("Volume and outcomes"), "notices": lazy_gettext("Notices"),
    "explanations": lazy_gettext("Explanations"), "reviews": lazy_gettext("Reviews"), "confirmations": lazy_gettext("Confirmations by an officer"),
    "fairness": lazy_gettext("Fairness (monitor-only attributes)"), "drift": lazy_gettext("Drift"),
    "sensitive_factors": lazy_gettext("Sensitive factors"), "incidents": lazy_gettext("Incidents"),
}


def _report_query() -> tuple[dict[str, str], dict[str, str], tuple[str, dt.date, dt.date] | None]:
    """The form's values as sent, the problems by field, and (model, from, to) once all three are valid."""
    values = {k: (request.args.get(k) or "").strip()[:200] for k in ("model", "from", "to")}
    errors: dict[str, str] = {}
    if not values["model"]:
        errors["model"] = _("Choose the model.")
    days = {name: _day(name, errors) for name in ("from", "to")}
    for name in ("from", "to"):
        if not values[name] and name not in errors:
            errors[name] = _("Enter the date as YYYY-MM-DD.")
    start, end = days["from"], days["to"]
    if start and end and end < start:
        errors["to"] = _("The period ends before it starts.")
    if errors or start is None or end is None:
        return values, errors, None
    return values, errors, (values["model"], start, end)


def _report(query: tuple[str, dt.date, dt.date], errors: dict[str, str]) -> dict[str, Any] | None:
    try:
        return oversight.report(*query)
    except NotFound:
        errors["model"] = _("No model of this name is registered.")
        return None


@bp.get("/audit/report")
def report() -> Any:
    _auditor()
    values, errors, query = _report_query()
    asked = any(values.values())
    data = _report(query, errors) if query else None
    models = sorted({m.name for m in registry.list_models(serving_only=False)})
    sections = [(name, SECTION_TITLES[name], oversight.figures(data[name])) for name in oversight.SECTIONS
                if name != "incidents"] if data else []
    return Response(render_template(
        "web/audit_report.html", values=values, errors=errors if asked else {}, data=data, sections=sections,
        models=models, query={k: v for k, v in values.items() if v}), status=422 if asked and errors else 200)


def _report_file(kind: str) -> Response:
    _auditor()
    values, errors, query = _report_query()
    data = _report(query, errors) if query else None
    if data is None or query is None:
        models = sorted({m.name for m in registry.list_models(serving_only=False)})
        return Response(render_template("web/audit_report.html", values=values, errors=errors, data=None, sections=[],
                                        models=models, query={}), status=422)
    write, mimetype = oversight.FORMATS[kind]
    resp = Response(write(data), mimetype=mimetype.split(";")[0])
    model, start, end = query
    resp.headers["Content-Disposition"] = f'attachment; filename="oversight-{model}-{start}-{end}.{kind}"'
    return resp


@bp.get("/audit/report.json")
def report_json() -> Response:
    return _report_file("json")


@bp.get("/audit/report.csv")
def report_csv() -> Response:
    return _report_file("csv")
