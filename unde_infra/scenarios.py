"""`unde-infra scenarios`: which shard keeps a writable primary when a site, a server or the link
between the sites fails, for the chosen etcd placement.

The model follows what Patroni and etcd actually do:

* Reachability: servers of one site reach each other; Helsinki and the witness site share
  Hetzner's private network; local servers reach Helsinki (and the witness) only through their
  WireGuard tunnels to helsinki-gw, except local-etcd-1, which has a direct tunnel to the witness
  (render/wireguard.py) that survives the loss of Helsinki and of the local <-> Helsinki link.
* Where the etcd leader is when the failure happens matters, so every row is the worst case
  over the leader's positions. A leader that still reaches a majority stays leader (pre-vote
  and check-quorum keep a partly cut-off member from unseating it); otherwise a member that
  reaches a majority is elected, which renews every lease, Patroni's leader key among them.
* etcd works for a Patroni node if the node reaches a member that is, or reaches, the leader.
* The primary keeps its leader lock while it has etcd. Without etcd, failsafe_mode keeps it
  primary only if it reaches every other Patroni member of its shard; otherwise it demotes
  itself after retry_timeout and takes no writes.
* A replica takes over when the primary is gone or demoted and it has etcd: after the leader
  key's ttl, the member check and the promotion (timings.failover_rto_seconds()).
* Durability: an async shard loses what its primary acknowledged but did not stream; when the
  primary lives on, cut off, that is everything it acknowledged until it demotes itself
  (timings.async_loss_window_seconds()). A sync shard acknowledges a commit only once the replica
  has it, so a failover loses nothing; when its replica vanishes while the primary keeps the
  lock, its commits wait until Patroni drops the replica (timings.sync_standby_drop_seconds()).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import timings
from .model import DEFAULT_TOPOLOGY, HELSINKI, LOCAL, WITNESS, EtcdMember, Inventory, Server, Shard, load_topology

SCENARIOS = ("shard-down", "local-site-down", "helsinki-down", "link-cut", "third-site-down")
PLACEMENTS = ("three-sites", "plan")
JSON_KEYS = ("scenario", "shard", "durability", "writable", "primary_site", "rto_seconds", "max_loss_seconds",
             "data_at_risk", "etcd_leader", "two_primaries", "entry_failover_seconds", "routing_seconds",
             "scenario_rto_seconds", "by_leader")
# SPEC scenario 2: the whole local site down; Helsinki takes the users' traffic.
SITE_FAILOVER_SCENARIO = "local-site-down"
SPEC_SITE_FAILOVER_RTO_SECONDS = (60, 300)  # SPEC: "RTO 1-5 min"


@dataclass(frozen=True)
class Failure:
    name: str
    down: frozenset[str] = frozenset()  # server names
    link_cut: bool = False  # the local <-> Helsinki path (the tunnels to helsinki-gw)


@dataclass(frozen=True)
class Outcome:
    """One failure of one shard with the etcd leader on one member (or, from `analyse`, on the
    member that makes it worst)."""

    scenario: str
    shard: int
    durability: str
    writable: bool
    primary_site: str | None
    rto_seconds: int | None
    # Seconds of acknowledged commits that a failover may drop (0: none can be lost).
    max_loss_seconds: float
    data_at_risk: str
    etcd_leader: str | None  # the etcd member that leads when the failure happens
    etcd_election: bool = False
    two_primaries: bool = False
    # Until users' traffic reaches the Helsinki entry point (DNS failover), where the entry moves;
    # the scenario's RTO is the later of that and the shard's (they run at the same time).
    entry_failover_seconds: int | None = None
    scenario_rto_seconds: int | None = None
    by_leader: tuple[Outcome, ...] = ()
    # Not part of --json: the reasoning, for people.
    why: str = field(default="", compare=False)
    # Until local-redis's routing entry names the new primary, after the promotion (None: the
    # primary did not move, or users are served from Helsinki, whose orchestrator needs no entry).
    routing_seconds: int | None = None

    def as_json(self) -> dict[str, object]:
        data = {key: getattr(self, key) for key in JSON_KEYS if key != "by_leader"}
        if self.by_leader:
            data["by_leader"] = [
                {k: getattr(o, k) for k in ("etcd_leader", "writable", "primary_site", "rto_seconds",
                                            "max_loss_seconds", "etcd_election")}
                for o in self.by_leader
            ]
        return data

    def severity(self) -> tuple[int, float, int]:
        """Worse first when sorted descending: not writable, then more loss, then a longer RTO."""
        return (0 if self.writable else 1, self.max_loss_seconds, self.rto_seconds or 0)


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


def _majority(inventory: Inventory) -> int:
    return len(inventory.etcd) // 2 + 1


def _reaches_majority(member: Server, inventory: Inventory, net: Network) -> bool:
    return net.alive(member) and sum(1 for m in inventory.etcd if net.reach(member, m.host)) >= _majority(inventory)


def etcd_leaders_after(inventory: Inventory, net: Network, leader: EtcdMember) -> tuple[list[Server], bool]:
    """Who can lead etcd after the failure, and whether an election was needed. A leader that is
    alive and still reaches a majority keeps its place: pre-vote and check-quorum make every
    member that still hears from it refuse a challenger, and a challenger needs a majority. Else
    any member that reaches a majority may win the election (each is a possible worst case)."""
    if _reaches_majority(leader.host, inventory, net):
        return [leader.host], False
    return [m.host for m in inventory.etcd if _reaches_majority(m.host, inventory, net)], True


def has_dcs(node: Server, inventory: Inventory, net: Network, etcd_leader: Server | None) -> bool:
    """Patroni on `node` can read and write the DCS: it reaches a member that is, or reaches,
    the etcd leader (a member cut off from the leader answers no linearizable request)."""
    if etcd_leader is None or not net.alive(node):
        return False
    return any(net.reach(node, m.host) and net.reach(m.host, etcd_leader) for m in inventory.etcd)


def evaluate(inventory: Inventory, shard: Shard, failure: Failure, leader: EtcdMember | None = None) -> Outcome:
    """The outcome with the etcd leader on `leader` when the failure happens; without one, the
    worst over every leader position (and every possible election winner)."""
    if leader is None:
        cases = [evaluate(inventory, shard, failure, m) for m in inventory.etcd]
        worst = max(cases, key=Outcome.severity)
        return replace(worst, by_leader=tuple(cases))
    net = Network(inventory, failure)
    winners, election = etcd_leaders_after(inventory, net, leader)
    if not winners:
        return _evaluate(inventory, shard, failure, net, leader, None, election)
    return max((_evaluate(inventory, shard, failure, net, leader, w, election) for w in winners), key=Outcome.severity)


def _evaluate(inventory: Inventory, shard: Shard, failure: Failure, net: Network, leader: EtcdMember,
              etcd_leader: Server | None, election: bool) -> Outcome:
    primary, replica = shard.primary, shard.replica
    sync = shard.synchronous
    lag_mib = timings.MAXIMUM_LAG_ON_FAILOVER_BYTES // (1024 * 1024)
    window = timings.async_loss_window_seconds()
    catching_up = (
        f"none lost; {replica.name} is cut off, so WAL and archive-push accumulate on {primary.name} "
        "(alert at 20 GB)"
        + (" and commits wait until Patroni drops it from synchronous_standby_names (then go on unreplicated)"
           if sync else " and a failure of the primary now would lose what was written since")
    )

    entry = entry_failover_seconds(inventory, failure)

    def outcome(writable: bool, site: str | None, rto: int | None, loss: float, risk: str, why: str) -> Outcome:
        routing = None
        if failure.name == SITE_FAILOVER_SCENARIO:
            # Users are served again once both the shard and the entry have moved to Helsinki. The
            # standby orchestrator lands on the writable member by itself (its multi-host DSN).
            scenario_rto = None if rto is None or entry is None else max(rto, entry)
        elif rto and _routing_reaches(inventory, net, replica):
            # The local site serves on: its clients follow local-redis's routing entry, which the
            # new primary writes once promoted (over its tunnel when it is the Helsinki replica).
            routing = timings.routing_update_seconds()
            scenario_rto = rto + routing
        else:
            scenario_rto = rto
        return Outcome(failure.name, shard.index, shard.durability, writable, site, rto, loss, risk, leader.member,
                       election, False, entry, scenario_rto, (), why, routing)

    if net.alive(primary) and has_dcs(primary, inventory, net, etcd_leader):
        if net.reach(primary, replica):
            return outcome(True, primary.site, 0, 0, "none", f"{primary.name} keeps the leader lock (it reaches the etcd leader)")
        # A sync shard's commits wait for the vanished replica until Patroni drops it.
        wait = timings.sync_standby_drop_seconds(etcd_election=election) if sync else 0
        return outcome(True, primary.site, wait, 0, catching_up,
                       f"{primary.name} keeps the leader lock (it reaches the etcd leader)"
                       + (f"; commits wait up to {wait} s until Patroni drops {replica.name} from "
                          "synchronous_standby_names" if sync else ""))
    if net.alive(primary) and net.reach(primary, replica):
        # failsafe_mode: without etcd, the primary stays primary because it reaches every member.
        return outcome(True, primary.site, 0, 0, "none",
                       f"{primary.name} lost etcd but failsafe_mode keeps it: it reaches every member")
    demoted = net.alive(primary)
    if net.alive(replica) and has_dcs(replica, inventory, net, etcd_leader):
        rto = timings.failover_rto_seconds(etcd_election=election)
        if sync:
            loss: float = 0
            risk = ("none lost: synchronous_mode, every acknowledged commit is on the replica"
                    + (f"; {primary.name} stops acknowledging as soon as the replica is cut off" if demoted else ""))
        elif demoted:
            loss = window
            risk = (f"asynchronous replication: {primary.name} is alive but cut off from {replica.name} and "
                    f"keeps acknowledging commits until it demotes itself, up to {window} s "
                    "(loop_wait + 2 x retry_timeout + shutdown); the application verifies and replays them")
        else:
            loss = timings.REPLICATION_LAG_SECONDS
            risk = (f"asynchronous replication: commits acknowledged by {primary.name} but not yet streamed "
                    f"(about {timings.REPLICATION_LAG_SECONDS} s, at most {lag_mib} MiB of WAL, else no "
                    "promotion); the application verifies and replays them")
        return outcome(True, replica.site, rto, loss, risk,
                       f"{primary.name} {'demotes itself (no etcd leader in reach)' if demoted else 'is down'}; "
                       f"{replica.name} reaches the etcd leader and is promoted"
                       + (" after an etcd election, which renews the leader key's lease" if election else ""))
    if demoted:
        why = (f"{primary.name} reaches no etcd leader and not every member (failsafe cannot help), "
               f"so it demotes itself to read-only after retry_timeout ({timings.PATRONI_RETRY_TIMEOUT} s); "
               f"{replica.name} is {'down' if not net.alive(replica) else 'unreachable without etcd'}")
        risk = "none lost, but writes are refused until etcd has a leader in reach again"
    else:
        why = f"{primary.name} is down and {replica.name} has no etcd leader in reach (or is down)"
        risk = "writes are refused; nothing acknowledged is lost unless the primary's disk is"
    return outcome(False, None, None, 0, risk, why)


def _routing_reaches(inventory: Inventory, net: Network, new_primary: Server) -> bool:
    """Whether a promoted replica reaches local-redis to write the routing entry (it does not when
    the link is cut or the local site is gone)."""
    redis = next((s for s in inventory.site_servers(LOCAL) if s.task == "redis"), None)
    return redis is not None and net.reach(redis, new_primary)


def entry_failover_seconds(inventory: Inventory, failure: Failure) -> int | None:
    """When the whole local site is down, the entry record moves to the standby entry point in
    Helsinki (the failover watcher, docs/failures.md, "Scenario 2"); without one, users are not served."""
    if failure.name != SITE_FAILOVER_SCENARIO or inventory.standby_entry is None:
        return None
    return timings.entry_failover_seconds()


def analyse(inventory: Inventory, scenarios: Iterable[str] = SCENARIOS) -> list[Outcome]:
    """Every scenario for every shard, each the worst case over the etcd leader's position."""
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
        f"{timings.PATRONI_RETRY_TIMEOUT} s; failover RTO up to {timings.failover_rto_seconds()} s, "
        f"{timings.failover_rto_seconds(etcd_election=True)} s when the etcd leader fails too "
        "(rto_s: the database only; scenario 2's DNS failover is below; where the local site serves on, "
        f"the routing entry in local-redis follows within {timings.routing_update_seconds()} s more: scenario_rto_seconds)",
        f"async shards: a primary cut off from etcd and its replica acknowledges writes for up to "
        f"{timings.async_loss_window_seconds()} s before it demotes; sync shards lose no acknowledged write",
        "each row is the worst case over where the etcd leader is when the failure happens",
        "",
        f"{'scenario':<16} {'shard':>5} {'mode':<5} {'writable':<8} {'primary':<9} {'rto_s':>5} {'loss_s':>6}  "
        f"{'worst etcd leader':<18} why",
    ]
    for o in outcomes:
        rto = "-" if o.rto_seconds is None else str(o.rto_seconds)
        lines.append(f"{o.scenario:<16} {o.shard:>5} {o.durability:<5} {'yes' if o.writable else 'NO':<8} "
                     f"{o.primary_site or '-':<9} {rto:>5} {o.max_loss_seconds:>6g}  {o.etcd_leader or '-':<18} {o.why}")
        lines.append(f"{'':<16} {'':>5}  data at risk: {o.data_at_risk}")
    lines += ["", *site_failover_text(inventory, outcomes)]
    lines += [f"note: {note}" for note in inventory.notes]
    return "\n".join(lines)


