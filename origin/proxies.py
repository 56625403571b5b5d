"""The client's address behind trusted proxies (``trusted_proxies``).

The origin sees the TCP peer.  Behind a CDN edge or a load balancer that peer
is the proxy, so every viewer would share one network key (population
priors), one per-address limit and one address in the logs.  A proxy says who
its client was in ``X-Forwarded-For`` (de facto) or ``Forwarded`` (RFC 7239
``for=``), appending its own peer to whatever list it received.

Those fields are read only when the TCP peer is in ``trusted_proxies``: a
client talking to the origin directly could otherwise claim any address.
The list is then walked from the right (the hop nearest the origin) past
every address that is itself a trusted proxy; the first untrusted address is
the client (RFC 7239 7.4: the right-most entries are the ones added by the
proxies the origin knows).  An entry that is not an address (RFC 7239 6.2
``unknown``, an obfuscated ``_name``, garbage) stops the walk: the client is
then the last trusted hop, so nothing a client writes into the list is ever
taken for its address unless every proxy after it is trusted.

``X-Forwarded-For`` is read when sent; ``Forwarded`` only without it (the
shipped edge sets both, alike).  Repeated fields are one list, in order
(RFC 9110 5.3).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from cadenza.origin.errors import SettingsError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Peers whose verdict is remembered (a handful of edges, and the clients).
_VERDICTS_KEPT: Final = 4096


def parse_networks(value: object) -> tuple[str, ...]:
    """``trusted_proxies`` as given (comma-separated, or a TOML list), each checked
    to be an address or a CIDR; returned in canonical CIDR spelling."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise SettingsError("trusted_proxies", value, "expected comma-separated CIDRs")
    networks: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingsError("trusted_proxies", item, "not an address or CIDR") from None
    return tuple(networks)


@dataclass(slots=True)
class TrustedProxies:
    """The proxies whose forwarding fields are believed."""

    networks: tuple[Network, ...]
    _verdicts: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, cidrs: Iterable[str]) -> TrustedProxies | None:
        """None for an empty list: nothing is trusted, and nothing need be checked."""
        networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        return cls(networks) if networks else None

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (a peer, or an entry of a forwarding list) is a trusted proxy."""
        if address is None:
            return False
        known = self._verdicts.get(address)
        if known is None:
            ip = _ip(address)
            known = ip is not None and any(ip in net for net in self.networks)
            if len(self._verdicts) >= _VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[address] = known
        return known


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (a dual-stack listener's view)
    return ip


def _node(text: str) -> str | None:
    """An address from one list entry: ``X-Forwarded-For``'s bare ``1.2.3.4`` or
    ``2001:db8::1``, or a ``Forwarded`` node (RFC 7239 6: ``1.2.3.4:port``,
    ``"[2001:db8::1]:port"``); None when it is not an address."""
    node = text.strip().strip('"')
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:
        node = node.partition(":")[0]  # IPv4 with a port
    ip = _ip(node)
    return None if ip is None else str(ip)


def forwarded_for(header: str) -> list[str]:
    """The ``for=`` values of a ``Forwarded`` field (RFC 7239 4), in order; an
    element without one is ``""`` (not an address: it stops the walk)."""
    found: list[str] = []
    for element in header.split(","):
        value = ""
        for pair in element.split(";"):
            name, equals, raw = pair.partition("=")
            if equals and name.strip().lower() == "for":
                value = raw.strip()
        found.append(value)
    return found


def client_address(
    peer: str | None,
    x_forwarded_for: str | None,
    forwarded: str | None,
    trusted: TrustedProxies | None,
) -> str | None:
    """The client's address: ``peer`` itself unless it is a trusted proxy that
    forwarded a list, walked right to left past trusted hops (module docstring)."""
    if trusted is None or not trusted.trusts(peer):
        return peer
    if x_forwarded_for is not None:
        hops = x_forwarded_for.split(",")
    elif forwarded is not None:
        hops = forwarded_for(forwarded)
    else:
        return peer
    client = peer
    for hop in reversed(hops):
        address = _node(hop)
        if address is None:
            break
        client = address
        if not trusted.trusts(address):
            break
    return client


def client_middleware(trusted: TrustedProxies) -> Middleware:
    """The aiohttp side: ``request.remote`` becomes the client's address for
    everything after it (per-address limits, network keys, the access log),
    when the peer is a trusted proxy."""

    @web.middleware
    async def forwarded_client(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        peer = request.remote
        if trusted.trusts(peer):
            headers = request.headers
            xff = headers.getall("X-Forwarded-For", None)
            fwd = headers.getall("Forwarded", None)
            client = client_address(
                peer,
                None if xff is None else ",".join(xff),
                None if fwd is None else ",".join(fwd),
                trusted,
            )
            # ``remote`` is a cached property: the one request object aiohttp
            # also hands its access logger now answers the client's address.
            request._cache["remote"] = client
        return await handler(request)

    return forwarded_client
