"""The SSRF guard: outgoing requests may reach public addresses only, unless the operator says so.

A target URL is checked three times, because each check alone can be slipped past:
1. when the rule is saved (`check_target_url`): scheme, credentials in the URL, `localhost`,
   literal IP addresses in any spelling;
2. when the request connects (`GuardedResolver`): every address a host name resolves to, at the
   moment of connecting, so a name that resolved to a public address at save time and to
   127.0.0.1 now (DNS rebinding) is still refused. The delivery transport connects only to
   addresses this returned, and checks each socket's address once more as it opens;
3. on every redirect hop (`HttpTarget` follows redirects itself and checks each `Location`).

Literal IP hosts never reach the resolver (clients connect to them directly), which is why the
URL check runs again before every hop, not only at save time.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from stellwerk.rules import UnsafeTargetError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_HINT = "start Stellwerk with --allow-private-targets to allow it"


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in pairs)


# Most specific first: the first match names the reason given to the user.
_REFUSED_V4 = _networks(
    ("255.255.255.255/32", "broadcast"),
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT, RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (where cloud metadata services answer)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("192.88.99.0/24", "reserved (former 6to4 relay anycast)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)

_REFUSED_V6 = _networks(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# Spellings that `inet_aton` and browsers read as IPv4 (2130706433, 0x7f.1, 127.1, 0177.0.0.1)
# but `ipaddress` does not: refused outright, as nobody writes a webhook URL like that.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` is not a public destination, or None when it is."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = address_refusal(embedded)
        return None if reason is None else f"embeds {embedded}, which is {reason}"
    table = _REFUSED_V4 if isinstance(address, ipaddress.IPv4Address) else _REFUSED_V6
    for network, reason in table:
        if address in network:
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to an IPv4 host (mapped, NAT64, 6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def parse_address(text: str) -> IPAddress | None:
    """An IP address from a URL host or a resolver answer (zone ids allowed), else None."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Where outgoing requests may go: public addresses, plus what the operator allowed.

    `allow_private` (`--allow-private-targets`) lifts the address checks entirely;
    `allowed_networks` lifts them for the listed networks only (a sidecar on 10.1.2.3, say).
    The policy is hashable: the session pool keeps one session, and so one DNS cache, per policy.
    """

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(
        cls, allow_private: bool = False, allowed_networks: Iterable[str] = ()
    ) -> AddressPolicy:
        networks: list[IPNetwork] = []
        for text in allowed_networks:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise UnsafeTargetError(
                    f"{text!r} is not a network: {exc}", "allowed_networks"
                ) from exc
        return cls(allow_private, tuple(networks))

    def refusal(self, address: IPAddress) -> str | None:
        """Why this policy refuses `address`, or None when requests may go there."""
        if self.allow_private:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        if any(address in network for network in self.allowed_networks):
            return None
        return address_refusal(address)

    def check_url(self, url: str | URL) -> URL:
        """The parsed URL when requests may go there; else `UnsafeTargetError` saying why."""
        parsed = url if isinstance(url, URL) else _parse(url)
        if parsed.scheme not in ("http", "https"):
            raise UnsafeTargetError(
                f"scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https"
            )
        if parsed.user is not None or parsed.password is not None:
            raise UnsafeTargetError(
                "credentials in the URL are not allowed (they end up in logs); "
                "use a connection for basic auth"
            )
        host = parsed.raw_host
        if not host:
            raise UnsafeTargetError(f"{parsed} has no host")
        address = parse_address(host)
        if address is None:
            if _NUMERIC_HOST.match(host):
                raise UnsafeTargetError(
                    f"host {host!r} is not a canonical IP address; write it as a dotted quad"
                )
            name = host.rstrip(".").lower()
            if not self.allow_private and (name == "localhost" or name.endswith(".localhost")):
                raise UnsafeTargetError(f"host {host!r} is the loopback interface; {ALLOW_HINT}")
            return parsed
        reason = self.refusal(address)
        if reason is not None:
            raise UnsafeTargetError(f"address {address} is {reason}; {ALLOW_HINT}")
        return parsed


def _parse(url: str) -> URL:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise UnsafeTargetError(f"{url!r} is not a URL: {exc}") from exc
    if not parsed.scheme:
        raise UnsafeTargetError(f"{url!r} is not an absolute URL")
    return parsed


def check_target_url(
    url: str, allow_private: bool = False, *, allowed_networks: Iterable[str] = ()
) -> None:
    """Save-time check of a target URL; raises `UnsafeTargetError` with the reason."""
    AddressPolicy.build(allow_private, allowed_networks).check_url(url)


class UnsafeAddressError(OSError):
    """A host name resolved only to addresses the policy refuses.

    An `OSError` because that is what aiohttp expects from a resolver; it arrives wrapped in a
    `ClientConnectorDNSError`, and `HttpTarget` turns it into `GiveUp` with this message.
    """


class GuardedResolver(AbstractResolver):
    """Resolves with `inner` and keeps only the addresses the policy allows.

    Dropping refused addresses (rather than refusing the name when any is refused) is safe: the
    connector only ever sees, and connects to, what this returns.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            # An empty answer is a DNS problem worth retrying, not a refusal.
            raise OSError(f"host {host!r} has no addresses")
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            address = parse_address(result["host"])
            reason = "not an IP address" if address is None else self._policy.refusal(address)
            if reason is None:
                allowed.append(result)
            else:
                refused.append(f"{result['host']} ({reason})")
        if not allowed:
            raise UnsafeAddressError(
                f"host {host!r} resolves to {', '.join(refused) or 'nothing'}, "
                f"where targets may not go; {ALLOW_HINT}"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def find_refusal(exc: BaseException) -> UnsafeAddressError | None:
    """The guard's refusal inside aiohttp's wrapping (`ClientConnectorDNSError.os_error`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UnsafeAddressError):
            return current
        inner = getattr(current, "os_error", None)
        if isinstance(inner, UnsafeAddressError):
            return inner
        current = current.__cause__ or current.__context__
    return None