def site_failover_text(inventory: Inventory, outcomes: list[Outcome]) -> list[str]:
    rows = [o for o in outcomes if o.scenario == SITE_FAILOVER_SCENARIO]
    if not rows:
        return []
    low, high = SPEC_SITE_FAILOVER_RTO_SECONDS
    standby = inventory.standby_entry
    if standby is None:
        return [f"scenario 2 ({SITE_FAILOVER_SCENARIO}): no standby entry point in the topology, so users are not "
                "served while the local site is down (SPEC: RTO 1-5 min)"]
    from .render.entry_failover import observer

    peer = observer(inventory)
    vantage = f"{standby.name} and {peer.name}" if peer is not None else f"{standby.name} alone"
    shard_rto = [o.rto_seconds for o in rows]
    scenario = [o.scenario_rto_seconds for o in rows]
    worst = None if None in scenario else max(s for s in scenario if s is not None)
    db = "every shard writable after " + (f"{max(r for r in shard_rto if r is not None)} s"
                                          if None not in shard_rto else "- (a shard stays unwritable)")
    verdict = "no RTO: a shard is not writable" if worst is None else (
        f"RTO {worst} s ({worst / 60:.1f} min), SPEC: {low // 60}-{high // 60} min"
        + ("" if low <= worst <= high else " (outside SPEC's range)"))
    return [
        f"scenario 2 ({SITE_FAILOVER_SCENARIO}): users reach {standby.name} after at most "
        f"{timings.entry_failover_seconds()} s: detection {timings.entry_failover_detection_seconds()} s "
        f"({timings.ENTRY_FAILURES_TO_FAIL_OVER} failed probes {timings.ENTRY_PROBE_INTERVAL_SECONDS} s apart at "
        f"{vantage}), Cloud API {timings.DNS_API_TIMEOUT_SECONDS} s, publication {timings.DNS_PUBLISH_SECONDS} s "
        f"(assumed), TTL {timings.ENTRY_RECORD_TTL_SECONDS} s",
        f"  {db}; the two run at the same time: {verdict}",
    ]


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
