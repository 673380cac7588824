"""The audit log over HTTP: the key and signed checkpoint (public), proofs (public), leaves (auditors),
and each decision's receipt (whoever sees the decision)."""

from __future__ import annotations

from flask import Response, current_app
from flask_openapi3 import APIBlueprint, Tag

from gateway import access
from gateway.api.common import ERRORS, caller, json_response, principal
from gateway.auditlog import store
from gateway.models import Role
from gateway.schemas import (
    ConsistencyProof,
    ConsistencyQuery,
    DecisionPath,
    InclusionProof,
    InclusionQuery,
    LeavesQuery,
    LogKey,
    LogLeaves,
    Receipt,
    ReceiptPending,
)

bp = APIBlueprint("log", __name__, url_prefix="/v1", abp_tags=[Tag(name="audit log")])
BEARER = [{"bearer": []}]


@bp.get("/log/key", responses={200: LogKey, **ERRORS})
def log_key() -> Response:
    """The log's origin and Ed25519 verifier key: check checkpoints and receipts against it."""
    signer = store.signer(current_app.config)
    return json_response(LogKey(origin=signer.name, verifier_key=signer.verifier_key, algorithm="Ed25519"))


@bp.get("/log/checkpoint", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **ERRORS})
def checkpoint() -> Response:
    """The latest signed checkpoint (C2SP signed note: origin, tree size, root hash; Ed25519 signature)."""
    return Response(store.latest_checkpoint().note, mimetype="text/plain")


@bp.get("/log/proof/inclusion", responses={200: InclusionProof, **ERRORS})
def inclusion(query: InclusionQuery) -> Response:
    """The RFC 6962 inclusion proof of leaf `index` in the tree of `size` leaves."""
    return json_response(InclusionProof.model_validate(store.inclusion(query.index, query.size)))


@bp.get("/log/proof/consistency", responses={200: ConsistencyProof, **ERRORS})
def consistency(query: ConsistencyQuery) -> Response:
    """The RFC 6962 proof that the tree of `second` leaves extends the tree of `first`."""
    return json_response(ConsistencyProof.model_validate(store.consistency(query.first, query.second)))


@bp.get("/log/leaves", security=BEARER, responses={200: LogLeaves, **ERRORS})
def leaves(query: LeavesQuery) -> Response:
    """Leaf records as stored, by index (auditors; at most 1,000 a page)."""
    principal(Role.AUDITOR)
    return json_response(LogLeaves.model_validate(store.leaves(query.start, query.end)))


@bp.get("/decisions/<decision_id>/receipt", security=BEARER, responses={200: Receipt, 202: ReceiptPending, **ERRORS})
def receipt(path: DecisionPath) -> Response:
    """Proof that this decision is in the signed log: its leaf, inclusion proof and checkpoint (202 until sequenced)."""
    who = caller()
    access.visible_decision(who, path.decision_id)
    found = store.receipt(path.decision_id)
    access.record_access(who, path.decision_id, "receipt")
    if found.status == "pending":
        return json_response(ReceiptPending.model_validate(found.body), 202, {"Retry-After": "5"})
    return json_response(Receipt.model_validate(found.body))
