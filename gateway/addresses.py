"""Which addresses the gateway ever calls (webhooks, remote models): pure rules, shared by every caller.

An IPv6 address can carry an IPv4 one (`::a.b.c.d`, `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
`2002::/16`, Teredo): the embedded address is what gets reached, so it is the one checked. Site-local
`fec0::/10` is deprecated but still routed inside some networks: refused like any non-global range.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import idna

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


ADDRESS_REFUSED = "the webhook URL names a loopback, private, link-local or reserved address"


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it embeds one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """True for a globally routable unicast address (after unwrapping an embedded IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _SITE_LOCAL or ip in _SIXTOFOUR and ip.sixtofour is None:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return inner.is_global and not inner.is_multicast
        if any(ip in net for net in _NAT64):
            return False
    return ip.is_global and not ip.is_multicast


def ascii_host(host: str) -> str | None:
    """The host in the ASCII form that is resolved (IDNA), or None when it has none."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None


def refusal(url: str, *, allow_private: bool, what: str = "webhook URL",
            allow_setting: str = "GATEWAY_WEBHOOK_ALLOW_PRIVATE") -> str | None:
    """Why the gateway will never call `url` (without naming any part of it), or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError:
        return f"the {what} cannot be parsed"
    if parts.scheme not in ("https", "http") or not host:
        return f"the {what} is not an http(s) URL with a host"
    if parts.username or parts.password:
        instead = "the gateway signs its requests" if what == "webhook URL" else "credentials come from the settings"
        return f"the {what} carries credentials; {instead} instead"
    if ascii_host(host) is None:
        return f"the {what}'s host is not a valid (internationalised) host name"
    if allow_private:
        return None
    if parts.scheme == "http":
        return f"the {what} is not https:// (http:// only with {allow_setting}=1)"
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None and not is_public(str(literal)):
        return ADDRESS_REFUSED if what == "webhook URL" else ADDRESS_REFUSED.replace("webhook URL", what)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return ADDRESS_REFUSED if what == "webhook URL" else ADDRESS_REFUSED.replace("webhook URL", what)
    return None
