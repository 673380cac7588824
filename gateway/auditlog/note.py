"""Checkpoints as C2SP signed notes (c2sp.org/signed-note, c2sp.org/tlog-checkpoint), Ed25519 keys.

A checkpoint's text is three lines: the log's origin, the tree size in decimal, the root hash in
base64. The signature line is "— <key name> base64(key ID || Ed25519 signature)", the key ID being the
first four bytes of SHA-256(name || 0x0A || 0x01 || public key). Verifier keys are written as Go's
`note` package writes them: "<name>+<key ID hex>+base64(0x01 || public key)".
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = b"\x01"
DASH = "\u2014"


class NoteError(ValueError):
    """A note or a key is malformed, or no trusted signature verifies."""


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError("a key name is non-empty, without spaces or '+'")


@dataclass(frozen=True)
class Signer:
    """The log's signing key."""

    name: str
    private: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        _check_name(name)
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def verifier_key(self) -> str:
        """The public key as others configure it: name+keyid+base64(0x01 || key)."""
        return f"{self.name}+{key_id(self.name, self.public).hex()}+{base64.b64encode(ED25519 + self.public).decode()}"

    def sign(self, text: str) -> str:
        """The signed note: the text (ending in a newline), a blank line, one signature line."""
        if not text.endswith("\n"):
            raise NoteError("a note's text ends in a newline")
        signature = self.private.sign(text.encode())
        blob = base64.b64encode(key_id(self.name, self.public) + signature).decode()
        return f"{text}\n{DASH} {self.name} {blob}\n"


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Read "<name>+<key ID hex>+base64(0x01 || public key)"."""
        try:
            name, kid, encoded = text.strip().split("+", 2)  # base64 may contain "+" too
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise NoteError("a verifier key reads <name>+<key ID hex>+<base64 key>") from None
        _check_name(name)
        if raw[:1] != ED25519 or len(raw) != 33:
            raise NoteError("only Ed25519 verifier keys are supported")
        if key_id(name, raw[1:]).hex() != kid.lower():
            raise NoteError("the verifier key's ID does not match its name and key")
        return cls(name, raw[1:])

    def open(self, note: str) -> str:
        """Return the note's text when this key's signature on it verifies; NoteError otherwise."""
        if "\r" in note or any(ord(c) < 0x20 and c != "\n" for c in note):
            raise NoteError("a note contains no control characters but newlines")
        text, sep, signatures = note.rpartition("\n\n")
        if not sep or not signatures.endswith("\n"):
            raise NoteError("a note is text, a blank line and signature lines")
        text += "\n"
        wanted = key_id(self.name, self.public)
        found = False
        for line in signatures[:-1].split("\n"):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != DASH:
                raise NoteError(f"malformed signature line {line!r}")
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except ValueError:
                raise NoteError("a signature is not base64") from None
            if parts[1] != self.name or blob[:4] != wanted:
                continue  # another key's signature: ignored
            try:
                Ed25519PublicKey.from_public_bytes(self.public).verify(blob[4:], text.encode())
            except InvalidSignature:
                raise NoteError("the log's signature on the note does not verify") from None
            found = True
        if not found:
            raise NoteError("the note carries no signature by the log's key")
        return text


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is origin, size and root hash, each on a line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError("a checkpoint's size is a decimal number without leading zeros")
        try:
            digest = base64.b64decode(root, validate=True)
        except ValueError:
            raise NoteError("a checkpoint's root hash is base64") from None
        if len(digest) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(origin, int(size), digest)
