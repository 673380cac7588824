"""Decision batches: an agency submits a population, follows its progress and downloads the results."""

from __future__ import annotations

import datetime as dt

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import ValidationError

from gateway import batches, batchfiles
from gateway.api.common import ERRORS, caller, json_response, keyset_after, principal, validation_error_response
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.models import Role
from gateway.presenters import batch as views
from gateway.schemas.batches import (
    BatchCreated,
    BatchList,
    BatchListQuery,
    BatchOut,
    BatchPath,
    BatchQuery,
    BatchRequest,
    ResultsQuery,
)
from gateway.schemas.common import ModelPath
from gateway.settings import current_settings

bp = APIBlueprint("batches", __name__, url_prefix="/v1", abp_tags=[Tag(name="decision batches")])
BEARER = [{"bearer": []}]


def _upload() -> batches.Upload | Response:
    """The rows or the file the request carries (JSON body, a raw file, or a multipart field `file`)."""
    limit = current_settings().batch_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"a batch upload is limited to {limit} bytes (GATEWAY_BATCH_MAX_BYTES); split the "
                              "population into several batches", code="batch_too_large")
    request.max_content_length = limit
    if request.mimetype == "multipart/form-data":
        request.max_form_memory_size = limit
        file = request.files.get("file")
        if file is None:
            raise BadRequest("a multipart upload carries the batch in a field named 'file'", code="batch_file_missing")
        fmt = batchfiles.format_of(file.mimetype if file.mimetype != "application/octet-stream" else None,
                                   file.filename)
        return batches.Upload(fmt, data=file.read())
    fmt = batchfiles.format_of(request.mimetype or None)
    if fmt != "json":
        return batches.Upload(fmt, data=request.get_data())
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("the request body is not valid JSON", code="malformed_json")
    try:
        parsed = BatchRequest.model_validate(body)  # structure only: each row's domain rules are its own result
    except ValidationError as exc:
        return validation_error_response(exc)
    del parsed
    return batches.Upload("json", rows=list(body["rows"]))


@bp.post("/models/<name>/decision-batches", security=BEARER, responses={202: BatchCreated, **ERRORS})
def create_batch(path: ModelPath) -> Response:
    """Decide a population: rows in a JSON body, or a CSV, Parquet or JSON-lines file; 202 with the batch (agency)."""
    who = principal(Role.AGENCY)
    upload = _upload()
    if isinstance(upload, Response):
        return upload
    batch = batches.submit(who, path.name, upload)
    view = views.created_view(batch, current_settings().base_url)
    return json_response(view, 202, {"Location": view.links.batch})


@bp.get("/models/<name>/decision-batches", security=BEARER, responses={200: BatchList, **ERRORS})
def list_batches(path: ModelPath, query: BatchListQuery) -> Response:
    """Your agency's batches for this model, newest first, with their progress (agency; keyset pages)."""
    who = principal(Role.AGENCY)
    after = keyset_after(query.after, dt.datetime, str)
    found = batches.list_batches(who, path.name, limit=query.limit + 1, after=after)
    return json_response(views.batch_list_view(found, limit=query.limit, base_url=current_settings().base_url))


@bp.get("/models/<name>/decision-batches/<batch_id>", security=BEARER, responses={200: BatchOut, **ERRORS})
def get_batch(path: BatchPath, query: BatchQuery) -> Response:
    """A batch's progress and a page of its rows' results: decision id, or the row's errors (agency)."""
    batch = batches.visible_batch(caller(), path.name, path.batch_id)
    rows = batches.batch_rows(batch.id, after=query.after, limit=query.limit)
    return json_response(views.batch_view(batch, rows, limit=query.limit, base_url=current_settings().base_url))


@bp.get("/models/<name>/decision-batches/<batch_id>/results", security=BEARER,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                     "application/x-ndjson": {"schema": {"type": "string"}}}}, **ERRORS})
def get_batch_results(path: BatchPath, query: ResultsQuery) -> Response:
    """Every row's result as a file: CSV (default) or JSON lines (agency)."""
    batch = batches.visible_batch(caller(), path.name, path.batch_id)
    rows = batches.iter_rows(batch.id)
    if query.format == "jsonl":
        body, mimetype, suffix = views.results_jsonl(rows), "application/x-ndjson", "jsonl"
    else:
        body, mimetype, suffix = views.results_csv(rows), "text/csv", "csv"
    # Built whole (at most BATCH_MAX_ROWS rows): a streamed body would keep this request's context, and its
    # authenticated caller, alive until the client read it.
    return Response("".join(body), mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{batch.id}-results.{suffix}"'})
