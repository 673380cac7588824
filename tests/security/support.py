"""What the attack tests share: a decision, a review request, a claim, one reviewer key more."""

from __future__ import annotations

import copy
from typing import Any

import sqlalchemy as sa

from gateway.auth import create_key
from gateway.db import write_transaction
from gateway.extensions import db
from tests.conftest import Gateway

REVIEW = {"point_of_view": "Менің табысым жоғарырақ.", "contest_grounds": ["wrong_data"]}


def decided(gw: Gateway, **changes: Any) -> dict[str, Any]:
    """Record a decision (the sample request with `changes`); return the agency's 201 body."""
    resp = gw.decide(copy.deepcopy(gw.sample) | changes)
    assert resp.status_code == 201, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def requested(gw: Gateway, decision_id: str, who: str = "agency_a") -> str:
    resp = gw.client.post(f"/v1/decisions/{decision_id}/reviews", json=REVIEW, headers=gw.auth(who))
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["review_id"])


def claimed(gw: Gateway, review_id: str, who: str = "reviewer") -> int:
    resp = gw.client.post("/v1/reviews/claim", json={"review_id": review_id}, headers=gw.auth(who))
    assert resp.status_code == 200, resp.get_json()
    return int(resp.get_json()["fencing_token"])


def new_key(gw: Gateway, name: str, role: str, body: str) -> str:
    """Create an API client named `name`; remember and return its key under that name."""
    with gw.app.app_context(), write_transaction():
        _, gw.keys[name] = create_key(name=name, role=role, body=body)
    return gw.keys[name]


def query(gw: Gateway, sql: str, **params: Any) -> list[Any]:
    with gw.app.app_context():
        return list(db.session.execute(sa.text(sql), params).all())
