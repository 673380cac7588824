"""The tamper-evident record: an RFC 6962 Merkle tree over every audit leaf, signed checkpoints, proofs.

`merkle` and `note` are pure (standard library and `cryptography` only) so that the standalone verifier
(`gateway.verify`, the `gateway-verify` command) shares them without Flask or the database.
"""
