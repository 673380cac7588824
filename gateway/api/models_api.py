"""The algorithm register: list models, read a model's notice and schema, register and suspend."""

from __future__ import annotations

import hashlib

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag

from gateway import registry
from gateway.api.common import ERRORS, json_response, keyset_after, principal
from gateway.db import write_transaction
from gateway.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from gateway.extensions import db
from gateway.ids import encode_cursor
from gateway.manifest import Manifest
from gateway.models import Blob, Role
from gateway.presenters import models as model_views
from gateway.schemas import (
    BlobPath,
    BlobStored,
    ModelDetail,
    ModelList,
    ModelListQuery,
    ModelPath,
    ModelRegistered,
    ModelRegistration,
    SuspendRequest,
)
from gateway.settings import current_settings

bp = APIBlueprint("models", __name__, url_prefix="/v1", abp_tags=[Tag(name="models")])
BEARER = [{"bearer": []}]


@bp.get("/models", responses={200: ModelList, **ERRORS})
def list_models(query: ModelListQuery) -> Response:
    """The algorithm register: every model currently making decisions, by name (paged by keyset or offset)."""
    (after,) = keyset_after(query.after, str) or (None,)
    page = registry.list_models(serving_only=True, after=after, limit=query.limit + 1, offset=query.offset)
    total = registry.count_models(serving_only=True)
    next_after = encode_cursor(page[query.limit - 1].name) if len(page) > query.limit else None
    page = page[:query.limit]
    return json_response(model_views.model_list(page, total, limit=query.limit, offset=query.offset,
                                                base_url=current_settings().base_url, next_after=next_after))


@bp.get("/models/<name>", responses={200: ModelDetail, **ERRORS})
def get_model(path: ModelPath) -> Response:
    """A model's pre-use notice and feature schema (enough to build a valid decision request)."""
    return json_response(model_views.detail(registry.public_model(path.name)))


@bp.put("/blobs/<sha256>", security=BEARER, responses={201: BlobStored, 200: BlobStored, **ERRORS})
def put_blob(path: BlobPath) -> Response:
    """Upload a model artifact or background file (application/octet-stream); its sha256 is its name."""
    principal(Role.ADMIN)
    if request.mimetype != "application/octet-stream":
        raise UnsupportedMediaType("upload the file as application/octet-stream")
    limit = current_settings().max_artifact_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"files are limited to {limit} bytes")
    request.max_content_length = limit
    data = request.get_data()
    actual = hashlib.sha256(data).hexdigest()
    if actual != path.sha256:
        raise ValidationFailed(
            "the uploaded bytes do not match the sha256 in the URL",
            details=[{"field": "sha256", "rule": "content_hash", "message": f"content hashes to {actual}"}],
        )
    existed = db.session.get(Blob, actual) is not None
    with write_transaction():
        registry.store_blob(data)
    return json_response(BlobStored(sha256=actual, size=len(data)), 200 if existed else 201)


def _stored(sha: str | None) -> bytes | None:
    if sha is None:
        return None
    blob = db.session.get(Blob, sha)
    if blob is None:
        raise ValidationFailed(
            f"no uploaded file has sha256 {sha}; PUT it to /v1/blobs/{sha} first",
            details=[{"field": "sha256", "rule": "uploaded", "message": "upload the file first"}],
        )
    return bytes(blob.data)


@bp.post("/models", security=BEARER, responses={201: ModelRegistered, 200: ModelRegistered, **ERRORS})
def register_model(body: ModelRegistration) -> Response:
    """Register a model version from its manifest (admin); `activate` makes it the serving version."""
    who = principal(Role.ADMIN)
    manifest = Manifest.model_validate(body.model_dump(exclude={"activate"}))
    artifact = _stored(manifest.sha256)  # None for a remote model: its server is asked instead
    background = _stored(manifest.explanation.background_sha256)
    with write_transaction():
        row, created = registry.register(manifest, artifact, background, activate=body.activate, registered_by=who.name)
        result = model_views.registered(row, created)
    return json_response(result, 201 if created else 200)


@bp.post("/models/<name>/suspend", security=BEARER, responses={200: ModelRegistered, **ERRORS})
def suspend_model(path: ModelPath, body: SuspendRequest) -> Response:
    """The kill switch: stop a model making decisions at once (admin), naming the incident that asks for it."""
    principal(Role.ADMIN)
    with write_transaction():
        row = registry.suspend(path.name, body.reason, body.incident_id)
        result = model_views.registered(row, False)
    return json_response(result)
