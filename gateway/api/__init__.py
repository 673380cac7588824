"""JSON API: thin blueprints that parse, call one service function, and serialise."""

from __future__ import annotations

import re
from typing import Any

from flask_openapi3 import OpenAPI
from werkzeug.routing import BaseConverter

from gateway.api import batches_api, decisions_api, log_api, models_api, ops, oversight_api, reviews_api
from gateway.schemas.batches import BatchRequest

IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "Unique per request (1 to 255 printable ASCII characters). The same key with the same body "
    "replays the first response (Idempotent-Replayed: true); with another body it is refused (422).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}


class ReviewIdConverter(BaseConverter):
    """Review ids (rev_…) in paths, so that /v1/reviews/claim is never taken for a review id."""

    regex = r"rev_[A-Za-z0-9_-]{1,60}"


def register_api(app: OpenAPI) -> None:

    app.url_map.converters["rid"] = ReviewIdConverter
    for bp in (ops.bp, models_api.bp, decisions_api.bp, batches_api.bp, reviews_api.bp, log_api.bp, oversight_api.bp):
        app.register_api(bp)


def amend_spec(spec: dict[str, Any]) -> None:
    """Add what flask-openapi3 can't express cheaply: the Idempotency-Key header, the upload body, links."""
    post = spec["paths"]["/v1/models/{name}/decisions"]["post"]
    params = post.setdefault("parameters", [])
    if not any(p.get("name") == "Idempotency-Key" for p in params):
        params.append(IDEMPOTENCY_HEADER)
    spec["paths"]["/v1/blobs/{sha256}"]["put"]["requestBody"] = {
        "required": True,
        "description": "The file's bytes; their SHA-256 must be the one in the path.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    _batch_body(spec)
    _add_links(spec)


def _batch_body(spec: dict[str, Any]) -> None:
    """The batch upload: rows in a JSON body (documented), or a file whose format its media type names."""
    post = spec["paths"]["/v1/models/{name}/decision-batches"]["post"]
    schema = BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        spec.setdefault("components", {}).setdefault("schemas", {}).setdefault(name, sub)
    spec["components"]["schemas"].setdefault("BatchRequest", schema)
    post["requestBody"] = {
        "required": True,
        "description": "Rows in a JSON body; or the same population as a file, sent as its body with its media type "
                       "(text/csv, application/x-ndjson, application/vnd.apache.parquet) or as the multipart field "
                       "`file`. Files have flat columns: idempotency_key, iin, language, email and/or webhook, "
                       "optional operator and reference, and one column per feature of the model.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}},
    }


def _operation_id(spec: dict[str, Any], path: str, method: str) -> str:
    return str(spec["paths"][path][method]["operationId"])


def _add_links(spec: dict[str, Any]) -> None:
    """OpenAPI links: what a client (and a stateful test) can do next with the id an answer gives."""
    decision = {"decision_id": "$response.body#/decision_id"}
    follow_decision = {
        "GetDecision": ("/v1/decisions/{decision_id}", "get"),
        "GetExplanation": ("/v1/decisions/{decision_id}/explanation", "get"),
        "GetExplanationSvg": ("/v1/decisions/{decision_id}/explanation.svg", "get"),
        "GetRecourse": ("/v1/decisions/{decision_id}/recourse", "get"),
        "GetAccessLog": ("/v1/decisions/{decision_id}/access-log", "get"),
        "RequestReview": ("/v1/decisions/{decision_id}/reviews", "post"),
    }
    created = spec["paths"]["/v1/models/{name}/decisions"]["post"]["responses"]["201"]
    created["links"] = {name: {"operationId": _operation_id(spec, path, method), "parameters": decision}
                        for name, (path, method) in follow_decision.items()}
    review = {"review_id": "$response.body#/review_id"}
    requested = spec["paths"]["/v1/decisions/{decision_id}/reviews"]["post"]["responses"]["201"]
    requested["links"] = {"GetReview": {"operationId": _operation_id(spec, "/v1/reviews/{review_id}", "get"),
                                        "parameters": review}}


def secured_endpoints(app: OpenAPI) -> frozenset[str]:
    """The endpoints whose operation declares a security requirement in the OpenAPI document."""
    spec = app.api_doc
    found = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<([^<:]+:)?", "{", rule.rule).replace(">", "}")
        for method in rule.methods or ():
            operation = spec.get("paths", {}).get(path, {}).get(method.lower())
            if operation and operation.get("security"):
                found.add(rule.endpoint)
    return frozenset(found)
