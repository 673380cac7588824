"""Retention (issue 15): the purge deletes the person's data past its period, never under an open review or a
legal hold, leaves no trace in the database, the logs or the outbox, and every receipt still verifies."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.exceptions import InvalidTag
from flask.cli import ScriptInfo

from gateway import keystore
from gateway.auditlog.note import Verifier
from gateway.auditlog.sequencer import SequenceKind
from gateway.cli import main
from gateway.contacts import cipher, decrypt_contact
from gateway.extensions import db
from gateway.jobs.purge import PurgeKind
from gateway.manifest import Manifest
from gateway.models import ReviewRequest
from gateway.presenters.review import case_view
from gateway.verify import verify_receipt
from tests.conftest import SECRETS, Gateway
from tests.support.citizens import notice_token, valid_iin

BOTH = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                               indirect=True)
ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=366)  # past the default period of 365 days


def decide(gw: Gateway, n: int, *, amount: int, email: str) -> dict[str, Any]:
    body = copy.deepcopy(gw.sample)
    body["subject"]["iin"] = valid_iin(f"9210293{6000 + n:04d}")
    body["subject"]["contact"] = {"email": email}
    body["features"]["credit_amount"] = amount
    resp = gw.decide(body)
    assert resp.status_code == 201, resp.get_json()
    return {"id": resp.get_json()["decision_id"], "iin": body["subject"]["iin"], "email": email, "amount": amount}


def review(gw: Gateway, did: str, point_of_view: str, corrected: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"point_of_view": point_of_view, "contest_grounds": ["wrong_data"]}
    if corrected:
        body["corrected_data"] = corrected
    resp = gw.client.post(f"/v1/decisions/{did}/reviews", json=body, headers=gw.auth("agency_a"))
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["review_id"])


def resolve(gw: Gateway, rid: str) -> None:
    token = gw.client.post("/v1/reviews/claim", json={"review_id": rid}, headers=gw.auth("reviewer")).get_json()
    resp = gw.client.post(f"/v1/reviews/{rid}/resolve", headers=gw.auth("reviewer"), json={
        "fencing_token": token["fencing_token"], "outcome": "upheld", "reasons": {"kk": "REASONS-SECRET шешім"},
        "point_of_view_considered": True})
    assert resp.status_code == 200, resp.get_json()


def sequence(gw: Gateway) -> None:
    gw.app.config["LOG_CHECKPOINT_INTERVAL_S"] = 0.0
    kind = SequenceKind(gw.app, settings=SequenceKind.read_settings(gw.app.config))
    while kind.run_once() > 0:
        pass


def receipt(gw: Gateway, did: str) -> dict[str, Any]:
    resp = gw.client.get(f"/v1/decisions/{did}/receipt", headers=gw.auth("auditor"))
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def sql(gw: Gateway, text: str, **params: Any) -> list[Any]:
    with gw.app.app_context():
        return list(db.session.execute(sa.text(text), params).all())


def purge(gw: Gateway, now: dt.datetime = LATER) -> int:
    kind = PurgeKind(gw.app, settings=PurgeKind.read_settings(gw.app.config))
    total = 0
    while (n := kind.run_once(now)) > 0:
        total += n
    return total


def secrets_of(d: dict[str, Any], point_of_view: str | None = None) -> list[bytes | re.Pattern[bytes]]:
    found: list[bytes | re.Pattern[bytes]] = [d["iin"].encode(), d["email"].encode(),
                                              re.compile(rb'"credit_amount"\s*:\s*' + str(d["amount"]).encode() + rb"\b")]
    if point_of_view:
        found.append(point_of_view.encode())
    return found


def found_in(data: bytes, needles: list[bytes | re.Pattern[bytes]]) -> list[str]:
    hits = []
    for needle in needles:
        if isinstance(needle, bytes):
            if needle in data:
                hits.append(needle.decode())
        elif needle.search(data):
            hits.append(needle.pattern.decode())
    return hits


def database_bytes(gw: Gateway, tmp_path: Path) -> bytes:
    """The whole database as bytes: the SQLite file (and its WAL), or a pg_dump of PostgreSQL."""
    url = gw.app.config["DATABASE_URL"]
    if gw.backend == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        with gw.app.app_context():
            for engine in db.engines.values():  # the main database and the key store
                engine.dispose()
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    out = tmp_path / "dump.sql"
    subprocess.run(["pg_dump", "--no-owner", "--file", str(out), "--dbname", url.replace("+psycopg", "")],
                   check=True, timeout=120)
    return out.read_bytes()


@BOTH
def test_the_purge_removes_what_it_must_and_nothing_under_review_or_hold(
        gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    plain = decide(gateway, 1, amount=7311, email="purge-plain@example.kz")
    reviewed = decide(gateway, 2, amount=7312, email="purge-reviewed@example.kz")
    under_review = decide(gateway, 3, amount=7313, email="keep-review@example.kz")
    held = decide(gateway, 4, amount=7314, email="keep-hold@example.kz")
    pov_gone, pov_kept = "POV-PURGED-Менің табысым жоғары", "POV-KEPT-Менің ұстанымым"
    reviewed_review = review(gateway, reviewed["id"], pov_gone, {"savings": "500_to_1000"})
    resolve(gateway, reviewed_review)
    review(gateway, under_review["id"], pov_kept)
    hold = gateway.client.post(f"/v1/decisions/{held['id']}/hold", json={"reason": "Court case 2-123/2027"},
                               headers=gateway.auth("auditor"))
    assert hold.status_code == 200 and hold.get_json()["legal_hold"]["reason"] == "Court case 2-123/2027"
    sequence(gateway)
    receipts = {d["id"]: receipt(gateway, d["id"]) for d in (plain, reviewed, under_review, held)}
    with gateway.app.app_context():
        before = {r.id: bytes(r.contact_ciphertext) for r in db.session.execute(
            sa.text("SELECT id, contact_ciphertext FROM decisions"))}

    assert purge(gateway, dt.datetime.now(dt.UTC) + dt.timedelta(days=364)) == 0  # not yet: the period runs
    assert purge(gateway) == 2

    purged = {r.id: r for r in sql(gateway, "SELECT * FROM decisions WHERE purged_at IS NOT NULL")}
    assert set(purged) == {plain["id"], reviewed["id"]}
    for row in purged.values():
        inputs = row.inputs if isinstance(row.inputs, dict) else json.loads(row.inputs)
        assert inputs == {} and row.contact_ciphertext is None and "data_key" not in row._fields
        assert row.outcome and row.model_version and row.created_at and row.score is not None  # the skeleton stays
    gone = sql(gateway, "SELECT point_of_view, corrected_data, reasons FROM reviews WHERE decision_id = :d",
               d=reviewed["id"])[0]
    assert gone.point_of_view == "" and gone.corrected_data is None and gone.reasons is None
    summary = gateway.client.get(f"/v1/reviews/{reviewed_review}", headers=gateway.auth("reviewer"))
    assert summary.status_code == 200 and summary.get_json()["reasons"] is None
    with gateway.app.app_context():  # the reviewer's case view of a purged decision: no values, no failure
        case = case_view(db.session.get(ReviewRequest, reviewed_review))
    assert case.explanation is None and case.point_of_view == "" and case.decision["inputs"] == {}
    explanation = sql(gateway, "SELECT attributions, selection, status FROM explanations WHERE decision_id = :d",
                      d=plain["id"])[0]
    assert explanation.attributions is None and explanation.selection is None
    kept = {r.id: r for r in sql(gateway, "SELECT id, inputs FROM decisions WHERE purged_at IS NULL")}
    with gateway.app.app_context():  # the data keys: destroyed in the key store for the purged, kept for the others
        assert set(kept) == {under_review["id"], held["id"]} and all(keystore.wrapped(d) for d in kept)
        assert keystore.wrapped_many(list(purged)) == {}
    assert sql(gateway, "SELECT point_of_view FROM reviews WHERE decision_id = :d",
               d=under_review["id"])[0].point_of_view == pov_kept
    leaves = sql(gateway, "SELECT object_id, record FROM log_leaves WHERE kind = 'decision:purged'")
    assert sorted(r.object_id for r in leaves) == sorted(purged)
    assert "decisions.inputs" in json.loads(leaves[0].record)["removed"]

    # Crypto-shredded: a copy of the ciphertext taken before (a replica, an export) no longer opens.
    key = gateway.app.config["CONTACT_KEY_BYTES"]
    assert decrypt_contact(key, plain["id"], before[plain["id"]], None) == {}
    with pytest.raises(InvalidTag):
        cipher(key).decrypt(b"\x01" + before[plain["id"]][1:], record_id=plain["id"])
    with gateway.app.app_context():
        held_key = keystore.wrapped(held["id"])
    assert decrypt_contact(key, held["id"], before[held["id"]], held_key) == {"email": held["email"]}

    # Every receipt issued before the purge still verifies, and the log went on growing consistently.
    sequence(gateway)
    verifier = Verifier.parse(gateway.client.get("/v1/log/key").get_json()["verifier_key"])
    for did, old in receipts.items():
        verify_receipt(old, verifier)
        assert receipt(gateway, did)["leaf_hash"] == old["leaf_hash"]
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipts[plain["id"]]))
    verifier_key = gateway.client.get("/v1/log/key").get_json()["verifier_key"]
    cli = subprocess.run([str(BIN / "gateway-verify"), "receipt", str(path), "--key", verifier_key],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stdout + cli.stderr

    # No trace of the purged decisions' data in the database, the outbox or the logs; the kept ones are found
    # (the scan can fail).
    data = database_bytes(gateway, tmp_path)
    assert found_in(data, secrets_of(plain) + secrets_of(reviewed, pov_gone) + [b"REASONS-SECRET"]) == []
    assert found_in(data, [pov_kept.encode(), re.compile(rb'"credit_amount"\s*:\s*7313\b')]) != []
    outbox = json.dumps([list(map(str, r)) for r in sql(gateway, "SELECT * FROM notifications")]).encode()
    assert found_in(outbox, secrets_of(plain) + secrets_of(reviewed, pov_gone)) == []
    logs = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert found_in(logs, secrets_of(plain) + secrets_of(reviewed, pov_gone)) == []


@BOTH
def test_the_person_is_told_the_details_were_deleted(gateway: Gateway) -> None:
    made = decide(gateway, 5, amount=7315, email="told@example.kz")
    citizen = {"Authorization": f"Bearer {notice_token(gateway, made['id'])}"}
    before = gateway.client.get(f"/v1/decisions/{made['id']}", headers=citizen).get_json()
    assert before["retention"]["purged_at"] is None and before["retention"]["retention_days"] == 365
    assert purge(gateway) == 1
    view = gateway.client.get(f"/v1/decisions/{made['id']}", headers=citizen)
    assert view.status_code == 200 and view.get_json()["inputs"] == {} and view.get_json()["retention"]["purged_at"]
    explanation = gateway.client.get(f"/v1/decisions/{made['id']}/explanation", headers=citizen)
    assert explanation.status_code == 409 and explanation.get_json()["error"]["code"] == "data_purged"
    assert "retention rule" in explanation.get_json()["error"]["message"]
    again = gateway.client.post(f"/v1/decisions/{made['id']}/reviews", headers=citizen,
                                json={"point_of_view": "x", "contest_grounds": ["other"]})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "data_purged"
    # The pages: the decision page says so; the explanation and review pages say so instead of failing.
    link = gateway.client.get(f"/d/{made['id']}?token={notice_token(gateway, made['id'])}&lang=en")
    assert link.status_code in (302, 303, 200)
    page = gateway.client.get(f"/d/{made['id']}?lang=en")
    assert page.status_code == 200 and "deleted on" in page.get_data(as_text=True)
    for path in ("explanation", "review"):
        resp = gateway.client.get(f"/d/{made['id']}/{path}?lang=en")
        assert resp.status_code == 410 and "under the retention rule" in resp.get_data(as_text=True)
    kept = gateway.client.get(f"/d/{made['id']}/data.json")
    assert kept.status_code == 200
    data = json.loads(kept.get_data(as_text=True))
    assert data["contact"] == {} and data["decision"]["inputs"] == {} and data["explanation"]["status"] == "purged"


def test_a_legal_hold_is_set_and_cleared_by_auditors_only_and_audited(gateway: Gateway) -> None:
    did = decide(gateway, 6, amount=7316, email="hold@example.kz")["id"]
    body = {"reason": "Investigation 42"}
    for who, status in (("agency_a", 403), ("reviewer", 404), ("admin", 404)):
        assert gateway.client.post(f"/v1/decisions/{did}/hold", json=body, headers=gateway.auth(who)).status_code == status
    set_ = gateway.client.post(f"/v1/decisions/{did}/hold", json=body, headers=gateway.auth("auditor"))
    assert set_.status_code == 200 and set_.get_json()["retention"]["legal_hold_since"]
    assert purge(gateway) == 0
    cleared = gateway.client.delete(f"/v1/decisions/{did}/hold?reason=Case+closed", headers=gateway.auth("auditor"))
    assert cleared.status_code == 200 and cleared.get_json()["legal_hold"] is None
    twice = gateway.client.delete(f"/v1/decisions/{did}/hold?reason=again", headers=gateway.auth("auditor"))
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "no_hold"
    kinds = [r.kind for r in sql(gateway, "SELECT kind FROM log_leaves WHERE object_id = :d ORDER BY id", d=did)]
    assert kinds == ["decision:recorded", "decision:hold:set", "decision:hold:cleared"]
    assert purge(gateway) == 1
    late = gateway.client.post(f"/v1/decisions/{did}/hold", json=body, headers=gateway.auth("auditor"))
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "data_purged"


def test_retention_below_the_floor_is_refused_with_a_clear_message(gateway: Gateway) -> None:
    with gateway.app.app_context():
        manifest = sql(gateway, "SELECT manifest FROM scoring_models")[0].manifest
    data = manifest if isinstance(manifest, dict) else json.loads(manifest)
    with pytest.raises(ValueError, match="retention_days must be at least 180"):
        Manifest.model_validate(data | {"retention_days": 90})
    assert Manifest.model_validate(data | {"retention_days": 180}).retention_days == 180
    from gateway import create_app
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="GATEWAY_RETENTION_DAYS must be a whole number of days of at least 180"):
        create_app({**SECRETS, "DATABASE_URL": "sqlite://", "RETENTION_DAYS": 90})


def test_a_model_retention_period_is_its_own(gateway: Gateway) -> None:
    made = decide(gateway, 7, amount=7317, email="own@example.kz")
    with gateway.app.app_context():
        row = db.session.execute(sa.text("SELECT id, manifest FROM scoring_models")).one()
        manifest = row.manifest if isinstance(row.manifest, dict) else json.loads(row.manifest)
        db.session.execute(sa.text("UPDATE scoring_models SET manifest = :m WHERE id = :i"),
                           {"m": json.dumps(manifest | {"retention_days": 730}), "i": row.id})
        db.session.commit()
    assert purge(gateway) == 0  # 366 days < 730
    assert purge(gateway, dt.datetime.now(dt.UTC) + dt.timedelta(days=731)) == 1
    assert sql(gateway, "SELECT purged_at FROM decisions WHERE id = :d", d=made["id"])[0].purged_at is not None


def test_cli_dry_run_lists_what_would_go_and_changes_nothing(gateway: Gateway) -> None:
    gone = decide(gateway, 8, amount=7318, email="cli-gone@example.kz")["id"]
    kept = decide(gateway, 9, amount=7319, email="cli-kept@example.kz")["id"]
    gateway.client.post(f"/v1/decisions/{kept}/hold", json={"reason": "Audit"}, headers=gateway.auth("auditor"))
    runner = CliRunner()
    info = ScriptInfo(create_app=lambda: gateway.app)
    when = LATER.isoformat().replace("+00:00", "Z")
    dry = runner.invoke(main, ["purge", "--dry-run", "--now", when], obj=info)
    assert dry.exit_code == 0, dry.output
    assert "1 decision(s) would be purged, 1 kept back" in dry.output
    lines = dry.output.splitlines()
    assert any(line.startswith("purge\t" + gone) for line in lines)
    assert any(line.startswith("keep (legal hold)\t" + kept) for line in lines)
    assert sql(gateway, "SELECT count(*) AS n FROM decisions WHERE purged_at IS NOT NULL")[0].n == 0
    bad = runner.invoke(main, ["purge", "--now", "yesterday"], obj=info)
    assert bad.exit_code != 0 and "is not an ISO date-time" in bad.output
    done = runner.invoke(main, ["purge", "--now", when], obj=info)
    assert done.exit_code == 0 and f"purged\t{gone}" in done.output and "1 decision(s) purged" in done.output


@pytest.mark.slow
def test_a_gateway_worker_process_purges(gateway: Gateway, tmp_path: Path) -> None:
    """`gateway worker --kinds purge`, a real process, purges decisions whose period ended (moved back 400 days)."""
    made = decide(gateway, 10, amount=7320, email="worker@example.kz")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE decisions SET created_at = :at WHERE id = :d"), {"at": old, "d": made["id"]})
        db.session.commit()
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()
    keystore_url = gateway.app.config["KEYSTORE_URL"]  # PostgreSQL: the key store is a database of its own
    env = {**os.environ, "GATEWAY_DATABASE_URL": gateway.app.config["DATABASE_URL"],
           **({"GATEWAY_KEYSTORE_URL": keystore_url} if keystore_url else {}),
           "GATEWAY_INSTANCE_PATH": str(tmp_path), "GATEWAY_PUBLIC_BASE_URL": "https://gateway.test",
           **{f"GATEWAY_{k}": v for k, v in SECRETS.items()}, "GATEWAY_JOBS_PURGE_POLL_INTERVAL_S": "0.2"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "gateway"), "worker", "--kinds", "purge"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while not sql(gateway, "SELECT purged_at FROM decisions WHERE id = :d", d=made["id"])[0].purged_at:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(30)
    assert "purge: personal data of 1 decision(s) deleted" in log.read_text()
    assert sql(gateway, "SELECT count(*) AS n FROM log_leaves WHERE kind = 'decision:purged'")[0].n == 1
