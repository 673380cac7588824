"""Personal data kept encrypted, under a data key of its own per decision (envelope encryption).

Every decision gets a random 256-bit data key. The contact details are encrypted with it (AES-256-GCM, the
decision id as associated data) and the data key itself is stored only wrapped by the deployment's key
(CONTACT_KEY, AES-256-GCM, "dek:<decision id>" as associated data). Destroying the wrapped key —
what the retention purge does — makes the ciphertext unreadable everywhere it was copied, database
backups included, without having to find every copy.

The same data key keys the decision's commitments (`commitment`): the audit log's records hold keyed hashes
of the inputs, the explanation's values, the point of view and the corrected data, never the values. Once
the key is destroyed a commitment can no longer be tested against guesses (a plain hash of an age or an
amount could be, by trying every value), yet the leaf's hash and every proof stay as they were.

Rows written before data keys existed (ciphertext version 1: encrypted with CONTACT_KEY directly) stay
readable; migration 0012 re-encrypts them under a data key of their own.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.audit import canonical_json

_NONCE = 12
_V1 = b"\x01"  # encrypted with the deployment key itself (before envelope encryption)
_V2 = b"\x02"  # encrypted with the decision's data key
_WRAPPED = b"\x01"  # version of a wrapped data key
_COMMIT_LABEL = b"gateway commitment v1"


class ContactCipher:
    """Encrypt with AES-GCM; the record id is the associated data."""

    def __init__(self, key: bytes, version: bytes = _V1) -> None:
        if len(key) != 32:
            raise ValueError("the contact encryption key must be 32 bytes (64 hex characters)")
        self._aead = AESGCM(key)
        self._version = version

    def encrypt(self, plaintext: bytes, *, record_id: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return self._version + nonce + self._aead.encrypt(nonce, plaintext, record_id.encode())

    def decrypt(self, blob: bytes, *, record_id: str) -> bytes:
        if blob[:1] != self._version:
            raise ValueError("unknown ciphertext version")
        nonce, ciphertext = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
        return self._aead.decrypt(nonce, ciphertext, record_id.encode())


_ciphers: dict[bytes, ContactCipher] = {}
_lock = threading.Lock()


def cipher(key: bytes) -> ContactCipher:
    """The cipher of the deployment key `key`, built once per process."""
    found = _ciphers.get(key)
    if found is None:
        with _lock:
            found = _ciphers.setdefault(key, ContactCipher(key))
    return found


@dataclass(frozen=True)
class DataKey:
    """A decision's data key: the key itself (never stored) and its wrapped form (stored with the decision)."""

    decision_id: str
    key: bytes
    wrapped: bytes

    def commitment(self, value: Any) -> str:
        """A keyed hash (HMAC-SHA256) of `value`'s canonical JSON, under a key derived from the data key."""
        return hmac.digest(self._commitment_key, canonical_json(value).encode("utf-8"), hashlib.sha256).hex()

    @functools.cached_property
    def _commitment_key(self) -> bytes:
        # Derived once per data key: a decision makes several commitments with it.
        return _commitment_key(self.key)


def new_data_key(deployment_key: bytes, decision_id: str) -> DataKey:
    """A fresh random data key for one decision, wrapped by the deployment key."""
    key = AESGCM.generate_key(bit_length=256)
    wrapped = _WRAPPED + cipher(deployment_key).encrypt(key, record_id=f"dek:{decision_id}")
    return DataKey(decision_id, key, wrapped)


def unwrap_data_key(deployment_key: bytes, decision_id: str, wrapped: bytes | None) -> DataKey | None:
    """The decision's data key, or None once it was destroyed (crypto-shredded) or never made (old rows)."""
    if wrapped is None:
        return None
    if wrapped[:1] != _WRAPPED:
        raise ValueError("unknown wrapped data key version")
    key = cipher(deployment_key).decrypt(bytes(wrapped[1:]), record_id=f"dek:{decision_id}")
    return DataKey(decision_id, key, bytes(wrapped))


def commitment(key: bytes, value: Any) -> str:
    """HMAC-SHA256 of `value`'s canonical JSON under a key derived from `key` (hex)."""
    # hmac.digest: OpenSSL's one-shot HMAC, the value hmac.new(...) gives without its Python set-up (a batch
    # chunk makes three commitments per decision).
    return hmac.digest(_commitment_key(key), canonical_json(value).encode("utf-8"), hashlib.sha256).hex()


def _commitment_key(key: bytes) -> bytes:
    return hmac.digest(key, _COMMIT_LABEL, hashlib.sha256)


# json.dumps(..., sort_keys=True), its encoder made once (a batch encrypts one contact per row).
_SORTED_JSON = json.JSONEncoder(sort_keys=True)


