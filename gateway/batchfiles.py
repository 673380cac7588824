"""Decision-batch uploads (CSV, Parquet, JSON lines) read into rows of the JSON batch shape.

A file has one row per person and flat columns: ``idempotency_key``, ``iin``, ``language``, ``email``
and/or ``webhook``, optional ``operator``, ``operator_id`` and ``reference``, one column per feature of the model and an
optional one per monitor-only feature. Each row becomes ``{"idempotency_key", "subject": {"iin", "language",
"contact": {...}}, "features", "monitoring", "operator", "operator_id", "reference"}``, the shape of a row in a JSON body,
so one validation path follows.

What makes the file unreadable is refused as a whole, naming the problem: an unknown format, columns
missing or unknown, a cell that is not of its column's type (with its row and column). What a row says
wrongly (an IIN's check digit, a value out of range) is that row's result, not the upload's.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from gateway import jsonbounds
from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from gateway.manifest import Feature, Manifest

FORMATS = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".json": "json"}
SUBJECT_COLUMNS = ("idempotency_key", "iin", "language")
CONTACT_COLUMNS = ("email", "webhook")
OPTIONAL_COLUMNS = ("operator", "operator_id", "reference")
MAX_PROBLEMS = 20  # a file with a systematic error is not answered with a million details
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def format_of(mimetype: str | None = None, filename: str | None = None) -> str:
    """The upload's format from its media type or file name; 415 naming the formats taken otherwise."""
    if mimetype and mimetype in FORMATS:
        return FORMATS[mimetype]
    if mimetype == "application/json":
        return "json"
    if filename:
        for suffix, name in SUFFIXES.items():
            if filename.lower().endswith(suffix):
                return name
    shown = mimetype or (f"a file named {filename!r}" if filename else "no media type")
    raise UnsupportedMediaType(
        f"cannot read a decision batch from {shown}: send JSON rows (application/json), CSV (text/csv), "
        "JSON lines (application/x-ndjson) or Parquet (application/vnd.apache.parquet)",
        code="batch_format_unknown",
    )


def read_rows(data: bytes, fmt: str, manifest: Manifest, *, max_rows: int) -> list[dict[str, Any]]:
    """The rows of an uploaded file, in the JSON batch shape; a clear error naming what makes it unreadable."""
    if fmt == "jsonl":
        rows = _jsonl(data, max_rows)
    elif fmt == "json":
        try:
            body = jsonbounds.loads(data)
        except ValueError as exc:
            raise BadRequest(f"the file is not valid JSON: {exc}", code="malformed_json") from None
        if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
            raise ValidationFailed("a JSON batch is an object with a list of rows: {\"rows\": [...]}",
                                   details=[{"field": "rows", "rule": "type", "message": "must be a list of rows"}])
        rows = body["rows"]
    elif fmt in ("csv", "parquet"):
        columns, records = _csv(data) if fmt == "csv" else _parquet(data)
        _check_columns(columns, manifest)
        _check_count(len(records), max_rows)
        rows = _flat_rows(columns, records, manifest)
    else:
        raise UnsupportedMediaType(f"unknown batch format {fmt!r}", code="batch_format_unknown")
    _check_count(len(rows), max_rows)
    return rows


def _check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise ValidationFailed("the batch has no rows", code="batch_empty",
                               details=[{"field": "rows", "rule": "min_rows", "message": "give at least one row"}])
    if n > max_rows:
        raise PayloadTooLarge(f"the batch has {n} rows; at most {max_rows} are taken in one batch "
                              "(split it into several batches)", code="batch_too_large")


