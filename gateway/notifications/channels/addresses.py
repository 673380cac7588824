"""The address rules moved to gateway.addresses (remote models use them too); kept here for old imports."""

from __future__ import annotations

from gateway.addresses import ADDRESS_REFUSED, ascii_host, embedded_ipv4, is_public, refusal

__all__ = ["ADDRESS_REFUSED", "ascii_host", "embedded_ipv4", "is_public", "refusal"]
