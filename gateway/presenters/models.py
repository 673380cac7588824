"""The algorithm register: a model version's public summary and its pre-use notice."""

from __future__ import annotations

from typing import Any

from gateway.db import Total
from gateway.ids import isoformat
from gateway.manifest import Manifest, oversight_mode
from gateway.models import ScoringModel
from gateway.schemas import ModelDetail, ModelList, ModelRegistered


def summary(row: ScoringModel, base_url: str) -> dict[str, Any]:
    """A register entry (plain values; `model_list` wraps them in the documented model)."""
    notice = row.manifest["notice"]
    return {
        "name": row.name,
        "version": row.version,
        "status": row.status,
        "risk_class": row.risk_class,
        "sha256": row.artifact_sha256,
        "purpose": notice["purpose"],
        "owner": notice["owner"],
        "links": {"model": f"{base_url}/v1/models/{row.name}", "decisions": f"{base_url}/v1/models/{row.name}/decisions"},
    }


def model_list(rows: list[ScoringModel], total: Total, *, limit: int, offset: int, base_url: str,
               next_after: str | None = None) -> ModelList:
    return ModelList.model_validate({"models": [summary(r, base_url) for r in rows], "total": total.value,
                                     "total_is_lower_bound": total.lower_bound, "limit": limit,
                                     "offset": offset, "next_after": next_after})


def registered(row: ScoringModel, created: bool) -> ModelRegistered:
    return ModelRegistered(name=row.name, version=row.version, status=row.status, sha256=row.artifact_sha256,
                           created=created, oversight=oversight_mode(Manifest.model_validate(row.manifest)))


def detail(row: ScoringModel) -> ModelDetail:
    """A model's pre-use notice and feature schema (enough to build a valid decision request)."""
    m = row.manifest
    return ModelDetail.model_validate({
        "name": row.name,
        "version": row.version,
        "status": row.status,
        "sha256": row.artifact_sha256,
        "risk_class": row.risk_class,
        "role_of_ai": m["role_of_ai"],
        "autonomy": m.get("autonomy"),
        "purpose_category": m.get("purpose_category"),
        "oversight": oversight_mode(Manifest.model_validate(m)),
        "notice": m["notice"],
        "features": m["features"],
        # The definitions of what the agency sends for fairness monitoring (never passed to the model).
        "monitored": m.get("monitored", []),
        "policy": Manifest.model_validate(m).policy.public(),
        "registered_at": isoformat(row.registered_at),
    })
