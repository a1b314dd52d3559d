"""Address arithmetic of the plan, in plain Python (`ipaddress`), tested without Pulumi."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from itertools import combinations

# Tunnel index X gives the pair 10.3.X.1 (local side) / 10.3.X.100 (helsinki-gw side), as in
# SPEC.md's tunnel table.
TUNNEL_LOCAL_HOST = 1
TUNNEL_HELSINKI_HOST = 100
# Each stateless server's scale-out instances take a block of this many pool addresses.
SCALE_OUT_BLOCK = 8


def contains(outer: IPv4Network, inner: IPv4Network) -> bool:
    return inner.subnet_of(outer)


def overlapping_pairs(ranges: dict[str, IPv4Network]) -> list[tuple[str, str]]:
    return [(a, b) for (a, ra), (b, rb) in combinations(ranges.items(), 2) if ra.overlaps(rb)]


def tunnel_subnet(tunnel_range: IPv4Network, index: int) -> IPv4Network:
    return IPv4Network((int(tunnel_range.network_address) + index * 256, 24))


def tunnel_pair(tunnel_range: IPv4Network, index: int) -> tuple[IPv4Address, IPv4Address]:
    base = tunnel_subnet(tunnel_range, index).network_address
    return base + TUNNEL_LOCAL_HOST, base + TUNNEL_HELSINKI_HOST


def scale_out_address(pool: IPv4Network, slot: int, instance: int) -> IPv4Address | None:
    """Instance k (k >= 2) of the server in `slot` (its tunnel index)."""
    if slot < 0 or not 2 <= instance <= SCALE_OUT_BLOCK:
        return None
    offset = slot * SCALE_OUT_BLOCK + instance - 1
    if offset >= pool.num_addresses - 1:
        return None
    return pool.network_address + offset


def last_octet(ip: IPv4Address) -> int:
    """Derived servers (scale-out instances, shards) use it as their tunnel index, so an address
    and its tunnel read alike: 10.2.0.129 has tunnel 10.3.129.x."""
    return int(ip) & 0xFF


def reserved_reason(ip: IPv4Address, subnet: IPv4Network, network_gateway: IPv4Address) -> str | None:
    """Why an address may not be given to a server, or None when it may.

    Hetzner keeps the first host of every subnet for its router and the network's first address
    as the network gateway; the network and broadcast addresses are never hosts."""
    if ip == network_gateway:
        return "the hcloud network gateway"
    if ip == subnet.network_address:
        return f"network address of {subnet}"
    if ip == subnet.broadcast_address:
        return f"broadcast address of {subnet}"
    if ip == subnet.network_address + 1:
        return f"first host of {subnet}, kept by Hetzner for the subnet's router"
    return None


def matches(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None
