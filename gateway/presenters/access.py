"""Who read a decision, and the list of a person's decisions."""

from __future__ import annotations

from typing import Any

from gateway import links
from gateway.access import keyset_cursor
from gateway.db import Total
from gateway.ids import isoformat
from gateway.models import AccessEvent, Decision
from gateway.schemas import AccessLog, MyDecisions


def access_event(e: AccessEvent) -> dict[str, Any]:
    return {"at": isoformat(e.at), "what": e.what,
            "principal": {"kind": e.principal_kind, "id": e.principal_id, "body": e.principal_body}}


def access_log_view(decision_id: str, events: list[AccessEvent], total: Total, *, limit: int,
                    offset: int) -> AccessLog:
    last = keyset_cursor(events[-1].at, events[-1].id) if events and len(events) == limit else None
    return AccessLog.model_validate({"decision_id": decision_id, "events": [access_event(e) for e in events],
                                     "total": total.value, "total_is_lower_bound": total.lower_bound, "limit": limit,
                                     "offset": offset, "next_after": last})


def my_decision(d: Decision, base_url: str) -> dict[str, Any]:
    return {"decision_id": d.id, "model": {"name": d.model_name, "version": d.model_version, "sha256": d.artifact_sha256},
            "outcome": d.outcome, "effective_outcome": d.effective_outcome, "adverse": d.adverse,
            "created_at": isoformat(d.created_at), "links": links.api_links(base_url, d.id)}


def my_decisions_view(rows: list[Decision], total: Total, *, limit: int, offset: int, base_url: str) -> MyDecisions:
    last = keyset_cursor(rows[-1].created_at, rows[-1].id) if rows and len(rows) == limit else None
    return MyDecisions.model_validate({"decisions": [my_decision(d, base_url) for d in rows], "total": total.value,
                                       "total_is_lower_bound": total.lower_bound, "limit": limit, "offset": offset, "next_after": last})