def encrypt_contact(data_key: DataKey, contact: dict[str, str]) -> bytes:
    """The contact details encrypted under the decision's data key."""
    plaintext = _SORTED_JSON.encode(contact).encode()
    return ContactCipher(data_key.key, _V2).encrypt(plaintext, record_id=data_key.decision_id)


def decrypt_contact(deployment_key: bytes, decision_id: str, ciphertext: bytes | None,
                    wrapped_key: bytes | None) -> dict[str, str]:
    """The decision's contact details (decrypted; never log them); {} once erased or crypto-shredded."""
    legacy = ciphertext is None or bytes(ciphertext)[:1] == _V1  # no data key to unwrap for these
    data_key = None if legacy else unwrap_data_key(deployment_key, decision_id, wrapped_key)
    return open_contact(deployment_key, data_key, decision_id, ciphertext)


def open_contact(deployment_key: bytes, data_key: DataKey | None, decision_id: str,
                 ciphertext: bytes | None) -> dict[str, str]:
    """`decrypt_contact` with the decision's data key already unwrapped (by a caller that needs it again)."""
    if ciphertext is None:
        return {}
    blob = bytes(ciphertext)
    if blob[:1] == _V1:  # written before data keys: the deployment key opens it
        legacy: dict[str, str] = json.loads(cipher(deployment_key).decrypt(blob, record_id=decision_id))
        return legacy
    if data_key is None:
        return {}  # the data key was destroyed: the ciphertext can no longer be read, here or in any backup
    data: dict[str, str] = json.loads(ContactCipher(data_key.key, _V2).decrypt(blob, record_id=decision_id))
    return data


def reencrypt_legacy(deployment_key: bytes, decision_id: str, ciphertext: bytes) -> tuple[bytes, bytes]:
    """A version-1 ciphertext re-encrypted under a new data key: (ciphertext, wrapped data key)."""
    contact = decrypt_contact(deployment_key, decision_id, ciphertext, None)
    data_key = new_data_key(deployment_key, decision_id)
    return encrypt_contact(data_key, contact), data_key.wrapped


def committer(deployment_key: bytes, fallback_key: bytes, decision_id: str,
              wrapped: bytes | None) -> Callable[[Any], str]:
    """The commitment function of a decision: keyed by its data key, or by `fallback_key` (a deployment
    secret, e.g. the subject key) for a decision without one (purged, or older than data keys)."""
    data_key = unwrap_data_key(deployment_key, decision_id, wrapped)
    if data_key is not None:
        return data_key.commitment
    return functools.partial(commitment, fallback_key)


def rewrap_legacy_rows(connection: Any, deployment_key: bytes) -> int:
    """Re-encrypt every version-1 contact of `decisions` under a data key of its own (migration 0012).

    Rows the key cannot open are left as they are: they stay readable by the key that wrote them, and the
    purge erases them. Returns how many rows were re-encrypted.
    """
    decisions = sa.table("decisions", sa.column("id", sa.String), sa.column("contact_ciphertext", sa.LargeBinary),
                         sa.column("data_key", sa.LargeBinary))
    rows = connection.execute(sa.select(decisions.c.id, decisions.c.contact_ciphertext)
                              .where(decisions.c.contact_ciphertext.is_not(None), decisions.c.data_key.is_(None))).all()
    done = 0
    for decision_id, blob in rows:
        if bytes(blob)[:1] != _V1:
            continue
        try:
            ciphertext, wrapped = reencrypt_legacy(deployment_key, decision_id, bytes(blob))
        except (InvalidTag, ValueError):
            continue
        connection.execute(sa.update(decisions).where(decisions.c.id == decision_id)
                           .values(contact_ciphertext=ciphertext, data_key=wrapped))
        done += 1
    return done


def encrypt_monitoring(data_key: DataKey, values: dict[str, Any]) -> bytes:
    """A decision's monitor-only values (fairness monitoring; never shown, never in the log), encrypted under its
    data key: destroying the key (the retention purge) shreds them with the contact details."""
    plaintext = _SORTED_JSON.encode(values).encode()
    return ContactCipher(data_key.key, _V2).encrypt(plaintext, record_id=f"monitoring:{data_key.decision_id}")


def decrypt_monitoring(deployment_key: bytes, decision_id: str, ciphertext: bytes,
                       wrapped_key: bytes | None) -> dict[str, Any]:
    """The decision's monitor-only values; {} once its data key was destroyed."""
    return open_monitoring(unwrap_data_key(deployment_key, decision_id, wrapped_key), ciphertext)


def open_monitoring(data_key: DataKey | None, ciphertext: bytes) -> dict[str, Any]:
    """Monitor-only values opened with their decision's data key (already unwrapped); {} without one."""
    if data_key is None:
        return {}
    data: dict[str, Any] = json.loads(ContactCipher(data_key.key, _V2).decrypt(
        bytes(ciphertext), record_id=f"monitoring:{data_key.decision_id}"))
    return data
