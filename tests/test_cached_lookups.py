"""The decision path's process caches (API keys, the serving version) never outlive what they cache.

A worker takes a key's client and the serving version of a model from its own memory and proves both in
the decision's write (one guarded INSERT). These tests warm a second worker's caches (another app on the
same database), change the record through the first, and check the second's very next request.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway import create_app
from gateway.auth import hash_key
from gateway.cli import main
from gateway.extensions import db
from tests.conftest import Gateway, make_config
from tests.support.registration import open_incident

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

PATH = "/v1/models/german-credit/decisions"


@pytest.fixture
def other(gateway: Gateway, tmp_path: Path) -> Iterator[Any]:
    """A second app on the same database: another worker or instance, with caches of its own."""
    app = create_app(make_config(gateway.app.config["DATABASE_URL"], tmp_path, KEYSTORE_URL=gateway.app.config["KEYSTORE_URL"]))
    yield app
    with app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()


def decide(gateway: Gateway, app: Any, key: str | None = None) -> Any:
    headers = {**gateway.auth("agency_a"), "Idempotency-Key": key or secrets.token_hex(8)}
    return app.test_client().post(PATH, json=gateway.sample, headers=headers)


def test_the_second_decision_of_a_worker_takes_key_and_version_from_its_caches(gateway: Gateway, other: Any) -> None:
    assert decide(gateway, other).status_code == 201
    assert hash_key(gateway.keys["agency_a"]) in other.extensions["gateway.seen_keys"]
    assert "german-credit" in other.extensions["gateway.models"].active
    assert decide(gateway, other).status_code == 201
    assert gateway.count("decisions") == 2 and gateway.count("idempotency_keys") == 2


def test_a_cached_decision_reads_no_key_before_its_write(gateway: Gateway, other: Any) -> None:
    """Authentication before the view takes the cached key too: the write's guard is the only key check."""
    assert decide(gateway, other).status_code == 201
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    with other.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        assert decide(gateway, other).status_code == 201
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert [s for s in statements if "api_clients" in s and not s.startswith("INSERT")] == []
    assert [s for s in statements if s.startswith("INSERT INTO idempotency_keys") and "api_clients" in s]


def test_a_key_revoked_elsewhere_is_refused_by_a_worker_that_cached_it(gateway: Gateway, other: Any) -> None:
    first = decide(gateway, other, key="before-revocation")
    assert first.status_code == 201
    result = gateway.app.test_cli_runner().invoke(main, args=["keys", "revoke", "agency_a"])
    assert result.exit_code == 0, result.output
    refused = decide(gateway, other)
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    # A replay writes nothing, so it proves the key by itself: the stored answer is not given out either.
    replay = decide(gateway, other, key="before-revocation")
    assert replay.status_code == 401
    assert hash_key(gateway.keys["agency_a"]) not in other.extensions["gateway.seen_keys"]
    # Only the first decision exists, with its one notice, leaf and idempotency record (nothing half-written).
    assert gateway.count("decisions") == 1 and gateway.count("explanations") == 1
    assert gateway.count("idempotency_keys") == 1
    assert gateway.count("log_leaves WHERE kind LIKE 'decision:%'") == 1
    assert gateway.count("notifications") == 1


def test_a_model_suspended_elsewhere_decides_nothing_in_a_worker_that_cached_it(gateway: Gateway, other: Any) -> None:
    assert decide(gateway, other).status_code == 201
    incident = open_incident(gateway.client, gateway.auth("admin"))
    resp = gateway.client.post("/v1/models/german-credit/suspend", json={"reason": "drift", "incident_id": incident},
                               headers=gateway.auth("admin"))
    assert resp.status_code == 200
    refused = decide(gateway, other)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "model_suspended"
    assert "german-credit" not in other.extensions["gateway.models"].active
    assert gateway.count("decisions") == 1 and gateway.count("idempotency_keys") == 1
    assert gateway.count("notifications") == 1 and gateway.count("explanations") == 1


def test_a_request_refused_before_its_write_proves_a_cached_key_first(gateway: Gateway, other: Any) -> None:
    """A worker that takes the key from its cache does not authenticate it before the view; a refusal
    (invalid body, unknown model, rate limit...) must still say 401 to a revoked key, never more."""
    assert decide(gateway, other).status_code == 201  # the key is now in `other`'s cache
    seen = other.extensions["gateway.seen_keys"]
    invalid = {**gateway.sample, "features": {"no_such_feature": 1}}
    headers = {**gateway.auth("agency_a"), "Idempotency-Key": "invalid-body"}
    live = other.test_client().post(PATH, json=invalid, headers=headers)
    assert live.status_code == 422  # a live key gets the validation error
    assert hash_key(gateway.keys["agency_a"]) in seen
    result = gateway.app.test_cli_runner().invoke(main, args=["keys", "revoke", "agency_a"])
    assert result.exit_code == 0, result.output
    for path, body in ((PATH, invalid), ("/v1/models/no-such-model/decisions", gateway.sample)):
        refused = other.test_client().post(path, json=body, headers={**headers, "Idempotency-Key": secrets.token_hex(8)})
        assert refused.status_code == 401, (path, refused.get_json())
        assert refused.get_json()["error"]["code"] == "unauthorized"
    assert hash_key(gateway.keys["agency_a"]) not in seen
    assert gateway.count("decisions") == 1


def test_a_retried_request_gets_its_first_answer_after_the_model_was_suspended(gateway: Gateway, other: Any) -> None:
    """No idempotency read precedes the write on the cached path: a retry refused before its write (here the
    model suspended since) still finds and replays its first answer, byte for byte."""
    first = decide(gateway, other, key="retried")
    assert first.status_code == 201
    incident = open_incident(gateway.client, gateway.auth("admin"))
    resp = gateway.client.post("/v1/models/german-credit/suspend", json={"reason": "drift", "incident_id": incident},
                               headers=gateway.auth("admin"))
    assert resp.status_code == 200
    again = decide(gateway, other, key="retried")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    # The same key with another body is still refused as reused, not replayed.
    other_body = {**gateway.sample, "reference": "another-application"}
    reused = other.test_client().post(PATH, json=other_body,
                                      headers={**gateway.auth("agency_a"), "Idempotency-Key": "retried"})
    assert reused.status_code == 422 and reused.get_json()["error"]["code"] == "idempotency_key_reused"
    assert gateway.count("decisions") == 1 and gateway.count("idempotency_keys") == 1


def test_a_retried_request_with_a_cached_key_and_version_replays_through_the_unique_key(gateway: Gateway,
                                                                                      other: Any) -> None:
    """The replay found by the idempotency record's unique INSERT: the same answer, nothing written twice;
    another body under the same key is refused as reused."""
    first = decide(gateway, other, key="same")
    again = decide(gateway, other, key="same")
    assert first.status_code == 201 and again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_data() == first.get_data()
    other_body = {**gateway.sample, "reference": "another-application"}
    reused = other.test_client().post(PATH, json=other_body,
                                      headers={**gateway.auth("agency_a"), "Idempotency-Key": "same"})
    assert reused.status_code == 422 and reused.get_json()["error"]["code"] == "idempotency_key_reused"
    assert gateway.count("decisions") == 1 and gateway.count("idempotency_keys") == 1
    assert gateway.count("notifications") == 1 and gateway.count("log_leaves WHERE kind LIKE 'decision:%'") == 1
