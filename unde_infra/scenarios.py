"""`unde-infra scenarios`: which shard keeps a writable primary when a site, a server or the link
between the sites fails, for the chosen etcd placement.

The model follows what Patroni and etcd actually do:

* Reachability: servers of one site reach each other; Helsinki and the witness site share
  Hetzner's private network; local servers reach Helsinki (and the witness) only through their
  WireGuard tunnels to helsinki-gw, except local-etcd-1, which has a direct tunnel to the witness
  (render/wireguard.py) that survives the loss of Helsinki and of the local <-> Helsinki link.
* etcd works for a Patroni node if the node reaches a member that is, or reaches, a member that
  can lead: one that reaches a majority of the members (pre-vote keeps a partly cut-off member
  from unseating it).
* The primary keeps its leader lock while it has etcd. Without etcd, failsafe_mode keeps it
  primary only if it reaches every other Patroni member of its shard; otherwise it demotes
  itself after retry_timeout and takes no writes.
* A replica takes over when the primary is gone or demoted and it has etcd: after the leader
  key's ttl, the member check and the promotion (timings.failover_rto_seconds()).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import timings
from .model import DEFAULT_TOPOLOGY, HELSINKI, LOCAL, WITNESS, Inventory, Server, Shard, load_topology

SCENARIOS = ("shard-down", "local-site-down", "helsinki-down", "link-cut", "third-site-down")
PLACEMENTS = ("three-sites", "plan")
JSON_KEYS = ("scenario", "shard", "writable", "primary_site", "rto_seconds", "data_at_risk")


@dataclass(frozen=True)
class Failure:
    name: str
    down: frozenset[str] = frozenset()  # server names
    link_cut: bool = False  # the local <-> Helsinki path (the tunnels to helsinki-gw)


@dataclass(frozen=True)
class Outcome:
    scenario: str
    shard: int
    writable: bool
    primary_site: str | None
    rto_seconds: int | None
    data_at_risk: str
    # Not part of --json: the reasoning, for people.
    why: str = field(default="", compare=False)

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        return {key: data[key] for key in JSON_KEYS}


def _direct_links(inventory: Inventory) -> set[frozenset[str]]:
    """Server pairs joined by a tunnel that bypasses helsinki-gw (the etcd witness tunnel)."""
    from .render.wireguard import witness_tunnel

    tunnel = witness_tunnel(inventory)
    return {frozenset({tunnel.local.name, tunnel.remote.name})} if tunnel is not None else set()


class Network:
    def __init__(self, inventory: Inventory, failure: Failure) -> None:
        self.inventory = inventory
        self.failure = failure
        self.direct = _direct_links(inventory)
        gateway = inventory.gateway
        self.gateway_up = gateway.name not in failure.down

    def alive(self, server: Server) -> bool:
        return server.name not in self.failure.down

    def reach(self, a: Server, b: Server) -> bool:
        if not (self.alive(a) and self.alive(b)):
            return False
        if a.name == b.name or a.site == b.site:
            return True
        sites = {a.site, b.site}
        if LOCAL not in sites:
            return True  # Helsinki and the witness site: one Hetzner private network
        if frozenset({a.name, b.name}) in self.direct:
            return True
        # Every other path from the local site runs through the tunnels to helsinki-gw.
        return self.gateway_up and not self.failure.link_cut


def failures(inventory: Inventory, shard: Shard) -> list[Failure]:
    """The scenarios, as seen by one shard (shard-down is that shard's primary)."""

    def site(*names: str) -> frozenset[str]:
        return frozenset(s.name for s in inventory.servers.values() if s.site in names)

    return [
        Failure("shard-down", frozenset({shard.primary.name})),
        Failure("local-site-down", site(LOCAL)),
        Failure("helsinki-down", site(HELSINKI)),
        Failure("link-cut", link_cut=True),
        Failure("third-site-down", site(WITNESS)),
    ]


def etcd_leader_candidates(inventory: Inventory, net: Network) -> list[Server]:
    hosts = [m.host for m in inventory.etcd]
    majority = len(hosts) // 2 + 1
    return [h for h in hosts if net.alive(h) and sum(1 for o in hosts if net.reach(h, o)) >= majority]


def has_dcs(node: Server, inventory: Inventory, net: Network) -> bool:
    if not net.alive(node):
        return False
    leaders = etcd_leader_candidates(inventory, net)
    return any(
        net.reach(node, m.host) and any(net.reach(m.host, leader) for leader in leaders) for m in inventory.etcd
    )


def evaluate(inventory: Inventory, shard: Shard, failure: Failure) -> Outcome:
    net = Network(inventory, failure)
    primary, replica = shard.primary, shard.replica
    failover_rto = timings.failover_rto_seconds()
    lag_mib = timings.MAXIMUM_LAG_ON_FAILOVER_BYTES // (1024 * 1024)
    lost_on_failover = (
        f"asynchronous replication: commits acknowledged by {primary.name} but not yet streamed "
        f"(at most {lag_mib} MiB of WAL, else no promotion; usually well under 1 s); clients verify and replay"
    )
    catching_up = (
        f"none lost; {replica.name} is cut off, so WAL and archive-push accumulate on {primary.name} "
        "(alert at 20 GB) and a failure of the primary now would lose what was written since"
    )

    def outcome(writable: bool, site: str | None, rto: int | None, risk: str, why: str) -> Outcome:
        return Outcome(failure.name, shard.index, writable, site, rto, risk, why)

    if net.alive(primary) and has_dcs(primary, inventory, net):
        risk = "none" if net.reach(primary, replica) else catching_up
        return outcome(True, primary.site, 0, risk, f"{primary.name} keeps the leader lock (it reaches an etcd majority)")
    if net.alive(primary) and net.reach(primary, replica):
        # failsafe_mode: without etcd, the primary stays primary because it reaches every member.
        return outcome(True, primary.site, 0, "none",
                       f"{primary.name} lost etcd but failsafe_mode keeps it: it reaches every member")
    demoted = net.alive(primary)
    if net.alive(replica) and has_dcs(replica, inventory, net):
        return outcome(True, replica.site, failover_rto, lost_on_failover,
                       f"{primary.name} {'demotes itself (no etcd majority)' if demoted else 'is down'}; "
                       f"{replica.name} reaches an etcd majority and is promoted")
    if demoted:
        why = (f"{primary.name} reaches no etcd majority and not every member (failsafe cannot help), "
               f"so it demotes itself to read-only after retry_timeout ({timings.PATRONI_RETRY_TIMEOUT} s); "
               f"{replica.name} is {'down' if not net.alive(replica) else 'unreachable without etcd'}")
        risk = "none lost, but writes are refused until etcd has a majority again"
    else:
        why = f"{primary.name} is down and {replica.name} has no etcd majority (or is down)"
        risk = "writes are refused; nothing acknowledged is lost unless the primary's disk is"
    return outcome(False, None, None, risk, why)


def analyse(inventory: Inventory, scenarios: Iterable[str] = SCENARIOS) -> list[Outcome]:
    wanted = list(scenarios)
    outcomes: list[Outcome] = []
    for name in wanted:
        for shard in inventory.shards:
            failure = next(f for f in failures(inventory, shard) if f.name == name)
            outcomes.append(evaluate(inventory, shard, failure))
    return outcomes


def quorum_survives_site_loss(inventory: Inventory) -> dict[str, bool]:
    """For each site: do the etcd members outside it still hold a majority?"""
    total = len(inventory.etcd)
    return {
        site: sum(1 for m in inventory.etcd if m.site != site) > total // 2
        for site in sorted({m.site for m in inventory.etcd} | {LOCAL, HELSINKI})
    }


def _text(inventory: Inventory, outcomes: list[Outcome]) -> str:
    members = ", ".join(f"{m.member}@{m.host.name} ({m.site})" for m in inventory.etcd)
    lines = [
        f"etcd placement {inventory.etcd_placement}: {members}",
        f"Patroni ttl {timings.PATRONI_TTL} s, loop_wait {timings.PATRONI_LOOP_WAIT} s, retry_timeout "
        f"{timings.PATRONI_RETRY_TIMEOUT} s; failover RTO up to {timings.failover_rto_seconds()} s "
        "(database only: routing, DNS and the Helsinki orchestrator come on top)",
        "",
        f"{'scenario':<16} {'shard':>5}  {'writable':<8} {'primary':<9} {'rto_s':>5}  why",
    ]
    for o in outcomes:
        rto = "-" if o.rto_seconds is None else str(o.rto_seconds)
        lines.append(f"{o.scenario:<16} {o.shard:>5}  {'yes' if o.writable else 'NO':<8} "
                     f"{o.primary_site or '-':<9} {rto:>5}  {o.why}")
        lines.append(f"{'':<16} {'':>5}  data at risk: {o.data_at_risk}")
    lines += [f"note: {note}" for note in inventory.notes]
    return "\n".join(lines)


def cmd_scenarios(args: argparse.Namespace) -> int:
    inventory = load_topology(args.topology, placement=args.placement)
    outcomes = analyse(inventory)
    if args.json:
        print(json.dumps([o.as_json() for o in outcomes], indent=2))
    else:
        print(_text(inventory, outcomes))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("scenarios", help="which shards stay writable when a site, a shard or the link fails")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--json", action="store_true", help="print a list of objects: " + ", ".join(JSON_KEYS))
    parser.add_argument("--placement", choices=PLACEMENTS, default=None,
                        help="evaluate this etcd placement instead of the topology's (plan = SPEC's original)")
    parser.set_defaults(func=cmd_scenarios)
