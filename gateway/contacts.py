"""Contact details of the person, encrypted at rest (AES-256-GCM), one record id as associated data.

The one owner of contact encryption: decisions encrypt with `encrypt_contact`, notices decrypt with
`decrypt_contact`. Crypto-shredding (a per-decision data key wrapped by the deployment's key) will grow
here.
"""

from __future__ import annotations

import json
import os
import threading

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12
_VERSION = b"\x01"


class ContactCipher:
    """Encrypt contact details at rest with AES-GCM; the record id is the associated data."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the contact encryption key must be 32 bytes (64 hex characters)")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, *, record_id: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, record_id.encode())

    def decrypt(self, blob: bytes, *, record_id: str) -> bytes:
        if blob[:1] != _VERSION:
            raise ValueError("unknown contact ciphertext version")
        nonce, ciphertext = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
        return self._aead.decrypt(nonce, ciphertext, record_id.encode())


_ciphers: dict[bytes, ContactCipher] = {}
_lock = threading.Lock()


def cipher(key: bytes) -> ContactCipher:
    """The cipher for `key`, built once per process (AESGCM key set-up is not free on the hot path)."""
    found = _ciphers.get(key)
    if found is None:
        with _lock:
            found = _ciphers.setdefault(key, ContactCipher(key))
    return found


def encrypt_contact(key: bytes, decision_id: str, contact: dict[str, str]) -> bytes:
    return cipher(key).encrypt(json.dumps(contact, sort_keys=True).encode(), record_id=decision_id)


def decrypt_contact(key: bytes, decision_id: str, ciphertext: bytes | None) -> dict[str, str]:
    """The decision's contact details (decrypted; never log them); {} once erased."""
    if ciphertext is None:
        return {}
    data: dict[str, str] = json.loads(cipher(key).decrypt(ciphertext, record_id=decision_id))
    return data


def encrypt_monitoring(key: bytes, decision_id: str, values: dict[str, object]) -> bytes:
    """Encrypt a decision's monitor-only values (fairness monitoring; never shown, never in the log)."""
    return cipher(key).encrypt(json.dumps(values, sort_keys=True).encode(), record_id=f"monitoring:{decision_id}")


def decrypt_monitoring(key: bytes, decision_id: str, ciphertext: bytes) -> dict[str, object]:
    data: dict[str, object] = json.loads(cipher(key).decrypt(ciphertext, record_id=f"monitoring:{decision_id}"))
    return data
