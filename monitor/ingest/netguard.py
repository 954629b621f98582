"""Refuse to fetch URLs that point into private networks (a guard against server-side request forgery).

A feed address comes from config files, OPML imports and redirects chosen by remote servers, so any of them
could aim the poller at a router admin page, a cloud metadata endpoint (169.254.169.254) or a database on
localhost. Every URL the fetcher contacts, including every redirect hop, goes through `check_url` first.

Errors are `monitor.errors.FetchError` with `kind` one of `bad_url`, `dns`, `private_address`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

import httpx

from monitor.errors import FetchError

ENV_ALLOW_PRIVATE = "MONITOR_ALLOW_PRIVATE_NETWORKS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64 well-known prefix: a gateway translates 64:ff9b::7f00:1 to 127.0.0.1, so the embedded IPv4 counts.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def private_networks_allowed(explicit: bool = False) -> bool:
    """True when the caller or the environment (`MONITOR_ALLOW_PRIVATE_NETWORKS=1`) allows private targets."""
    if explicit:
        return True
    return os.environ.get(ENV_ALLOW_PRIVATE, "").strip().lower() in {"1", "true", "yes", "on"}


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # An IPv6 address can carry an IPv4 one that the network stack or a gateway will actually reach.
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses; False for loopback, private, link-local, multicast,
    reserved, unspecified, shared (CGNAT) and documentation ranges, in IPv4 and IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public_address(embedded):
            return False
    # `is_global` already excludes private, loopback, link-local, reserved, unspecified and shared space;
    # multicast has globally scoped ranges, which we still never want to fetch from.
    return ip.is_global and not ip.is_multicast


def parse_http_url(url: str) -> httpx.URL:
    """Parse `url`, insisting on http(s) and a host; raise FetchError(kind="bad_url") otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(f"not a valid URL ({exc})", url=url, kind="bad_url") from None
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "no scheme"
        raise FetchError(f"only http and https are fetched, not {scheme}", url=url, kind="bad_url")
    if not parsed.host:
        raise FetchError("the URL has no host", url=url, kind="bad_url")
    return parsed


async def resolve(host: str, port: int, *, url: str = "") -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself without any network traffic)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc})", url=url or host, kind="dns") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Strip an IPv6 zone ("fe80::1%eth0"): the address itself decides.
        literal = str(sockaddr[0]).split("%", 1)[0]
        try:
            addresses.append(ipaddress.ip_address(literal))
        except ValueError:
            continue
    if not addresses:
        raise FetchError(f"host {host!r} resolved to no usable address", url=url or host, kind="dns")
    return addresses


async def check_url(url: str, *, allow_private: bool = False) -> httpx.URL:
    """Validate `url` and, unless private networks are allowed, make sure its host resolves only to public
    addresses. Returns the parsed URL; raises FetchError with kind bad_url, dns or private_address.

    Every resolved address must be public: a name that resolves to one public and one private address would
    otherwise let the connection land on the private one.
    """
    parsed = parse_http_url(url)
    allowed = private_networks_allowed(allow_private)
    host = parsed.host
    if allowed:
        # Nothing to refuse, and the HTTP client resolves the name anyway (DNS errors are classified there).
        return parsed
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    for ip in await resolve(host, port, url=url):
        if not is_public_address(ip):
            raise FetchError(
                f"host {host!r} resolves to non-public address {ip}; refused "
                f"(set {ENV_ALLOW_PRIVATE}=1 to allow private networks)",
                url=url,
                kind="private_address",
            )
    return parsed


def check_peer(address: str, *, url: str, allow_private: bool = False) -> None:
    """Check the address a connection actually reached, which closes the gap where DNS answers differently
    between our check and the HTTP client's own lookup (DNS rebinding)."""
    if private_networks_allowed(allow_private):
        return
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return
    if not is_public_address(ip):
        raise FetchError(f"connected to non-public address {ip}; refused", url=url, kind="private_address")
