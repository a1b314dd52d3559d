"""The hcloud firewalls of each stack, as data: which ports are open to whom, on which servers.

Hetzner Cloud firewalls filter the public interface only, and deny every inbound packet no rule
allows once a firewall is applied. So the public side is exactly these rules: SSH from the admin
CIDRs, HTTPS on the entry points, WireGuard on the tunnel endpoints, ICMP for path-MTU discovery.
Exporter, database and etcd ports have no public rule at all; on the private network they are
restricted by each host's nftables rules (rendered with the services)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network

from .model import Inbound, Inventory, Server

ANYWHERE = ("0.0.0.0/0", "::/0")
HTTPS_PORT = 443
# The entry points' ACME HTTP-01 challenges (their TLS certificates) and the redirect to HTTPS;
# nothing is served over plain HTTP.
HTTP_PORT = 80
SSH_PORT = 22
# hcloud keeps a rule's description to 255 characters.
DESCRIPTION_LIMIT = 255


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
            FirewallPlan(
                f"unde-{stack}-https",
                (
                    Rule("tcp", str(HTTPS_PORT), ANYWHERE, "HTTPS entry point"),
                    Rule("tcp", str(HTTP_PORT), ANYWHERE, "ACME HTTP-01 challenges and the redirect to HTTPS"),
                ),
                entry,
            )
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
    # What a server serves publicly today stays open (servers.<name>.inbound), in a firewall of
    # its own, except what the topology closes and SSH, which only the admin CIDRs reach.
    for server in servers:
        kept = [e for e in server.inbound if not e.close and not _is_ssh(e)
                and not allows(rules_on(plans, server.name), e)]
        if kept:
            plans.append(FirewallPlan(
                f"unde-{server.name}-inbound",
                tuple(Rule(e.protocol, e.port, e.sources, f"served today: {e.reason}"[:DESCRIPTION_LIMIT])
                      for e in kept),
                (server.name,),
            ))
    return plans


def rules_on(plans: Iterable[FirewallPlan], server: str) -> list[Rule]:
    return [rule for plan in plans if server in plan.servers for rule in plan.rules]


def newly_blocked(inventory: Inventory, stack: str, admin_cidrs: Sequence[IPv4Network | IPv6Network]) -> list[tuple[Server, Inbound]]:
    """What servers that run today serve publicly and the planned firewalls do not allow: the
    traffic the change starts to block, acknowledged (`close`) or not."""
    plans = firewall_plans(inventory, stack, admin_cidrs)
    return [
        (server, entry)
        for server in inventory.stack_servers(stack)
        if server.existing
        for entry in server.inbound
        if not allows(rules_on(plans, server.name), entry)
    ]


def as_rule(entry: Inbound) -> Rule:
    return Rule(entry.protocol, entry.port, entry.sources, entry.reason)


def allows(rules: Iterable[Rule], entry: Inbound) -> bool:
    """Whether one of the rules lets all of `entry` in (hcloud allows what any rule of any
    attached firewall allows)."""
    wanted = as_rule(entry)
    return any(covers(rule, wanted) for rule in rules)


def covers(outer: Rule, inner: Rule) -> bool:
    """`outer` allows everything `inner` does: same protocol, its ports, every source inside one of its own."""
    if outer.protocol != inner.protocol:
        return False
    if outer.protocol in ("tcp", "udp"):
        low, high = port_span(outer.port)
        inner_low, inner_high = port_span(inner.port)
        if not low <= inner_low <= inner_high <= high:
            return False
    outer_nets = [ip_network(s, strict=False) for s in outer.sources]
    return all(
        any(n.version == o.version and n.subnet_of(o) for o in outer_nets)  # type: ignore[arg-type]
        for n in (ip_network(s, strict=False) for s in inner.sources)
    )


def port_span(port: str | None) -> tuple[int, int]:
    if port in (None, "any"):
        return 1, 65535
    low, _, high = str(port).partition("-")
    return int(low), int(high or low)


def _is_ssh(entry: Inbound) -> bool:
    low, high = port_span(entry.port)
    return entry.protocol == "tcp" and low <= SSH_PORT <= high
