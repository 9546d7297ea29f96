"""SSRF guard for base URLs that users supply with their provider keys (RELIABILITY F8).

A user's `base_url` is where the gateway will send that user's prompts and key, from inside the
operator's network, so it must name a public host (LiteLLM's SSRF, BerriAI/litellm#24952):

- `check_url(url)` is pure: http(s) only, no userinfo, query or fragment; the host may be a
  canonical public IPv4 (a.b.c.d), a public IPv6 in brackets, or a fully-qualified DNS name.
  Loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 with the
  metadata address, fe80::/10), CGNAT, multicast, reserved and unspecified addresses are
  refused, including IPv4 hidden inside IPv6 (::ffff:127.0.0.1, ::127.0.0.1, 64:ff9b::/96,
  2002::/16) and the forms `inet_aton` accepts (2130706433, 0x7f000001, 0177.0.0.1, 127.1):
  a host whose last label is a number is an IPv4 address or nothing, as in WHATWG's URL parser.
  Names like `localhost`, `*.localhost`, `*.local`, `*.internal` and single labels are refused.
- `check_url_resolving(url, getaddrinfo)` also resolves a DNS name (the event loop's
  getaddrinfo, at creation time) and refuses it when any address it yields is forbidden.
- `guarded_socket_factory` is for the aiohttp connector that carries user-owned traffic: it
  refuses to open a socket to a forbidden address, which also covers DNS rebinding after
  creation and redirects to an address literal, before any byte (or key) is sent.

The operator's own configuration (OLLAMA_BASE_URL=http://127.0.0.1:11434) is trusted and never
passes through here. Error messages never repeat the URL: it may carry something secret.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
GetAddrInfo = Callable[..., Awaitable[list[tuple[Any, ...]]]]

SCHEMES = ("http", "https")
MAX_URL_LEN = 2048
RESOLVE_TIMEOUT_S = 3.0
_REFUSED_SUFFIXES = ("localhost", "local", "internal", "localdomain", "home.arpa", "lan", "intranet", "corp")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMBER = re.compile(r"0x[0-9a-f]*|[0-9]+")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


class UnsafeUrl(ValueError):
    """A user-supplied URL the gateway will not call; `reason` is UPPER_SNAKE (AIP-193)."""

    def __init__(self, message: str, reason: str = "UNSAFE_BASE_URL") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(slots=True, frozen=True)
class CheckedUrl:
    url: str  # as given, minus a trailing slash
    host: str  # lower-case ASCII host, brackets stripped
    port: int
    address: IPAddress | None  # the literal address, None for a DNS name


def forbidden_reason(addr: IPAddress) -> str | None:
    """Why the gateway must not connect to `addr` on a user's behalf, or None when it is public."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return "a scoped IPv6 address"
        if addr.is_loopback:
            return "a loopback address"
        if addr.is_unspecified:
            return "an unspecified address"
        inner = _embedded_v4(addr)
        if inner is not None:
            return forbidden_reason(inner)
        if addr in _LOCAL_NAT64 or addr.is_site_local:
            return "a private address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_unspecified:
        return "an unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_private:
        return "a private address"
    if addr.is_reserved:
        return "a reserved address"
    if not addr.is_global or (isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT):
        return "a non-public address"
    return None


def is_forbidden(addr: IPAddress) -> bool:
    return forbidden_reason(addr) is not None


