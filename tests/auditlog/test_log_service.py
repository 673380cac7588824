"""The log in the gateway: sequencing, signed checkpoints, proofs over HTTP, receipts, and tamper trials."""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from gateway.auditlog import merkle
from gateway.auditlog.note import Checkpoint, Verifier
from gateway.auditlog.sequencer import SequenceKind
from gateway.extensions import db
from gateway.verify import VerificationFailed, verify_log, verify_receipt
from tests.conftest import Gateway
from tests.support.citizens import notice_token, valid_iin

BOTH = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                               indirect=True)


def decide(gw: Gateway, n: int) -> list[dict[str, Any]]:
    made = []
    for i in range(n):
        body = copy.deepcopy(gw.sample)
        body["subject"]["iin"] = valid_iin(f"9210293{5000 + i:04d}") if i % 10 != 9 else valid_iin("06121160001")
        resp = gw.decide(body)
        assert resp.status_code == 201, resp.get_json()
        made.append(resp.get_json())
    return made


def sequence(gw: Gateway, *, every_s: float = 0.0) -> int:
    gw.app.config["LOG_CHECKPOINT_INTERVAL_S"] = every_s
    kind = SequenceKind(gw.app, settings=SequenceKind.read_settings(gw.app.config))
    total = 0
    while (n := kind.run_once()) > 0:
        total += n
    return total


def key(gw: Gateway) -> Verifier:
    return Verifier.parse(gw.client.get("/v1/log/key").get_json()["verifier_key"])


@BOTH
def test_decisions_get_consecutive_indices_a_signed_checkpoint_and_a_receipt(gateway: Gateway) -> None:
    made = decide(gateway, 5)
    did = made[0]["decision_id"]
    token = notice_token(gateway, did)
    citizen = {"Authorization": f"Bearer {token}"}
    pending = gateway.client.get(f"/v1/decisions/{did}/receipt", headers=citizen)
    assert pending.status_code == 202 and pending.headers["Retry-After"] and pending.get_json()["status"] == "pending"
    assert gateway.client.get("/v1/log/checkpoint").status_code == 404  # nothing signed yet

    with gateway.app.app_context():
        leaves = db.session.execute(sa.text("SELECT count(*) FROM log_leaves")).scalar_one()
        decisions = db.session.execute(sa.text("SELECT count(*) FROM log_leaves WHERE kind = 'decision:recorded'")).scalar_one()
    assert decisions == 5 and leaves >= 5  # and the seeded instance's own (model registered, keys) where kept
    assert sequence(gateway) == leaves
    with gateway.app.app_context():
        seqs = sorted(db.session.execute(sa.text("SELECT seq FROM log_leaves")).scalars())
    assert seqs == list(range(leaves))
    note = gateway.client.get("/v1/log/checkpoint")
    assert note.status_code == 200 and note.mimetype == "text/plain"
    checkpoint = Checkpoint.parse(key(gateway).open(note.get_data(as_text=True)))
    assert checkpoint.size == leaves

    receipt = gateway.client.get(f"/v1/decisions/{did}/receipt", headers=citizen)
    assert receipt.status_code == 200, receipt.get_json()
    assert verify_receipt(receipt.get_json(), key(gateway)).size == leaves
    # Another person's receipt is the 404 of a decision that does not exist; auditors read any.
    assert gateway.client.get(f"/v1/decisions/{made[1]['decision_id']}/receipt", headers=citizen).status_code == 404
    assert gateway.client.get(f"/v1/decisions/{did}/receipt", headers=gateway.auth("auditor")).status_code == 200
    assert gateway.client.get(f"/v1/decisions/{did}/receipt", headers=gateway.auth("admin")).status_code == 404


@BOTH
def test_proofs_over_http_verify_and_bad_parameters_are_named(gateway: Gateway) -> None:
    decide(gateway, 3)
    sequence(gateway)
    first = Checkpoint.parse(key(gateway).open(gateway.client.get("/v1/log/checkpoint").get_data(as_text=True)))
    decide(gateway, 4)
    sequence(gateway)
    second = Checkpoint.parse(key(gateway).open(gateway.client.get("/v1/log/checkpoint").get_data(as_text=True)))
    assert second.size == first.size + 4
    body = gateway.client.get(f"/v1/log/proof/consistency?first={first.size}&second={second.size}").get_json()
    merkle.verify_consistency(first.size, second.size, first.root, second.root, [bytes.fromhex(p) for p in body["proof"]])
    leaves = gateway.client.get(f"/v1/log/leaves?start=0&end={second.size}",
                                headers=gateway.auth("auditor")).get_json()["leaves"]
    assert [leaf["index"] for leaf in leaves] == list(range(second.size))
    for leaf in leaves:
        assert merkle.leaf_hash(leaf["record"].encode()).hex() == leaf["leaf_hash"]
        proof = gateway.client.get(f"/v1/log/proof/inclusion?index={leaf['index']}&size={second.size}").get_json()["proof"]
        merkle.verify_inclusion(leaf["index"], second.size, bytes.fromhex(leaf["leaf_hash"]),
                                [bytes.fromhex(p) for p in proof], second.root)
    n = second.size
    # A malformed parameter is 422 naming it; a tree or a leaf the log does not have is 404 naming it.
    for query, field, status in [(f"index={n}&size={n}", "index", 404), (f"index=0&size={n + 1}", "size", 404),
                                 ("index=-1&size=3", "index", 422), ("index=0&size=0", "size", 422),
                                 ("index=x&size=3", "index", 422)]:
        resp = gateway.client.get(f"/v1/log/proof/inclusion?{query}")
        assert resp.status_code == status, (query, resp.get_json())
        assert field in str(resp.get_json()["error"]), (query, resp.get_json())
    assert gateway.client.get("/v1/log/proof/consistency?first=5&second=3").status_code == 404
    assert gateway.client.get("/v1/log/leaves?start=0").status_code == 401
    assert gateway.client.get("/v1/log/leaves?start=0", headers=gateway.auth("agency_a")).status_code == 403


