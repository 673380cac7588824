"""`gateway-verify`: check a decision's receipt, or a whole log, without trusting the gateway.

Standalone: it needs the standard library and `cryptography` only (no Flask, no database code), so a
person, a lawyer or an auditor can install and run it anywhere.

    gateway-verify receipt receipt.json --key 'gateway.example/log+1a2b3c4d+AR…'
    gateway-verify log https://gateway.example --key '…' --token gwk_… --state checkpoint.txt

A receipt is the JSON the gateway gives for a decision: {"leaf_index", "leaf_hash" (hex), "record" (the
canonical record the leaf hashes, when still held), "proof" [hex…], "checkpoint" (a signed note)}.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.auditlog import merkle
from gateway.auditlog.note import Checkpoint, NoteError, Verifier

PAGE = 1000


class VerificationFailed(Exception):
    """The receipt or the log does not verify; the message says what."""


def verify_receipt(receipt: dict[str, Any], key: Verifier) -> Checkpoint:
    """Check a receipt: the log's signature, the leaf's hash of its record, and the inclusion proof."""
    try:
        checkpoint = Checkpoint.parse(key.open(str(receipt["checkpoint"])))
        index, leaf = int(receipt["leaf_index"]), bytes.fromhex(str(receipt["leaf_hash"]))
        proof = [bytes.fromhex(str(p)) for p in receipt["proof"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationFailed(f"the receipt is malformed or its checkpoint is not signed by the log: {exc}") from None
    record = receipt.get("record")
    if record is not None and merkle.leaf_hash(str(record).encode()) != leaf:
        raise VerificationFailed("the record does not hash to the receipt's leaf hash")
    try:
        merkle.verify_inclusion(index, checkpoint.size, leaf, proof, checkpoint.root)
    except merkle.ProofError as exc:
        raise VerificationFailed(f"the leaf is not in the signed tree: {exc}") from None
    return checkpoint


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - the user gives the log's URL
        data: bytes = resp.read()
        return data


@dataclass(frozen=True)
class LogReport:
    """What `check_log` established: the signed checkpoint (and its note), and the redacted leaves' indices."""

    checkpoint: Checkpoint
    note: str
    redacted: list[int]


def verify_log(base: str, key: Verifier, previous: str | None = None, *, proofs: int = 256,
               headers: dict[str, str] | None = None) -> tuple[Checkpoint, str]:
    """`check_log`, returning the signed checkpoint and its note."""
    report = check_log(base, key, previous, proofs=proofs, headers=headers)
    return report.checkpoint, report.note


