"""The hcloud firewalls of each stack, as data: which ports are open to whom, on which servers.

Hetzner Cloud firewalls filter the public interface only, and deny every inbound packet no rule
allows once a firewall is applied. So the public side is exactly these rules: SSH from the admin
CIDRs, HTTPS on the entry points, WireGuard on the tunnel endpoints, ICMP for path-MTU discovery.
Exporter, database and etcd ports have no public rule at all; on the private network they are
restricted by each host's nftables rules (rendered with the services)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from .model import Inventory, Server

ANYWHERE = ("0.0.0.0/0", "::/0")
HTTPS_PORT = 443
SSH_PORT = 22


@dataclass(frozen=True)
class Rule:
    protocol: str  # tcp | udp | icmp
    port: str | None
    sources: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class FirewallPlan:
    name: str
    rules: tuple[Rule, ...]
    servers: tuple[str, ...]


def wireguard_port_range(inventory: Inventory) -> str:
    base = inventory.network.wireguard.listen_port_base
    return f"{base}-{base + 255}"


def tunnel_endpoints(inventory: Inventory) -> list[Server]:
    """Servers that accept WireGuard from the internet: the gateway, and the etcd witness (the
    local etcd member's direct tunnel, which must not depend on Helsinki)."""
    return [s for s in inventory.servers.values() if s.task == "gateway" or s.site == "witness"]


def firewall_plans(
    inventory: Inventory, stack: str, admin_cidrs: Sequence[IPv4Network | IPv6Network]
) -> list[FirewallPlan]:
    # Every server with a public interface, IPv4 or IPv6 (a shard reaches the gateway over
    # IPv6): a public interface without a firewall would expose every port it listens on.
    servers = [s for s in inventory.stack_servers(stack) if s.dedicated is None and s.has_public_interface]
    names = tuple(s.name for s in servers)
    admin = tuple(str(c) for c in admin_cidrs)
    plans = [
        FirewallPlan(
            f"unde-{stack}-base",
            (
                Rule("tcp", str(SSH_PORT), admin, "SSH from the admin CIDRs only"),
                Rule("icmp", None, ANYWHERE, "ICMP, so that path-MTU discovery works"),
            ),
            names,
        )
    ]
    entry = tuple(s.name for s in servers if s.entry_point)
    if entry:
        plans.append(
            FirewallPlan(f"unde-{stack}-https", (Rule("tcp", str(HTTPS_PORT), ANYWHERE, "HTTPS entry point"),), entry)
        )
    endpoints = tuple(s.name for s in tunnel_endpoints(inventory) if s.name in names)
    if endpoints:
        plans.append(
            FirewallPlan(
                f"unde-{stack}-wireguard",
                (Rule("udp", wireguard_port_range(inventory), ANYWHERE, "WireGuard tunnels from the local servers"),),
                endpoints,
            )
        )
    return plans
