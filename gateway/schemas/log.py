"""The audit log: its key, proofs, leaves and a decision's receipt."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas.common import Out

Index = Annotated[int, Field(ge=0, le=2**62)]
Size = Annotated[int, Field(ge=1, le=2**62)]


class LogKey(Out):
    origin: str
    verifier_key: str = Field(description="name+keyID+base64(0x01 || Ed25519 public key), as Go's note package writes it")
    algorithm: str


class InclusionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: Index
    size: Size


class ConsistencyQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first: Size
    second: Size


class LeavesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Index
    end: Size | None = None


class InclusionProof(Out):
    index: int
    size: int
    proof: list[str] = Field(description="hex SHA-256 node hashes, RFC 6962 order")


class ConsistencyProof(Out):
    first: int
    second: int
    proof: list[str]


class LogLeafOut(Out):
    index: int
    kind: str
    object_id: str
    leaf_hash: str
    record: str | None = Field(description="the canonical JSON whose RFC 6962 leaf hash is leaf_hash (null: redacted)")
    redacted_record: str | None = Field(None, description=(
        "set instead of record when the retention purge removed the person's data a record written before "
        "commitments held in clear: the redacted record, which no longer hashes to leaf_hash (a later "
        "decision:purged leaf names leaf_hash in redacted_leaves)"))
    created_at: str


class LogLeaves(Out):
    start: int
    end: int
    size: int
    leaves: list[LogLeafOut]


class Receipt(Out):
    decision_id: str
    status: str
    leaf_index: int
    leaf_hash: str
    record: str | None = Field(description="the canonical JSON whose RFC 6962 leaf hash is leaf_hash (null: redacted)")
    redacted_record: str | None = Field(None, description=(
        "set instead of record when the retention purge removed the person's data a record written before "
        "commitments held in clear: the redacted record, which no longer hashes to leaf_hash (a later "
        "decision:purged leaf names leaf_hash in redacted_leaves)"))
    proof: list[str]
    tree_size: int
    root_hash: str
    checkpoint: str = Field(description="the C2SP signed note the proof leads to")


class ReceiptPending(Out):
    decision_id: str
    status: str
    leaf_hash: str
    retry_after: int
