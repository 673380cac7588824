"""Signed checkpoints (C2SP signed-note) and the standalone verifier's receipt check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.auditlog import merkle
from gateway.auditlog.note import Checkpoint, NoteError, Signer, Verifier
from gateway.verify import VerificationFailed, main, verify_receipt
from tests.auditlog.test_merkle import Store

SIGNER = Signer.from_seed("gateway.test/log", bytes(range(32)))


def receipt_for(records: list[str], index: int) -> dict[str, object]:
    hashes = [merkle.leaf_hash(r.encode()) for r in records]
    store = Store(hashes)
    note = SIGNER.sign(Checkpoint("gateway.test/log", len(hashes), store.root).text())
    return {"leaf_index": index, "leaf_hash": hashes[index].hex(), "record": records[index],
            "proof": [p.hex() for p in merkle.inclusion_proof(store, index, len(hashes))], "checkpoint": note}


def test_a_signed_checkpoint_round_trips_and_any_change_fails() -> None:
    checkpoint = Checkpoint("gateway.test/log", 8, merkle.EMPTY_ROOT)
    note = SIGNER.sign(checkpoint.text())
    verifier = Verifier.parse(SIGNER.verifier_key)
    assert Checkpoint.parse(verifier.open(note)) == checkpoint
    assert note.splitlines()[0] == "gateway.test/log" and note.splitlines()[4].startswith("\u2014 gateway.test/log ")
    with pytest.raises(NoteError, match="does not verify"):
        verifier.open(note.replace("\n8\n", "\n9\n"))
    other = Signer.from_seed("gateway.test/log", bytes(32))
    with pytest.raises(NoteError, match="no signature by the log's key"):
        verifier.open(other.sign(checkpoint.text()))  # same name, another key: its ID differs, so it is ignored
    with pytest.raises(NoteError):
        Verifier.parse(SIGNER.verifier_key.replace("+", "+0", 1))  # the key ID no longer matches


def test_go_note_compatible_key_ids() -> None:
    # golang.org/x/mod/sumdb/note: the key ID is SHA-256(name || "\n" || 0x01 || key)[:4], written as hex.
    name, kid, encoded = SIGNER.verifier_key.split("+", 2)
    assert name == "gateway.test/log" and len(kid) == 8 and encoded.startswith("A")  # base64 of 0x01 ‖ key


def test_receipts_verify_and_tampering_is_caught(tmp_path: Path) -> None:
    records = [json.dumps({"kind": "decision:recorded", "n": i}) for i in range(13)]
    verifier = Verifier.parse(SIGNER.verifier_key)
    good = receipt_for(records, 5)
    assert verify_receipt(good, verifier).size == 13
    for change in ({"record": records[6]}, {"leaf_index": 6}, {"proof": list(reversed(good["proof"]))},  # type: ignore[call-overload]
                   {"checkpoint": receipt_for(records[:12], 5)["checkpoint"]}):
        with pytest.raises(VerificationFailed):
            verify_receipt(good | change, verifier)
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(good))
    assert main(["receipt", str(path), "--key", SIGNER.verifier_key]) == 0
    path.write_text(json.dumps(good | {"leaf_index": 4}))
    assert main(["receipt", str(path), "--key", SIGNER.verifier_key]) == 1


def test_the_verifier_imports_neither_flask_nor_the_database_code() -> None:
    code = ("import sys, gateway.verify; bad = {m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'sqlalchemy', 'flask_sqlalchemy', 'werkzeug')}; print(sorted(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_the_installed_gateway_verify_command_checks_a_receipt(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "gateway-verify"
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt_for([json.dumps({"n": i}) for i in range(5)], 3)))
    ok = subprocess.run([str(command), "receipt", str(path), "--key", SIGNER.verifier_key],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: the leaf is in gateway.test/log's signed tree of 5"), ok
    other = Signer.from_seed("gateway.test/log", bytes(32))
    bad = subprocess.run([str(command), "receipt", str(path), "--key", other.verifier_key],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("FAILED:"), bad