def check_log(base: str, key: Verifier, previous: str | None = None, *, proofs: int = 256,
              headers: dict[str, str] | None = None) -> LogReport:
    """Download every leaf, recompute the root, check it against the signed checkpoint and an earlier one,
    and check the log's own inclusion proofs for `proofs` leaves (all of them when the log is smaller):
    every stored node is a sibling in some leaf's proof, so a rewritten node shows up there.

    A leaf whose record the retention purge redacted (it held the person's data in clear: written before
    records held commitments) is served without its record: it is accepted by its stored hash only if a
    `decision:purged` leaf of the log, whose own record verifies, names that hash in `redacted_leaves`.
    """
    base = base.rstrip("/")
    withheld: dict[str, list[int]] = {}  # leaf hash → indices of leaves served without their record
    named: set[str] = set()  # hashes the purge leaves name as redacted
    note = _get(f"{base}/v1/log/checkpoint").decode()
    try:
        checkpoint = Checkpoint.parse(key.open(note))
    except NoteError as exc:
        raise VerificationFailed(f"the log's checkpoint: {exc}") from None
    hashes: list[bytes] = []
    while len(hashes) < checkpoint.size:
        end = min(len(hashes) + PAGE, checkpoint.size)
        page = json.loads(_get(f"{base}/v1/log/leaves?start={len(hashes)}&end={end}", headers))
        leaves = page["leaves"]
        if not leaves:
            raise VerificationFailed(f"the log serves no leaf at index {len(hashes)} of {checkpoint.size}")
        for leaf in leaves:
            if int(leaf["index"]) != len(hashes):
                raise VerificationFailed(f"leaf {leaf['index']} came where leaf {len(hashes)} was due")
            digest = bytes.fromhex(leaf["leaf_hash"])
            if leaf.get("record") is None:
                withheld.setdefault(digest.hex(), []).append(int(leaf["index"]))
            elif merkle.leaf_hash(str(leaf["record"]).encode()) != digest:
                raise VerificationFailed(f"leaf {leaf['index']}: its record does not hash to its leaf hash")
            else:
                named.update(_redacted_by(str(leaf["record"])))
            hashes.append(digest)
    if merkle.root_of(hashes) != checkpoint.root:
        raise VerificationFailed(f"the leaves do not give the signed root of the tree of {checkpoint.size}")
    unexplained = sorted(i for digest, indices in withheld.items() if digest not in named for i in indices)
    if unexplained:
        raise VerificationFailed(f"leaf {unexplained[0]} is served without its record and no decision:purged leaf "
                                 f"names it as redacted ({len(unexplained)} such leaves)")
    step = max(1, checkpoint.size // max(proofs, 1))
    for index in sorted({*range(0, checkpoint.size, step), checkpoint.size - 1} if checkpoint.size else set()):
        body = json.loads(_get(f"{base}/v1/log/proof/inclusion?index={index}&size={checkpoint.size}"))
        try:
            merkle.verify_inclusion(index, checkpoint.size, hashes[index], [bytes.fromhex(p) for p in body["proof"]],
                                    checkpoint.root)
        except (merkle.ProofError, KeyError, ValueError) as exc:
            raise VerificationFailed(f"the log's inclusion proof for leaf {index} fails: {exc}") from None
    if previous is not None:
        try:
            before = Checkpoint.parse(key.open(previous))
        except NoteError as exc:
            raise VerificationFailed(f"the saved checkpoint: {exc}") from None
        if before.origin != checkpoint.origin or before.size > checkpoint.size:
            raise VerificationFailed(f"the log shrank or changed origin: {before.size} then {checkpoint.size} leaves")
        if merkle.root_of(hashes[: before.size]) != before.root:
            raise VerificationFailed(f"the first {before.size} leaves were rewritten since the saved checkpoint")
        if before.size:
            body = json.loads(_get(f"{base}/v1/log/proof/consistency?first={before.size}&second={checkpoint.size}"))
            try:
                merkle.verify_consistency(before.size, checkpoint.size, before.root, checkpoint.root,
                                          [bytes.fromhex(p) for p in body["proof"]])
            except (merkle.ProofError, KeyError, ValueError) as exc:
                raise VerificationFailed(f"the log's consistency proof fails (a fork?): {exc}") from None
    return LogReport(checkpoint, note, sorted(i for indices in withheld.values() for i in indices))


def _redacted_by(record: str) -> list[str]:
    """The leaf hashes a `decision:purged` record names as redacted (none for any other record)."""
    try:
        data = json.loads(record)
    except ValueError:
        return []
    if not isinstance(data, dict) or data.get("kind") != "decision:purged":
        return []
    return [str(h) for h in data.get("redacted_leaves") or []]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-verify", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("receipt", help="check one decision's receipt")
    r.add_argument("file", type=Path)
    r.add_argument("--key", required=True, help="the log's verifier key (GET /v1/log/key)")
    lg = sub.add_parser("log", help="check a whole log against its signed checkpoint")
    lg.add_argument("url")
    lg.add_argument("--key", required=True)
    lg.add_argument("--state", type=Path, help="a checkpoint saved earlier: checked for consistency, then replaced")
    lg.add_argument("--token", help="an auditor's API key (reading the leaves needs one)")
    lg.add_argument("--proofs", type=int, default=256, help="inclusion proofs to check (default 256; all below that)")
    args = parser.parse_args(argv)
    try:
        key = Verifier.parse(args.key)
        if args.command == "receipt":
            checkpoint = verify_receipt(json.loads(args.file.read_text()), key)
            print(f"OK: the leaf is in {checkpoint.origin}'s signed tree of {checkpoint.size} leaves")
        else:
            previous = args.state.read_text() if args.state and args.state.exists() else None
            headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
            report = check_log(args.url, key, previous, proofs=args.proofs, headers=headers)
            if args.state:
                args.state.write_text(report.note)
            print(f"OK: {report.checkpoint.size} leaves give the signed root of {report.checkpoint.origin}")
            if report.redacted:
                print(f"NOTE: {len(report.redacted)} leaf record(s) were redacted by the retention purge (written "
                      f"before records held commitments, they held the person's data in clear); each is accepted "
                      f"by its stored hash, which a decision:purged leaf names; their content cannot be checked: "
                      f"{', '.join(map(str, report.redacted[:20]))}{' …' if len(report.redacted) > 20 else ''}")
    except (VerificationFailed, NoteError, OSError, ValueError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