@pytest.fixture
def served(gateway: Gateway) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, gateway.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


EDITS = ("change_record", "delete_leaf", "swap_leaves", "insert_leaf", "change_node", "rewind")


def _tamper(gw: Gateway, edit: str, rng: random.Random, size: int, checkpoints: list[int]) -> None:
    """One rewrite of the stored log, as someone with write access to the database would make it."""
    big = size * 100
    with gw.app.app_context(), db.engine.begin() as conn:
        run = lambda sql, **p: conn.execute(sa.text(sql), p)  # noqa: E731
        i, j = sorted(rng.sample(range(size), 2))
        if edit == "change_record":
            run("UPDATE log_leaves SET record = replace(record, '\"score\":', '\"score\": ') WHERE seq = :i", i=i)
            run("UPDATE log_leaves SET record = record || ' ' WHERE seq = :i AND kind <> 'decision:recorded'", i=i)
        elif edit == "delete_leaf":
            run("DELETE FROM log_leaves WHERE seq = :i", i=i)
            run("UPDATE log_leaves SET seq = seq + :big WHERE seq > :i", i=i, big=big)
            run("UPDATE log_leaves SET seq = seq - :big - 1 WHERE seq > :big", big=big)
        elif edit == "swap_leaves":
            run("UPDATE log_leaves SET seq = -1 WHERE seq = :i", i=i)
            run("UPDATE log_leaves SET seq = :i WHERE seq = :j", i=i, j=j)
            run("UPDATE log_leaves SET seq = :j WHERE seq = -1", j=j)
        elif edit == "insert_leaf":
            row = run("SELECT kind, object_id, leaf_hash, record, created_at FROM log_leaves WHERE seq = :j", j=j).one()
            run("UPDATE log_leaves SET seq = seq + :big WHERE seq >= :i", i=i, big=big)
            run("UPDATE log_leaves SET seq = seq - :big + 1 WHERE seq >= :big", big=big)
            run("INSERT INTO log_leaves (kind, object_id, leaf_hash, record, created_at, seq) "
                "VALUES (:kind, :object_id, :leaf_hash, :record, :created_at, :i)", **row._asdict(), i=i)
        elif edit == "change_node":
            level, idx = rng.choice(run("SELECT level, idx FROM log_nodes ORDER BY level, idx").all())
            run("UPDATE log_nodes SET hash = :h WHERE level = :l AND idx = :x", h=rng.randbytes(32), l=level, x=idx)
        elif edit == "rewind":
            keep = rng.choice(checkpoints[:-1])
            run("DELETE FROM log_leaves WHERE seq >= :k", k=keep)
            run("DELETE FROM log_checkpoints WHERE size > :k", k=keep)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.gateway_config(RATELIMIT_PER_CALLER="1000000/minute")  # thousands of proofs from one address
def test_gateway_verify_log_detects_every_rewrite(gateway: Gateway, served: str) -> None:
    """Random rewrites of the stored log (leaf records, leaves deleted, swapped or inserted, tree nodes,
    the tree rewound to an earlier checkpoint): `gateway-verify log` with a checkpoint saved before
    detects every one."""
    checkpoints = []
    for _ in range(4):
        decide(gateway, 6)
        sequence(gateway)
        checkpoints.append(Checkpoint.parse(key(gateway).open(gateway.client.get("/v1/log/checkpoint").get_data(as_text=True))).size)
    verifier = key(gateway)
    auditor = {"Authorization": f"Bearer {gateway.keys['auditor']}"}
    checkpoint, saved = verify_log(served, verifier, headers=auditor)  # the honest log verifies
    assert checkpoint.size == checkpoints[-1] >= 24 + 7
    path = gateway.app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
    with gateway.app.app_context():
        for engine in db.engines.values():  # the main database and the key store
            engine.dispose()
    honest = Path(path).read_bytes()
    rng = random.Random(20260711)
    trials = dict.fromkeys(EDITS, 0)
    detected = dict.fromkeys(EDITS, 0)
    for n in range(40 * len(EDITS)):
        edit = EDITS[n % len(EDITS)]
        with gateway.app.app_context():
            for engine in db.engines.values():  # the main database and the key store
                engine.dispose()
        Path(path).write_bytes(honest)
        _tamper(gateway, edit, rng, checkpoint.size, checkpoints)
        trials[edit] += 1
        try:
            verify_log(served, verifier, saved, headers=auditor)
        except VerificationFailed:
            detected[edit] += 1
    assert detected == trials, f"undetected rewrites: { {e: trials[e] - detected[e] for e in EDITS} }"
