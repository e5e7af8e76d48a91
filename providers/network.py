"""``deny_private_networks``: a connector that refuses non-public addresses after resolution.

The check runs on the addresses a host name resolves to (or the literal one in the URL), right
before connecting, so DNS rebinding (a public name that later resolves to 10.0.0.1 or
169.254.169.254) cannot get past it as it would get past a check of the host name. It costs
nothing per call: it runs once per new connection, and when the option is off the client uses
aiohttp's own connector unchanged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.abc import ResolveResult

from providers.errors import NotAllowed

if TYPE_CHECKING:
    from aiohttp.tracing import Trace

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def refusal(address: Address) -> str | None:
    """Why ``address`` is not a public one (``loopback``, ``link-local``...), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:  # 169.254/16 (cloud metadata), fe80::/10
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:  # 10/8, 172.16/12, 192.168/16, fc00::/7 (unique-local), ...
        return "private"
    if not address.is_global:  # 100.64/10 (shared), reserved and documentation ranges
        return "not public"
    return None


class PublicOnlyConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that connects only to public addresses.

    Hooks ``_resolve_host``, the one step every connection takes, literal IPs and cached
    lookups included (aiohttp skips the resolver for literal IPs, so a custom resolver alone
    would miss ``http://127.0.0.1``). The loopback tests in
    ``tests/unit/providers/test_private_networks.py`` pin this across aiohttp upgrades.
    """

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        resolved = await super()._resolve_host(host, port, traces=traces)
        public = [r for r in resolved if _why(r["host"]) is None]
        if not public:  # aiohttp raises on an empty resolution, so resolved[0] exists
            first = resolved[0]["host"]
            raise NotAllowed(
                f"{host}: {_why(first)} address {first} refused (deny_private_networks)"
            )
        return public


def _why(host: str) -> str | None:
    try:
        return refusal(ipaddress.ip_address(host))
    except ValueError:
        return "unparsable"
