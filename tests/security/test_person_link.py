"""Findings 2 and 11: an agency could act as the person with the capability link every agency answer
carried (and that its stored idempotent bodies kept in clear). The tests try again: the agency looks for the
link everywhere it can read; a handover link is recorded as the agency's hand-over and dies when revoked;
a copy of the database yields no credential."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Gateway
from tests.security.support import REVIEW, decided, new_key, query

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_agency_answer_carries_the_persons_link(gateway: Gateway) -> None:
    new_key(gateway, "agency_a_2", "agency", "Agency A")  # another key of the same body
    first = gateway.decide(key="same-key")
    replay = gateway.decide(key="same-key")
    did = first.get_json()["decision_id"]
    answers = [first, replay,
               gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a")),
               gateway.client.get(f"/v1/decisions/{did}", headers=gateway.auth("agency_a_2"))]
    for resp in answers:
        assert resp.status_code in (200, 201), resp.get_json()
        assert b"gwc_" not in resp.data and b"token=" not in resp.data
        assert resp.get_json()["links"].get("citizen") is None
    stored = query(gateway, "SELECT response_body FROM idempotency_keys")
    assert stored and all(b"gwc_" not in bytes(r.response_body) for r in stored)


def test_a_handover_link_is_recorded_as_the_agencys_and_dies_when_revoked(gateway: Gateway) -> None:
    did = decided(gateway)["decision_id"]
    url = f"/v1/decisions/{did}/handover-links"
    # Only the agency of the decision's body makes one; others get the 404 of a decision they don't see.
    assert gateway.client.post(url, headers=gateway.auth("agency_b")).status_code == 404
    assert gateway.client.post(url, headers=gateway.auth("reviewer")).status_code == 404
    assert gateway.client.post(url, headers=gateway.auth("auditor")).status_code == 403
    made = gateway.client.post(url, headers=gateway.auth("agency_a"))
    assert made.status_code == 201, made.get_json()
    hid, link = made.get_json()["handover_id"], made.get_json()["link"]
    assert link.startswith(f"https://gateway.test/d/{did}?token=gwh_") and "gwc_" not in link
    token = link.split("?token=", 1)[1]
    who = f"citizen:handover:{hid}"

    # The person uses it: every use is recorded as the hand-over, never as the person's own link.
    assert gateway.client.get(f"/v1/decisions/{did}", headers=bearer(token)).status_code == 200
    review = gateway.client.post(f"/v1/decisions/{did}/reviews", json=REVIEW, headers=bearer(token))
    assert review.status_code == 201, review.get_json()
    log = gateway.client.get(f"/v1/decisions/{did}/access-log", headers=bearer(token)).get_json()
    assert {e["principal"]["id"] for e in log["events"] if e["principal"]["kind"] == "citizen"} == {who}
    assert query(gateway, "SELECT requested_by FROM reviews")[0].requested_by == who
    assert [r.what for r in query(gateway, "SELECT what FROM access_events WHERE principal_kind = 'agency' "
                                           "ORDER BY at")] == ["handover_link"]
    assert len(query(gateway, "SELECT 1 FROM log_leaves WHERE kind = 'decision:handover:created'")) == 1
    # A handover link never hands out the person's own link either.
    assert b"gwc_" not in gateway.client.get(f"/v1/decisions/{did}", headers=bearer(token)).data

    # Revoked: refused exactly like a forged token of the same kind.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    other = gateway.client.delete(f"{url}/{hid}", headers=gateway.auth("agency_b"))
    assert other.status_code == 404
    assert gateway.client.delete(f"{url}/{hid}", headers=gateway.auth("agency_a")).status_code == 204
    revoked = gateway.client.get(f"/v1/decisions/{did}", headers=bearer(token))
    refused = gateway.client.get(f"/v1/decisions/{did}", headers=bearer(forged))
    assert revoked.status_code == refused.status_code and revoked.status_code in (401, 404)
    assert revoked.get_json() == refused.get_json()
    assert len(query(gateway, "SELECT 1 FROM log_leaves WHERE kind = 'decision:handover:revoked'")) == 1
    assert gateway.client.delete(f"{url}/hnd_unknown", headers=gateway.auth("agency_a")).status_code == 404


def test_a_handover_token_is_bound_to_its_decision(gateway: Gateway) -> None:
    first, second = decided(gateway)["decision_id"], decided(gateway)["decision_id"]  # the same person
    made = gateway.client.post(f"/v1/decisions/{first}/handover-links", headers=gateway.auth("agency_a")).get_json()
    token = made["link"].split("?token=", 1)[1]
    assert gateway.client.get(f"/v1/decisions/{second}", headers=bearer(token)).status_code == 404


def test_a_copy_of_the_database_holds_no_working_credential(gateway: Gateway, tmp_path: Path) -> None:
    if gateway.backend != "sqlite":
        pytest.skip("the file copy is the SQLite form of the attack; the scan below is the same on PostgreSQL")
    did = decided(gateway)["decision_id"]
    gateway.client.post(f"/v1/decisions/{did}/reviews", json=REVIEW, headers=gateway.auth("agency_a"))
    gateway.client.post(f"/v1/decisions/{did}/handover-links", headers=gateway.auth("agency_a"))
    gateway.decide(key="replayed")
    gateway.decide(key="replayed")
    with gateway.app.app_context():
        from gateway.extensions import db

        source = db.engine.url.database
    copy = tmp_path / "stolen.db"
    for suffix in ("", "-wal", "-shm"):  # WAL mode: recent writes are in the -wal file until a checkpoint
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{copy}{suffix}")
    conn = sqlite3.connect(copy)  # what someone holding the file does: read every column of every table
    conn.text_factory = bytes
    found = []
    tables = [r[0].decode() for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in tables:
        columns = [r[1].decode() for r in conn.execute(f'PRAGMA table_info("{name}")')]
        for row in conn.execute(f'SELECT * FROM "{name}"'):
            for column, value in zip(columns, row, strict=True):
                data = value if isinstance(value, bytes) else str(value).encode()
                for marker in (b"gwc_", b"gwh_", b"token="):
                    if marker in data:
                        found.append((name, column, marker))
    conn.close()
    assert not found, found


def test_a_handover_link_opens_the_persons_pages_until_revoked(gateway: Gateway) -> None:
    """The link the agency hands on is a personal link too: it opens the pages, recorded as the hand-over."""
    did = decided(gateway)["decision_id"]
    made = gateway.client.post(f"/v1/decisions/{did}/handover-links", headers=gateway.auth("agency_a")).get_json()
    path = made["link"].removeprefix("https://gateway.test")
    browser = gateway.app.test_client()
    opened = browser.get(path)
    assert opened.status_code == 303 and opened.headers["Location"].endswith(f"/d/{did}")
    page = browser.get(f"/d/{did}")
    assert page.status_code == 200 and did in page.get_data(as_text=True)
    who = f"citizen:handover:{made['handover_id']}"
    assert {r.principal_id for r in query(gateway, "SELECT principal_id FROM access_events WHERE what = 'decision'")} == {who}
    assert gateway.client.delete(f"/v1/decisions/{did}/handover-links/{made['handover_id']}",
                                 headers=gateway.auth("agency_a")).status_code == 204
    assert browser.get(f"/d/{did}").status_code == 404  # the session it started ends with it
    assert gateway.app.test_client().get(path).status_code == 404  # and the link opens nothing
