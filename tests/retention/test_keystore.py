"""Crypto-shredding that reaches backups (issue 15): the wrapped data keys live in the key store, a database of
their own; the purge destroys them there, so a backup of the main database taken before the purge can no longer
be read with the deployment key. Also: the key is committed before its decision (a failure in between leaves a
key the sweep removes, never a decision without its key), the `.eml` files of the file channel are purged, and
leaves written before commitments existed are redacted while every proof still holds."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade
from werkzeug.serving import make_server

from gateway import keystore, retention
from gateway.audit import leaf_values
from gateway.auditlog.note import Verifier
from gateway.batches.task import BatchKind
from gateway.contacts import cipher, decrypt_contact, rewrap_legacy_rows
from gateway.decisions import contact_of
from gateway.extensions import db
from gateway.models import Decision
from gateway.notifications.dispatcher import Dispatcher
from gateway.verify import VerificationFailed, check_log, verify_receipt
from tests.conftest import POSTGRES_URL, Gateway
from tests.retention.test_purge import (
    BIN,
    BOTH,
    database_bytes,
    decide,
    found_in,
    purge,
    receipt,
    review,
    secrets_of,
    sequence,
    sql,
)


def wrapped_key(gw: Gateway, decision_id: str) -> bytes | None:
    with gw.app.app_context():
        return keystore.wrapped(decision_id)


def backup_of_main_database(gw: Gateway, folder: Path) -> Any:
    """Copy the main database as a backup would (SQLite: the file with its WAL, while the gateway runs;
    PostgreSQL: pg_dump restored into a database of its own); return a function reading one decision's
    contact ciphertext from the backup."""
    url = gw.app.config["DATABASE_URL"]
    folder.mkdir()
    if gw.backend == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", folder / f"backup.db{suffix}")

        def read(decision_id: str) -> bytes | None:
            with sqlite3.connect(folder / "backup.db") as conn:
                found = conn.execute("SELECT contact_ciphertext FROM decisions WHERE id = ?", (decision_id,)).fetchone()
            return bytes(found[0]) if found and found[0] is not None else None
        return read
    dump = folder / "backup.sql"
    subprocess.run(["pg_dump", "--no-owner", "--file", str(dump), "--dbname", url.replace("+psycopg", "")],
                   check=True, timeout=120)
    admin = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = sa.make_url(url).database + "_backup"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    restored = sa.make_url(url).set(database=name)
    subprocess.run(["psql", "--quiet", "--set", "ON_ERROR_STOP=1", "--file", str(dump), "--dbname",
                    restored.render_as_string(hide_password=False).replace("+psycopg", "")],
                   check=True, timeout=120, capture_output=True)

    def read_pg(decision_id: str) -> bytes | None:
        engine = sa.create_engine(restored)
        try:
            with engine.connect() as conn:
                found = conn.execute(sa.text("SELECT contact_ciphertext FROM decisions WHERE id = :d"),
                                     {"d": decision_id}).scalar()
        finally:
            engine.dispose()
        return bytes(found) if found is not None else None
    read_pg.drop = lambda: _drop(admin, name)  # type: ignore[attr-defined]
    return read_pg


def _drop(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def holds(data: bytes, key: bytes) -> bool:
    """Whether `data` (a database file, or a dump where bytea is written in hex) holds the bytes `key`."""
    return key in data or key.hex().encode() in data


def keystore_bytes(gw: Gateway, tmp_path: Path) -> bytes:
    """The key store as bytes: its SQLite file and WAL, or a pg_dump of its PostgreSQL database."""
    with gw.app.app_context():
        url = keystore.engine().url
        keystore.engine().dispose()
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    out = tmp_path / "keys.sql"
    subprocess.run(["pg_dump", "--no-owner", "--file", str(out), "--dbname",
                    url.render_as_string(hide_password=False).replace("+psycopg", "")], check=True, timeout=120)
    return out.read_bytes()


@BOTH
def test_a_backup_taken_before_the_purge_cannot_be_decrypted_after_it(gateway: Gateway, tmp_path: Path) -> None:
    made = decide(gateway, 21, amount=7421, email="backup-shredded@example.kz")
    kept = decide(gateway, 22, amount=7422, email="backup-kept@example.kz")
    gateway.client.post(f"/v1/decisions/{kept['id']}/hold", json={"reason": "Court case"},
                        headers=gateway.auth("auditor"))
    deployment_key = gateway.app.config["CONTACT_KEY_BYTES"]
    wrapped = wrapped_key(gateway, made["id"])
    assert wrapped is not None
    columns = [r[1] for r in sql(gateway, "SELECT 1, 'x'")]  # the connection works; the column is gone:
    assert columns and "data_key" not in sql(gateway, "SELECT * FROM decisions WHERE id = :d", d=made["id"])[0]._fields

    backup = backup_of_main_database(gateway, tmp_path / "backup")
    try:
        ciphertext = backup(made["id"])
        assert ciphertext is not None
        # Before the purge: the backup, the key store as it is and the deployment key open the contact.
        with gateway.app.app_context():
            assert decrypt_contact(deployment_key, made["id"], ciphertext, keystore.wrapped(made["id"])) == {
                "email": made["email"]}
        # The backup never held the key, and the deployment key alone does not open the ciphertext.
        assert not holds(database_bytes(gateway, tmp_path), wrapped)
        with pytest.raises(Exception):  # noqa: B017, PT011 — InvalidTag or a version error: unreadable either way
            cipher(deployment_key).decrypt(b"\x01" + ciphertext[1:], record_id=made["id"])

        assert purge(gateway) == 1  # the clock past the retention period; the held one stays

        # After the purge: the same backup, the key store as it is now and the deployment key open nothing.
        assert backup(made["id"]) == ciphertext  # the backup still holds the ciphertext…
        with gateway.app.app_context():
            assert keystore.wrapped(made["id"]) is None  # …but the key it needs is gone
            assert decrypt_contact(deployment_key, made["id"], ciphertext, keystore.wrapped(made["id"])) == {}
            assert decrypt_contact(deployment_key, kept["id"], backup(kept["id"]), keystore.wrapped(kept["id"])) == {
                "email": kept["email"]}  # the held decision's contact: still readable
        stored = keystore_bytes(gateway, tmp_path)
        assert not holds(stored, wrapped)  # no trace of the destroyed key in the key store's file (or its dump)
        held_key = wrapped_key(gateway, kept["id"])
        assert held_key is not None and holds(stored, held_key)  # the scan can fail
    finally:
        getattr(backup, "drop", lambda: None)()


@BOTH
def test_a_failure_between_the_key_and_the_decision_leaves_no_decision_without_its_key(gateway: Gateway) -> None:
    """The key store commits first; a main database that then refuses the decision leaves a key without a
    decision (garbage the sweep removes), never a decision without its key."""
    before = decide(gateway, 23, amount=7423, email="before-failure@example.kz")
    with gateway.app.app_context():  # a real failure of the main database, after the key store committed
        db.session.execute(sa.text(
            "CREATE TRIGGER refuse_decisions BEFORE INSERT ON decisions BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            if gateway.backend == "sqlite" else
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'disk full'; END $$; "
            "CREATE TRIGGER refuse_decisions BEFORE INSERT ON decisions FOR EACH ROW EXECUTE FUNCTION refuse()"))
        db.session.commit()
        keys_before = set(keystore.older_than(dt.datetime.now(dt.UTC) + dt.timedelta(days=1), limit=10_000))
    count = gateway.count("decisions")
    keystore.forget_pool()  # the failed decision commits its key (with the next ones) now
    failed = gateway.decide()
    assert failed.status_code == 503 and failed.get_json()["error"]["code"] == "database_unavailable"
    assert gateway.count("decisions") == count
    with gateway.app.app_context():
        db.session.execute(sa.text("DROP TRIGGER refuse_decisions" + (" ON decisions; DROP FUNCTION refuse()"
                                                                       if gateway.backend == "postgres" else "")))
        db.session.commit()
        new_keys = set(keystore.older_than(dt.datetime.now(dt.UTC) + dt.timedelta(days=1), limit=10_000)) - keys_before
    # Keys were committed (the failed decision's among them, with those committed ahead): none has a decision.
    assert new_keys and sql(gateway, "SELECT count(*) AS n FROM decisions WHERE id IN ({})".format(
        ", ".join(f"'{k}'" for k in new_keys)))[0].n == 0
    # Every decision recorded has its key.
    after = decide(gateway, 24, amount=7424, email="after-failure@example.kz")
    ids = [r.id for r in sql(gateway, "SELECT id FROM decisions")]
    with gateway.app.app_context():
        assert set(keystore.wrapped_many(ids)) == set(ids) and {before["id"], after["id"]} <= set(ids)
        orphans = set(keystore.older_than(dt.datetime.now(dt.UTC) + dt.timedelta(days=1), limit=10_000)) - set(ids)
        assert new_keys - {after["id"]} <= orphans
        # The sweep removes the keys without a decision once older than the grace period, and nothing else.
        assert retention.sweep(now=dt.datetime.now(dt.UTC)).keys == 0  # too young: their decisions may still come
        assert retention.sweep(now=dt.datetime.now(dt.UTC) + 2 * retention.KEY_GRACE).keys == len(orphans)
        keystore.forget_pool()  # the clock moved past the keys committed ahead: never hand them out now
        assert keystore.wrapped_many(sorted(orphans)) == {} and set(keystore.wrapped_many(ids)) == set(ids)


def test_a_key_store_that_refuses_the_key_records_nothing(gateway: Gateway) -> None:
    with gateway.app.app_context(), keystore.engine().begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER refuse_keys BEFORE INSERT ON data_keys BEGIN "
                             "SELECT RAISE(ABORT, 'key store down'); END")
    count, leaves = gateway.count("decisions"), gateway.count("log_leaves")
    failed = gateway.decide()
    assert failed.status_code == 503 and failed.get_json()["error"]["code"] == "database_unavailable"
    assert "key store" in failed.get_json()["error"]["message"]
    assert gateway.count("decisions") == count and gateway.count("log_leaves") == leaves


def test_the_sweep_keeps_the_keys_of_batch_rows_not_yet_decided_and_destroys_those_of_purged_decisions(
        gateway: Gateway) -> None:
    made = decide(gateway, 25, amount=7425, email="sweep@example.kz")
    rows = [{"idempotency_key": "k-1", "subject": {**gateway.sample["subject"], "contact": {"email": "b@example.kz"}},
             "features": gateway.sample["features"]}]
    resp = gateway.client.post("/v1/models/german-credit/decision-batches", json={"rows": rows},
                               headers=gateway.auth("agency_a"))
    assert resp.status_code == 202, resp.get_json()
    planned = sql(gateway, "SELECT planned_id FROM decision_batch_rows")[0].planned_id
    assert wrapped_key(gateway, planned) is not None  # stored at intake, before the row
    with gateway.app.app_context():
        # A purge cut short between its commit and the key store: the key of a purged decision is left over.
        db.session.execute(sa.text("UPDATE decisions SET purged_at = :t WHERE id = :d"),
                           {"t": dt.datetime.now(dt.UTC), "d": made["id"]})
        db.session.commit()
        assert retention.sweep(now=dt.datetime.now(dt.UTC) + 2 * retention.KEY_GRACE).keys >= 1
        keystore.forget_pool()  # the clock moved past the keys committed ahead: never hand them out now
        assert keystore.wrapped(made["id"]) is None and keystore.wrapped(planned) is not None
    # The batch decides the row with the key made at intake: its contact is readable through the key store.
    kind = BatchKind(gateway.app)
    while kind.run_once() > 0:
        pass
    with gateway.app.app_context():
        decision = db.session.get(Decision, planned)
        assert decision is not None and contact_of(decision) == {"email": "b@example.kz"}


@pytest.fixture
def served(gateway: Gateway) -> Iterator[str]:
    """The gateway over real HTTP (for `gateway-verify log`)."""
    server = make_server("127.0.0.1", 0, gateway.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway_extra(tmp_path: Path) -> dict[str, Any]:
    """Email notices go to the development file channel (`make run`): `.eml` files in tmp_path/notices."""
    return {"NOTIFY_ROUTES": {"email": "file"}, "NOTIFY_FILE_DIR": str(tmp_path / "notices")}


@BOTH
def test_the_purge_removes_the_notice_files_of_the_file_channel(gateway: Gateway, tmp_path: Path) -> None:
    gone = decide(gateway, 26, amount=7426, email="eml-gone@example.kz")
    kept = decide(gateway, 27, amount=7427, email="eml-kept@example.kz")
    pov = "POV-EML-Менің табысым"
    review(gateway, gone["id"], pov)
    gateway.client.post(f"/v1/decisions/{kept['id']}/hold", json={"reason": "Audit"}, headers=gateway.auth("auditor"))
    dispatcher = Dispatcher(gateway.app, name="test-files")
    try:
        while dispatcher.run_once() > 0:
            pass
    finally:
        dispatcher.close()
    folder = tmp_path / "notices"
    files = sorted(folder.glob("*.eml"))

    def scan() -> bytes:
        return b"".join(p.read_bytes() for p in folder.iterdir())
    assert len(files) >= 2 and found_in(scan(), [gone["email"].encode(), kept["email"].encode()]) != []
    # The review must not stay open (an open review keeps the data): the person withdraws it.
    rid = sql(gateway, "SELECT id FROM reviews WHERE decision_id = :d", d=gone["id"])[0].id
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE reviews SET status = 'withdrawn' WHERE id = :r"), {"r": rid})
        db.session.commit()
    assert purge(gateway) == 1
    left = scan()
    assert found_in(left, secrets_of(gone, pov)) == []  # neither the IIN, the contact, an input nor the view
    assert kept["email"].encode() in left  # the held decision's notice stays: the scan can fail
    notices = {r.id for r in sql(gateway, "SELECT id FROM notifications WHERE decision_id = :d", d=gone["id"])}
    assert not any(p.name.split(".")[0] in notices for p in folder.iterdir())


@BOTH
@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="1000000/minute")  # every inclusion proof, from one address
def test_leaves_written_before_commitments_are_redacted_and_the_log_still_verifies(
        gateway: Gateway, served: str, tmp_path: Path) -> None:
    """A deployment migrated from before commitments holds leaves with inputs and reasons in clear: the purge
    redacts them (the leaf hash stays, a purge leaf names it) and `gateway-verify log` accepts them, saying so."""
    made = decide(gateway, 28, amount=7428, email="legacy-leaf@example.kz")
    other = decide(gateway, 29, amount=7429, email="legacy-kept@example.kz")
    gateway.client.post(f"/v1/decisions/{other['id']}/hold", json={"reason": "Audit"}, headers=gateway.auth("auditor"))
    inputs = sql(gateway, "SELECT inputs FROM decisions WHERE id = :d", d=made["id"])[0].inputs
    inputs = inputs if isinstance(inputs, dict) else json.loads(inputs)
    rid = review(gateway, made["id"], "POV-LEGACY-LEAF")
    now = dt.datetime.now(dt.UTC)
    with gateway.app.app_context():  # leaves in the old form, as an earlier version wrote them
        db.session.execute(sa.text("UPDATE reviews SET status = 'withdrawn' WHERE id = :r"), {"r": rid})
        for did, values, object_id, reasons in ((made["id"], inputs, rid, "LEGACY-REASONS-SECRET"),
                                                (other["id"], inputs | {"credit_amount": 7429}, other["id"],
                                                 "LEGACY-REASONS-KEPT")):
            old = leaf_values("decision:recorded", did, {"decision_id": did, "inputs": values,
                                                         "explanation": {"attributions": {"credit_amount": 0.125}}}, now)
            db.session.execute(sa.text("UPDATE log_leaves SET record = :record, leaf_hash = :leaf_hash "
                                       "WHERE object_id = :d AND kind = 'decision:recorded'"), {**old, "d": did})
            db.session.execute(sa.insert(sa.table("log_leaves", *(sa.column(c) for c in (
                "kind", "object_id", "leaf_hash", "record", "created_at")))),
                leaf_values("review:resolved", object_id, {"decision_id": did, "reasons": {"kk": reasons}}, now))
        db.session.commit()
    sequence(gateway)
    verifier_key = gateway.client.get("/v1/log/key").get_json()["verifier_key"]
    verifier = Verifier.parse(verifier_key)
    old_receipt = receipt(gateway, made["id"])
    auditor = gateway.auth("auditor")

    def verify_cli() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "gateway-verify"), "log", served, "--key", verifier_key,
                               "--token", gateway.keys["auditor"]], capture_output=True, text=True, timeout=120)

    assert check_log(served, verifier, headers=auditor).redacted == []
    assert purge(gateway) == 1
    sequence(gateway)
    report = check_log(served, verifier, headers=auditor)
    assert len(report.redacted) == 2  # the purged decision's two legacy leaves
    cli = verify_cli()
    assert cli.returncode == 0 and "2 leaf record(s) were redacted by the retention purge" in cli.stdout, cli.stderr
    # Marking a leaf redacted without a purge leaf that names it (hiding a record) is detected.
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE log_leaves SET redacted_at = :t WHERE object_id = :d AND "
                                   "record LIKE '%LEGACY-REASONS-KEPT%'"), {"t": now, "d": other["id"]})
        db.session.commit()
    with pytest.raises(VerificationFailed, match="no decision:purged leaf names it"):
        check_log(served, verifier, headers=auditor)
    cli = verify_cli()
    assert cli.returncode == 1 and "no decision:purged leaf names it" in cli.stderr
    with gateway.app.app_context():
        db.session.execute(sa.text("UPDATE log_leaves SET redacted_at = NULL WHERE object_id = :d"),
                           {"d": other["id"]})
        db.session.commit()
    verify_receipt(old_receipt, verifier)  # the receipt issued before the purge still verifies
    after = receipt(gateway, made["id"])
    assert after["leaf_hash"] == old_receipt["leaf_hash"] and after["record"] is None
    assert "redacted" in json.loads(after["redacted_record"])
    verify_receipt(after, verifier)
    purge_leaf = json.loads(sql(gateway, "SELECT record FROM log_leaves WHERE kind = 'decision:purged'")[0].record)
    redacted = {r.leaf_hash for r in sql(gateway, "SELECT leaf_hash FROM log_leaves WHERE redacted_at IS NOT NULL")}
    assert set(purge_leaf["redacted_leaves"]) == redacted and len(redacted) == 2
    # No trace of the legacy leaves' clear data in the database; the held decision's legacy leaf keeps its own.
    data = database_bytes(gateway, tmp_path)
    assert found_in(data, secrets_of(made) + [b"LEGACY-REASONS-SECRET"]) == []
    assert b"LEGACY-REASONS-KEPT" in data
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(old_receipt))
    cli = subprocess.run([str(BIN / "gateway-verify"), "receipt", str(path), "--key", verifier_key],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stdout + cli.stderr


@BOTH
def test_migration_0019_moves_every_wrapped_key_into_the_key_store_and_back(gateway: Gateway) -> None:
    """Upgrading a database from before the key store loses nothing: each wrapped key (decisions, batch rows
    not yet decided, contacts re-wrapped by 0012) lands in the key store byte for byte, then the column goes."""
    made = decide(gateway, 30, amount=7430, email="migrated@example.kz")
    legacy = decide(gateway, 31, amount=7431, email="legacy@example.kz")
    key = gateway.app.config["CONTACT_KEY_BYTES"]
    with gateway.app.app_context():
        db.session.remove()
        downgrade(revision="0018")  # the schema before the key store: the keys copied back into the rows
        rows = {r.id: bytes(r.data_key) for r in db.session.execute(sa.text("SELECT id, data_key FROM decisions"))}
        assert rows[made["id"]] == keystore.wrapped(made["id"])
        # A deployment that never had a key store: its keys are only in the rows; one contact is still the old
        # form (encrypted with the deployment key itself), which migration 0012 re-wraps.
        keystore.destroy(list(rows))
        old = cipher(key).encrypt(json.dumps({"email": legacy["email"]}).encode(), record_id=legacy["id"])
        db.session.execute(sa.text("UPDATE decisions SET contact_ciphertext = :c, data_key = NULL WHERE id = :d"),
                           {"c": old, "d": legacy["id"]})
        assert rewrap_legacy_rows(db.session.connection(), key) == 1
        db.session.commit()
        rows = {r.id: bytes(r.data_key) for r in db.session.execute(sa.text("SELECT id, data_key FROM decisions"))}
        db.session.remove()
        upgrade()
        assert keystore.wrapped_many(list(rows)) == rows
        columns = {c["name"] for c in sa.inspect(db.engine).get_columns("decisions")}
        assert "data_key" not in columns
        ciphertext = db.session.execute(sa.text("SELECT contact_ciphertext FROM decisions WHERE id = :d"),
                                        {"d": legacy["id"]}).scalar_one()
        assert decrypt_contact(key, legacy["id"], bytes(ciphertext), keystore.wrapped(legacy["id"])) == {
            "email": legacy["email"]}
        db.session.remove()
        upgrade()  # again: nothing to do, nothing lost
        assert keystore.wrapped_many(list(rows)) == rows


def test_the_key_store_is_a_database_of_its_own_next_to_a_sqlite_main_database(gateway: Gateway) -> None:
    from gateway.config import keystore_database_url

    assert keystore_database_url("sqlite:///gateway.db", None) == "sqlite:///gateway.keys.db"
    assert keystore_database_url("sqlite:////var/lib/gw/main.sqlite3", None) == "sqlite:////var/lib/gw/main.keys.sqlite3"
    assert keystore_database_url("sqlite://", None) == "sqlite://"
    assert keystore_database_url("postgresql://db/gw", "postgresql://keys/gw_keys") == "postgresql://keys/gw_keys"
    with gateway.app.app_context():
        assert keystore.engine().url != db.engine.url and not keystore.shares_main_database()
        if POSTGRES_URL is None:
            assert str(keystore.engine().url.database).endswith("gateway.keys.db")
