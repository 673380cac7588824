"""Lists that grow are paged by keyset: `after` is the previous page's `next_after`, and the pages join up."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.support.citizens import IdentityProvider

IIN = "921029350851"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture
def gateway_extra(idp: IdentityProvider) -> dict[str, Any]:
    return idp.config()


def pages(gw: Gateway, url: str, headers: dict[str, str], key: str, limit: int) -> list[list[Any]]:
    found, after = [], None
    while True:
        query: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        resp = gw.client.get(url, headers=headers, query_string=query)
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        found.append(body[key])
        after = body["next_after"]
        if after is None:
            return found


def test_my_decisions_and_the_access_log_page_by_keyset(gateway: Gateway, idp: IdentityProvider) -> None:
    made = []
    for i in range(7):
        body = copy.deepcopy(gateway.sample)
        body["subject"]["iin"] = IIN
        resp = gateway.decide(body, key=f"keyset-{i}")
        assert resp.status_code == 201
        made.append(resp.get_json()["decision_id"])
    citizen = {"Authorization": f"Bearer {idp.token(IIN, exp=int(time.time()) + 3600)}"}

    by_offset = gateway.client.get("/v1/me/decisions", headers=citizen, query_string={"limit": 100}).get_json()
    keyset = pages(gateway, "/v1/me/decisions", citizen, "decisions", limit=3)
    assert [len(p) for p in keyset] == [3, 3, 1]
    assert [d["decision_id"] for p in keyset for d in p] == [d["decision_id"] for d in by_offset["decisions"]]
    assert sorted(d["decision_id"] for d in by_offset["decisions"]) == sorted(made)

    did = made[0]
    for _ in range(4):
        assert gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("auditor")).status_code == 200
    whole = gateway.client.get(f"/v1/decisions/{did}/access-log", headers=gateway.auth("auditor"),
                               query_string={"limit": 100}).get_json()["events"]
    log_pages = pages(gateway, f"/v1/decisions/{did}/access-log", gateway.auth("auditor"), "events", limit=2)
    # Each page read is itself recorded (after the page): the pages hold at least what the whole read saw.
    joined = [e for p in log_pages for e in p]
    assert joined[:len(whole)] == whole and len(joined) >= len(whole) >= 4

    bad = gateway.client.get("/v1/me/decisions", headers=citizen, query_string={"after": "yesterday"})
    assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["field"] == "after"