def _jsonl(data: bytes, max_rows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = jsonbounds.loads(line)
        except ValueError as exc:
            raise BadRequest(f"line {n} of the JSON lines file is not valid JSON: {exc}", code="malformed_json") from None
        if not isinstance(row, dict):
            raise ValidationFailed(f"line {n} of the JSON lines file is not a JSON object",
                                   details=[{"field": f"line {n}", "rule": "type", "message": "must be a JSON object"}])
        rows.append(row)
        if len(rows) > max_rows:
            break
    return rows


def _csv(data: bytes) -> tuple[list[str], list[list[Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"the CSV file is not UTF-8 text (byte {exc.start})", code="batch_encoding",
                               details=[{"field": "file", "rule": "utf-8", "message": "must be UTF-8 text"}]) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationFailed("the CSV file is empty: it needs a header row and at least one row",
                               code="batch_empty", details=[{"field": "file", "rule": "header", "message": "no header"}]
                               ) from None
    except csv.Error as exc:
        raise BadRequest(f"the CSV file cannot be read: {exc}", code="batch_malformed") from None
    records: list[list[Any]] = []
    try:
        for line in reader:
            if not any(cell.strip() for cell in line):
                continue
            if len(line) != len(header):
                raise ValidationFailed(
                    f"CSV row {len(records) + 1} has {len(line)} cells; the header has {len(header)} columns",
                    code="batch_columns",
                    details=[{"field": f"rows[{len(records)}]", "rule": "columns",
                              "message": f"has {len(line)} cells, expected {len(header)}"}])
            records.append(line)
    except csv.Error as exc:
        raise BadRequest(f"the CSV file cannot be read at line {reader.line_num}: {exc}", code="batch_malformed") from None
    return [h.strip() for h in header], records


def _parquet(data: bytes) -> tuple[list[str], list[list[Any]]]:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a file that is not Parquet
        raise BadRequest(f"the file is not a readable Parquet file: {type(exc).__name__}: {exc}",
                         code="batch_malformed") from None
    columns = [str(c) for c in frame.columns]
    return columns, frame.astype(object).to_numpy().tolist()


def _check_columns(columns: list[str], manifest: Manifest) -> None:
    features = [f.name for f in manifest.features]
    monitored = [f.name for f in manifest.monitored]  # optional columns: fairness monitoring only
    known = set(SUBJECT_COLUMNS) | set(CONTACT_COLUMNS) | set(OPTIONAL_COLUMNS) | set(features) | set(monitored)
    problems = []
    missing = [c for c in (*SUBJECT_COLUMNS, *features) if c not in columns]
    if missing:
        problems.append({"field": "columns", "rule": "required", "message": f"missing columns: {', '.join(missing)}"})
    if not any(c in columns for c in CONTACT_COLUMNS):
        problems.append({"field": "columns", "rule": "contact", "message": "give an email or a webhook column (or both)"})
    unknown = [c for c in columns if c not in known]
    if unknown:
        problems.append({"field": "columns", "rule": "unknown",
                         "message": f"unknown columns: {', '.join(unknown)} (model {manifest.name} "
                                    f"{manifest.version} has features {', '.join(features)})"})
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        problems.append({"field": "columns", "rule": "unique", "message": f"repeated columns: {', '.join(duplicated)}"})
    if problems:
        raise ValidationFailed("; ".join(p["message"] for p in problems), code="batch_columns", details=problems)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else str(value)


def _cell(feature: Feature, value: Any) -> tuple[Any, str | None]:
    """A cell as the feature's JSON value, or why it cannot be one."""
    if feature.type == "number":
        if isinstance(value, bool):
            return None, f"must be a number, got {value!r}"
        if isinstance(value, int | float):
            return (int(value) if isinstance(value, int) else float(value)), None
        if hasattr(value, "item"):  # numpy scalars
            return _cell(feature, value.item())
        text = _text(value)
        try:
            number = float(text)
        except ValueError:
            return None, f"must be a number, got {text[:40]!r}"
        return (int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number), None
    if feature.type == "boolean":
        if isinstance(value, bool):
            return value, None
        if hasattr(value, "item"):
            return _cell(feature, value.item())
        text = _text(value).lower()
        if text in TRUE:
            return True, None
        if text in FALSE:
            return False, None
        return None, f"must be true or false, got {text[:40]!r}"
    return _text(value), None


def _flat_rows(columns: list[str], records: Iterable[list[Any]], manifest: Manifest) -> list[dict[str, Any]]:
    features = {f.name: f for f in manifest.features}
    monitored = {f.name: f for f in manifest.monitored}
    position = {c: i for i, c in enumerate(columns)}
    rows: list[dict[str, Any]] = []
    problems: list[dict[str, str]] = []
    for n, record in enumerate(records):
        def get(column: str, record: list[Any] = record) -> Any:
            i = position.get(column)
            return None if i is None or _empty(record[i]) else record[i]

        contact = {c: _text(get(c)) for c in CONTACT_COLUMNS if get(c) is not None}
        row: dict[str, Any] = {
            "idempotency_key": _text(get("idempotency_key")) if get("idempotency_key") is not None else "",
            "subject": {"iin": _text(get("iin")) if get("iin") is not None else "",
                        "language": _text(get("language")) if get("language") is not None else "",
                        "contact": contact},
            "features": {},
            "monitoring": {},
        }
        for column in OPTIONAL_COLUMNS:
            if get(column) is not None:
                row[column] = _text(get(column))
        for part, known in (("features", features), ("monitoring", monitored)):
            for name, feature in known.items():
                value = get(name)
                if value is None:
                    continue  # a missing value is the row's own problem ("is required"), found with the others
                converted, problem = _cell(feature, value)
                if problem is not None:
                    if len(problems) < MAX_PROBLEMS:
                        problems.append({"field": f"rows[{n}].{name}", "rule": "type", "message": problem})
                    else:
                        break
                else:
                    row[part][name] = converted
        rows.append(row)
    if problems:
        raise ValidationFailed(f"cells of the wrong type (first {len(problems)} shown): "
                               + "; ".join(f"{p['field']} {p['message']}" for p in problems[:3]),
                               code="batch_types", details=problems)
    return rows
