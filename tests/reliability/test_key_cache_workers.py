"""A revoked API key records nothing from the next request on, in every gunicorn worker that cached it.

Real `gateway serve` (gunicorn, 2 sync workers): concurrent clients spread decisions over both workers, so
both take the key's client from their own cache (gateway.auth.cached_key); then `gateway keys revoke`
runs in its own process, and every request after it is refused, none recorded, replays included.
"""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import pytest
import requests

from tests.support.gateway_server import (
    DECISIONS_PATH,
    GATEWAY,
    Instance,
    ServerProcess,
    decision_body,
    example_rows,
    run,
    valid_iin,
)

pytestmark = pytest.mark.slow

CLIENTS = 4  # more clients than workers: both sync workers serve decisions
TIMEOUT = (5.0, 30.0)


def recorded(instance: Instance) -> dict[str, int]:
    with closing(sqlite3.connect(instance.sqlite_path)) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 (fixed names)
                for t in ("decisions", "explanations", "notifications", "idempotency_keys")}


def test_a_revoked_key_is_refused_at_once_by_both_workers(live_gateway: ServerProcess, gateway_instance: Instance,
                                                          example_manifest: object) -> None:
    rows = example_rows(example_manifest)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {gateway_instance.key}", "Content-Type": "application/json"}

    def send(i: int) -> requests.Response:
        body = json.dumps(decision_body(rows[i % len(rows)], iin=valid_iin(i), language="kk",
                                        contact={"email": f"p{i}@example.kz"})).encode()
        return requests.post(live_gateway.base_url + DECISIONS_PATH, data=body, timeout=TIMEOUT,
                             headers={**headers, "Idempotency-Key": f"key-{i}"})

    with ThreadPoolExecutor(CLIENTS) as pool:
        before = list(pool.map(send, range(40)))
    assert [r.status_code for r in before] == [201] * 40
    assert recorded(gateway_instance) == {"decisions": 40, "explanations": 40, "notifications": 40,
                                          "idempotency_keys": 40}

    out = run([str(GATEWAY), "keys", "revoke", "reliability-agency"], env=gateway_instance.env)
    assert "revoked: reliability-agency" in out

    with ThreadPoolExecutor(CLIENTS) as pool:
        after = list(pool.map(send, range(40, 80)))  # new keys: would be new decisions
        replays = list(pool.map(send, range(0, 20)))  # keys already answered: the stored answer is not given out
    assert [r.status_code for r in after + replays] == [401] * 60
    assert {r.json()["error"]["code"] for r in after + replays} == {"unauthorized"}
    assert recorded(gateway_instance) == {"decisions": 40, "explanations": 40, "notifications": 40,
                                          "idempotency_keys": 40}