def check_url(url: str) -> CheckedUrl:
    """Validates a user's base URL without any I/O; raises UnsafeUrl."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LEN:
        raise UnsafeUrl(f"base_url must be an http(s) URL of at most {MAX_URL_LEN} characters", "INVALID_BASE_URL")
    if any(ord(c) <= 32 or ord(c) == 127 or c == "\\" for c in url):
        raise UnsafeUrl("base_url must not contain spaces, control characters or backslashes", "INVALID_BASE_URL")
    if not url.isascii():
        raise UnsafeUrl("base_url must be ASCII (write an international name in its xn-- form)", "INVALID_BASE_URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("base_url is not a valid URL", "INVALID_BASE_URL") from None
    if parts.scheme.lower() not in SCHEMES:
        raise UnsafeUrl("base_url must start with http:// or https://", "INVALID_BASE_URL")
    if "@" in parts.netloc:
        raise UnsafeUrl("base_url must not contain a user name or password", "INVALID_BASE_URL")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise UnsafeUrl("base_url must not have a query or fragment", "INVALID_BASE_URL")
    host = parts.hostname or ""
    if not host:
        raise UnsafeUrl("base_url has no host", "INVALID_BASE_URL")
    if port == 0:
        raise UnsafeUrl("base_url port must be 1-65535", "INVALID_BASE_URL")
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    addr = _literal(host, bracketed="[" in parts.netloc)
    if addr is not None:
        why = forbidden_reason(addr)
        if why:
            raise UnsafeUrl(f"base_url points at {why}; only public hosts are allowed")
    else:
        _check_name(host)
    return CheckedUrl(url.rstrip("/"), host, port, addr)


async def check_url_resolving(url: str, getaddrinfo: GetAddrInfo | None = None,
                              timeout_s: float = RESOLVE_TIMEOUT_S) -> CheckedUrl:
    """check_url, then resolve a DNS name and refuse it if any address is forbidden.

    `getaddrinfo` defaults to the running loop's; a name that does not resolve is refused too
    (fail closed): the gateway could not call it anyway, and a later rebinding would be caught
    only at connect time.
    """
    checked = check_url(url)
    if checked.address is not None:
        return checked
    resolve = getaddrinfo or asyncio.get_running_loop().getaddrinfo
    try:
        infos = await asyncio.wait_for(resolve(checked.host, checked.port, type=socket.SOCK_STREAM), timeout_s)
    except (OSError, asyncio.TimeoutError, UnicodeError):
        raise UnsafeUrl("base_url host does not resolve", "UNRESOLVABLE_BASE_URL") from None
    addrs = [_sockaddr_ip(info[4]) for info in infos]
    if not addrs:
        raise UnsafeUrl("base_url host does not resolve", "UNRESOLVABLE_BASE_URL")
    for a in addrs:
        why = forbidden_reason(a) if a is not None else "an unreadable address"
        if why:
            raise UnsafeUrl(f"base_url resolves to {why}; only public hosts are allowed")
    return checked


def guarded_socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp `TCPConnector(socket_factory=...)`: no socket to a forbidden address, ever."""
    family, type_, proto, _canon, sockaddr = addr_info
    ip = _sockaddr_ip(sockaddr)
    if ip is None or is_forbidden(ip):
        raise OSError(errno.EACCES, "connection refused by the gateway: not a public address")
    return socket.socket(family=family, type=type_, proto=proto)


# ------------------------------------------------------------------------------------ helpers

def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    n = int(addr)
    if addr in _NAT64 or n >> 32 == 0:
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    return None


def _literal(host: str, bracketed: bool) -> IPAddress | None:
    """The address a host literally names, None for a DNS name; UnsafeUrl when ambiguous."""
    if bracketed or ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeUrl("base_url has an invalid IPv6 address", "INVALID_BASE_URL") from None
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if not _NUMBER.fullmatch(labels[-1]):
        return None
    # WHATWG: a host ending in a number is an IPv4 address. Only the canonical dotted quad is
    # accepted; 2130706433, 0x7f.1, 0177.0.0.1 and 127.1 are refused whatever they decode to.
    decoded = _inet_aton(labels)
    canonical = len(labels) == 4 and all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in labels)
    if decoded is None or not canonical:
        why = forbidden_reason(decoded) if decoded is not None else None
        detail = f"; it decodes to {why}" if why else ""
        raise UnsafeUrl(f"base_url host must be a dotted-quad IPv4 address or a DNS name{detail}", "UNSAFE_BASE_URL")
    return decoded


def _inet_aton(labels: list[str]) -> ipaddress.IPv4Address | None:
    """inet_aton's reading of numeric labels (decimal, 0x hex, 0-prefixed octal), or None."""
    if not 1 <= len(labels) <= 4:
        return None
    nums = []
    for p in labels:
        try:
            if p.startswith("0x"):
                nums.append(int(p[2:] or "0", 16))
            elif len(p) > 1 and p.startswith("0"):
                nums.append(int(p, 8))
            else:
                nums.append(int(p, 10))
        except ValueError:
            return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(nums)):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    value = value << (8 * (5 - len(nums))) | last
    return ipaddress.IPv4Address(value)


def _check_name(host: str) -> None:
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UnsafeUrl("base_url host is not a valid DNS name", "INVALID_BASE_URL")
    if len(labels) < 2:
        raise UnsafeUrl("base_url host must be a fully-qualified public DNS name")
    if any(name == s or name.endswith("." + s) for s in _REFUSED_SUFFIXES) or labels[0] in ("localhost", "ip6-localhost", "ip6-loopback"):
        raise UnsafeUrl("base_url host is a local name; only public hosts are allowed")


def _sockaddr_ip(sockaddr: Any) -> IPAddress | None:
    try:
        text = str(sockaddr[0])
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except (ValueError, IndexError, TypeError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and ("%" in text or (len(sockaddr) >= 4 and sockaddr[3])):
        return ipaddress.IPv6Address(f"{addr}%{sockaddr[3] if len(sockaddr) >= 4 and sockaddr[3] else 'scoped'}")
    return addr
