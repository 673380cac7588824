"""What a decision batch looks like to the agency: progress, each row's result, the results file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from gateway import batches
from gateway.ids import encode_cursor, isoformat, isoformat_or_none
from gateway.models import DecisionBatch, DecisionBatchRow
from gateway.schemas.batches import BatchCreated, BatchLinks, BatchList, BatchOut, BatchRowOut, BatchSummary
from gateway.schemas.common import ModelRef

RESULT_COLUMNS = ("index", "idempotency_key", "reference", "status", "decision_id", "outcome", "score", "adverse",
                  "errors")


def _model_ref(batch: DecisionBatch) -> ModelRef:
    model = batches.batch_model(batch)
    return ModelRef(name=model.name, version=model.version, sha256=model.artifact_sha256)


def created_view(batch: DecisionBatch, base_url: str) -> BatchCreated:
    return BatchCreated(batch_id=batch.id, model=_model_ref(batch), status=batch.status, total_rows=batch.total_rows,
                        invalid_rows=batch.invalid_rows, created_at=isoformat(batch.created_at),
                        links=BatchLinks(**batches.links_of(base_url, batch.model_name, batch.id)))


def row_view(row: DecisionBatchRow) -> BatchRowOut:
    return BatchRowOut(index=row.idx, idempotency_key=row.idempotency_key, reference=row.reference,
                       status=row.status, decision_id=row.decision_id, outcome=row.outcome, score=row.score,
                       adverse=row.adverse, errors=row.errors)


def batch_view(batch: DecisionBatch, rows: list[DecisionBatchRow], *, limit: int, base_url: str) -> BatchOut:
    return BatchOut(
        batch_id=batch.id, model=_model_ref(batch), status=batch.status, source=batch.source,
        total_rows=batch.total_rows, processed_rows=batch.next_row, decided_rows=batch.decided_rows,
        replayed_rows=batch.replayed_rows, invalid_rows=batch.invalid_rows, created_at=isoformat(batch.created_at),
        finished_at=isoformat_or_none(batch.finished_at), last_error=batch.last_error,
        links=BatchLinks(**batches.links_of(base_url, batch.model_name, batch.id)),
        rows=[row_view(r) for r in rows], next_after=rows[-1].idx if len(rows) == limit else None,
    )


def batch_list_view(batches_: list[DecisionBatch], *, limit: int, base_url: str) -> BatchList:
    """A page of batches (`batches_` holds one more than the page when a next page exists) and its cursor."""
    page = batches_[:limit]
    last = page[-1] if len(batches_) > limit else None
    return BatchList(
        batches=[BatchSummary(
            batch_id=b.id, model=_model_ref(b), status=b.status, total_rows=b.total_rows, processed_rows=b.next_row,
            decided_rows=b.decided_rows, replayed_rows=b.replayed_rows, invalid_rows=b.invalid_rows,
            created_at=isoformat(b.created_at), finished_at=isoformat_or_none(b.finished_at),
            links=BatchLinks(**batches.links_of(base_url, b.model_name, b.id))) for b in page],
        limit=limit, next_after=encode_cursor(last.created_at, last.id) if last is not None else None,
    )


def _result(row: DecisionBatchRow) -> dict[str, Any]:
    return row_view(row).model_dump(mode="json")


def results_jsonl(rows: Iterable[DecisionBatchRow]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(_result(row), ensure_ascii=False, separators=(",", ":")) + "\n"


def results_csv(rows: Iterable[DecisionBatchRow]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        data = _result(row)
        errors = data["errors"]
        data["errors"] = "; ".join(f"{e['field']}: {e['message']}" for e in errors) if errors else ""
        writer.writerow(["" if data[c] is None else data[c] for c in RESULT_COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
