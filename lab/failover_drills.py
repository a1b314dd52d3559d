"""SPEC's failures drilled on the lab's servers at the real distance, each beside what
`unde-infra scenarios --json` says of it.

For every scenario of the failure model (a shard's primary, the local site, Helsinki, the link
between them, the witness site) and with the etcd leader on each member in turn, both of the
lab's shards (shard 0 asynchronous, shard 1 synchronous) take writes from a client on each side
(local-orchestrator and standby-orchestrator, through PgBouncer, as the services connect) while
the failure happens. Measured from the clients' own acknowledgements:
- the write outage: the longest time without an acknowledged write from either client;
- the acknowledged rows missing on the shard's leader afterwards, and over which window;
- two primaries: two members acknowledging writes in overlapping times;
- where the shard leads at the end, whether etcd elected a new leader, and how long the old
  primary took to stream again after the heal.
`disagreements` compares each with the model's row for that leader position and durability.

WAN hiccups (all traffic between the sites dropped for a while, jitter) must not fail over."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from unde_infra import scenarios, timings
from unde_infra.model import HELSINKI, LOCAL, Inventory, Server, Shard
from unde_infra.render.etcd import LEADER_AFFINITY_UNIT

from .cluster import APP_DATABASE, ETCDCTL, etcd_leader, lead_at_home, nudge_rewound, patronictl, server_down, sh, sql
from .network import S3_ADDRESS, S3_ADDRESS6
from .wan_relay import control

# The clients: the application's orchestrator on the local site, its warm standby in Helsinki.
CLIENTS = {"local": "local-orchestrator", "helsinki": "standby-orchestrator"}
ACKS_TABLE = "unde_drill_acks"
WRITER_PATH = "/var/tmp/unde-drill-writer.py"
# One acknowledged single-row insert after another (a pause between them keeps the logs short).
WRITER = """
import sys, time, psycopg2
shard, name, log_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
env = dict(line.split("=", 1) for line in open("/etc/unde/secrets/shard-credentials.env").read().split())
def value(key):
    return env[f"SHARD{shard}_{key}"]
dsn = (f"host={value('HOST')} port={value('PORT')} dbname={value('DATABASE')} user={value('USER')} "
       f"password={value('PASSWORD')} target_session_attrs={value('TARGET_SESSION_ATTRS')} "
       f"connect_timeout={value('CONNECT_TIMEOUT')} tcp_user_timeout={value('TCP_USER_TIMEOUT')} "
       f"keepalives={value('KEEPALIVES')} keepalives_idle={value('KEEPALIVES_IDLE')} "
       f"keepalives_interval={value('KEEPALIVES_INTERVAL')} keepalives_count={value('KEEPALIVES_COUNT')}")
log = open(log_path, "w", buffering=1)
deadline = time.monotonic() + seconds
n, conn, host = 0, None, "-"
while time.monotonic() < deadline:
    try:
        if conn is None:
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            host = conn.info.host  # the member it reached, of the list
        n += 1
        conn.cursor().execute("INSERT INTO unde_drill_acks (writer, id) VALUES (%s, %s)", (name, n))
        log.write(f"{time.time():.3f} {n} ok {host}\\n")
        time.sleep(0.02)
    except Exception as error:
        log.write(f"{time.time():.3f} {n} err {type(error).__name__}\\n")
        conn = None
        time.sleep(0.2)
"""
# The model counts whole seconds; the writer retries every 0.2 s; and a sync shard's commits
# pause while its replica starts a new 16 MiB WAL segment (zero-filled: wal_init_zero), which
# took up to 2.1 s on the lab's busy disk, once a minute (archive_timeout switches the segment).
SLACK_SECONDS = 3.0
# With no failover expected, watch until a leader key that was not renewed would have expired
# and the replica would have been promoted: only then is "nothing happened" a finding.
QUIET_WATCH_SECONDS = timings.PATRONI_TTL + timings.PATRONI_LOOP_WAIT + timings.PATRONI_PROMOTE_SECONDS + 2


@dataclass
class Ack:
    at: float
    writer: str
    id: int
    host: str


@dataclass
class ShardFigures:
    """What one shard did in one drill."""

    outage_s: float | None  # None: no write was acknowledged after the failure
    acked: int
    lost: int
    lost_window_s: float
    two_primaries: bool
    primary_site: str | None
    rejoin_s: float | None = None


@dataclass
class DrillResult:
    scenario: str
    etcd_leader: str
    etcd_election: bool | None
    shards: dict[int, ShardFigures] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "etcd_leader": self.etcd_leader, "etcd_election": self.etcd_election,
                "shards": {str(i): vars(f) for i, f in self.shards.items()}, "problems": self.problems}


# --------------------------------------------------------------------------------------------
# The clients' writes


def prepare_clients(containers: dict[str, Any], inventory: Inventory) -> None:
    for name in CLIENTS.values():
        client = containers[name]
        sh(client, "python3 -c 'import psycopg2' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends python3-psycopg2 >/dev/null", timeout=300)
        sh(client, f"cat > {WRITER_PATH} <<'EOF'\n{WRITER}\nEOF")
    for shard in inventory.shards:
        sql(containers[leader_name(containers, shard)],
            f"CREATE TABLE IF NOT EXISTS {ACKS_TABLE} (writer text, id bigint, at timestamptz DEFAULT now(), "
            f"PRIMARY KEY (writer, id)); GRANT INSERT, SELECT, DELETE ON {ACKS_TABLE} TO orchestrator",
            database=APP_DATABASE)


def _log(shard: Shard, site: str) -> str:
    return f"/var/tmp/unde-drill-{shard.scope}-{site}.log"


def start_writers(containers: dict[str, Any], inventory: Inventory, seconds: float) -> None:
    for shard in inventory.shards:
        sql(containers[leader_name(containers, shard)], f"TRUNCATE {ACKS_TABLE}", database=APP_DATABASE)
        for site, name in CLIENTS.items():
            started = containers[name].exec(
                "sh", "-c", f"nohup python3 {WRITER_PATH} {shard.index} {site} {_log(shard, site)} {seconds} "
                            ">/dev/null 2>&1 & echo started")
            if started.returncode != 0:
                raise RuntimeError(f"{name}: the writer did not start: {started.stderr.strip()[-300:]}")


def stop_writers(containers: dict[str, Any]) -> None:
    for name in CLIENTS.values():
        containers[name].exec("pkill", "-f", WRITER_PATH)


def acks_of(containers: dict[str, Any], shard: Shard) -> list[Ack]:
    acks = []
    for site, name in CLIENTS.items():
        for line in sh(containers[name], f"cat {_log(shard, site)} 2>/dev/null || true").splitlines():
            words = line.split()
            if len(words) == 4 and words[2] == "ok":
                acks.append(Ack(float(words[0]), site, int(words[1]), words[3]))
    return sorted(acks, key=lambda a: a.at)


def write_outage(acks: list[Ack], failed_at: float, until: float) -> float | None:
    """The longest time without an acknowledged write from either client, from the failure to
    `until` (None: none came after the failure)."""
    times = [a.at for a in acks if a.at <= until]
    after = [t for t in times if t > failed_at]
    if not after:
        return None
    before = max((t for t in times if t <= failed_at), default=failed_at)
    gaps = [after[0] - before] + [b - a for a, b in zip(after, after[1:], strict=False)]
    return round(max(gaps), 2)


def two_primaries(acks: list[Ack]) -> bool:
    """Two members acknowledged writes in overlapping times: one member's first acknowledgement
    came before another's last (a failover shows the old member's span ending before the new
    one's begins)."""
    spans: dict[str, tuple[float, float]] = {}
    for ack in acks:
        first, last = spans.get(ack.host, (ack.at, ack.at))
        spans[ack.host] = (min(first, ack.at), max(last, ack.at))
    ordered = sorted(spans.values())
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False))


def missing(containers: dict[str, Any], shard: Shard, acks: list[Ack]) -> list[Ack]:
    stored = sql(containers[leader_name(containers, shard)], f"SELECT writer || ' ' || id FROM {ACKS_TABLE}",
                 database=APP_DATABASE, timeout=120)
    present = {tuple(line.split()) for line in stored.splitlines() if line}
    return [a for a in acks if (a.writer, str(a.id)) not in present]


# --------------------------------------------------------------------------------------------
# Where the leaders are


def leader_name(containers: dict[str, Any], shard: Shard) -> str:
    """The member that leads the shard, as any member that answers says."""
    for member in (shard.primary, shard.replica):
        result = containers[member.name].exec("sh", "-c", patronictl(shard, "list", "-f", "json", shard.scope),
                                              timeout=20)
        if result.returncode == 0:
            leaders = [m["Member"] for m in json.loads(result.stdout) if m.get("Role") == "Leader"]
            if len(leaders) == 1:
                return str(leaders[0])
    raise RuntimeError(f"{shard.scope}: no member names a single leader")


def member_states(containers: dict[str, Any], shard: Shard) -> dict[str, dict[str, Any]]:
    result = containers[shard.replica.name].exec("sh", "-c", patronictl(shard, "list", "-f", "json", shard.scope),
                                                 timeout=20)
    if result.returncode != 0:
        result = containers[shard.primary.name].exec("sh", "-c", patronictl(shard, "list", "-f", "json", shard.scope),
                                                     timeout=20)
    return {m["Member"]: m for m in json.loads(result.stdout or "[]")}


def etcd_members(containers: dict[str, Any], inventory: Inventory) -> dict[str, int]:
    """Each etcd member's name in the topology -> its member id."""
    observer = next(containers[m.host.name] for m in inventory.etcd if m.host.name in containers)
    _, endpoints = etcd_leader(observer)
    return {m.member: next(i for i, e in endpoints.items() if f"//{m.host.ip}:" in e) for m in inventory.etcd}


def leader_affinity(containers: dict[str, Any], inventory: Inventory, on: bool) -> None:
    """The local member's timer that brings the etcd leader home (render/etcd.py), stopped while a
    drill holds the leader elsewhere, and started again."""
    for member in inventory.etcd:
        if member.site == LOCAL:
            sh(containers[member.host.name], f"systemctl {'start' if on else 'stop'} {LEADER_AFFINITY_UNIT}.timer")


def place_etcd_leader(containers: dict[str, Any], inventory: Inventory, member: str, timeout: float = 30) -> int:
    ids = etcd_members(containers, inventory)
    observer = next(containers[m.host.name] for m in inventory.etcd if m.member != member)
    deadline = time.monotonic() + timeout
    while True:
        leader, endpoints = etcd_leader(observer)
        if leader == ids[member]:
            return leader
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd: the leadership did not move to {member}")
        sh(observer, f"ETCDCTL_API=3 etcdctl --endpoints={endpoints[leader]} move-leader {ids[member]:x}", timeout=60)
        time.sleep(1)


def etcd_leader_seen_by(containers: dict[str, Any], inventory: Inventory, alive: Callable[[Server], bool]) -> int | None:
    """The leader as a live member sees it (None: none of them has one)."""
    for member in inventory.etcd:
        if alive(member.host):
            result = containers[member.host.name].exec("sh", "-c", f"{ETCDCTL} endpoint status -w json", timeout=15)
            try:
                leader = json.loads(result.stdout)[0]["Status"]["leader"]
            except (ValueError, KeyError, IndexError):
                continue
            if leader:
                return int(leader)
    return None


# --------------------------------------------------------------------------------------------
# Failures


def _inet(containers: dict[str, Any]) -> str:
    namespace = next(iter(containers.values())).host.namespace
    return namespace.rsplit("-h", 1)[0] + "-inet"


def public_addresses(container: Any) -> list[str]:
    shown = subprocess.run(["ip", "netns", "exec", container.host.namespace, "ip", "-j", "addr", "show", "dev", "eth0"],
                           capture_output=True, text=True, timeout=10)
    if shown.returncode != 0:
        return []  # a server with no public interface
    return [a["local"] for link in json.loads(shown.stdout) for a in link.get("addr_info", [])
            if a.get("scope") == "global"]


def cut_ruleset(local: list[str], helsinki: list[str]) -> str:
    """The router between the sites drops what crosses between these two address sets."""
    lines = ["table inet unde_drill_cut {", "  chain forward {", "    type filter hook forward priority -300; policy accept;"]
    for version, keyword in ((4, "ip"), (6, "ip6")):
        a = sorted(x for x in local if ipaddress.ip_address(x).version == version)
        b = sorted(x for x in helsinki if ipaddress.ip_address(x).version == version)
        if a and b:
            lines.append(f"    {keyword} saddr {{ {', '.join(a)} }} {keyword} daddr {{ {', '.join(b)} }} drop")
            lines.append(f"    {keyword} saddr {{ {', '.join(b)} }} {keyword} daddr {{ {', '.join(a)} }} drop")
    return "\n".join([*lines, "  }", "}"]) + "\n"


@contextmanager
def failed(containers: dict[str, Any], inventory: Inventory, failure: scenarios.Failure) -> Iterator[float]:
    """The failure, from the time it happens (yielded) until the block ends; then healed."""
    down = [containers[name] for name in sorted(failure.down) if name in containers]
    inet = _inet(containers)
    if failure.link_cut:
        by_site: dict[str, list[str]] = {}
        for name, container in containers.items():
            by_site.setdefault(inventory.servers[name].site, []).extend(public_addresses(container))
        # The object storage is in Europe: a cut between the sites cuts the local site's archive too.
        ruleset = cut_ruleset(by_site.get(LOCAL, []), by_site.get(HELSINKI, []) + [S3_ADDRESS, S3_ADDRESS6])
    at = time.time()
    try:
        for container in down:
            server_down(container, True)
        if failure.link_cut:
            subprocess.run(["ip", "netns", "exec", inet, "nft", "-f", "-"], input=ruleset, text=True,
                           capture_output=True, check=True, timeout=10)
        yield at
    finally:
        if failure.link_cut:
            subprocess.run(["ip", "netns", "exec", inet, "nft", "delete", "table", "inet", "unde_drill_cut"],
                           capture_output=True, timeout=10)
        for container in down:
            server_down(container, False)


# --------------------------------------------------------------------------------------------
# One drill


def _settle(containers: dict[str, Any], inventory: Inventory) -> None:
    """Every shard led from home with its replica streaming, every etcd member in the quorum."""
    for shard in inventory.shards:
        lead_at_home(containers, shard)
    observer = containers[inventory.etcd[0].host.name]
    deadline = time.monotonic() + 120
    while len(json.loads(sh(observer, f"{ETCDCTL} endpoint status --cluster -w json", timeout=30))) < len(inventory.etcd):
        if time.monotonic() > deadline:
            raise RuntimeError("etcd: not every member answers")
        time.sleep(2)


# pg_rewind of PostgreSQL 17 copies every WAL segment of the new primary (not only those after
# the divergence), across the WAN: on the lab's relay (about 10 MB/s for both shards) a
# rejoin takes minutes once the drills have filled pg_wal (archive_timeout switches a segment
# a minute, wal_keep_size keeps 4 GB). Production copies up to that 4 GB at its link's rate.
REJOIN_TIMEOUT_SECONDS = 600


def rejoined(containers: dict[str, Any], shards: Sequence[Shard], healed: float,
             timeout: float = REJOIN_TIMEOUT_SECONDS) -> dict[int, float | None]:
    """Seconds from the heal until each shard's members are back: one leader, the other streaming."""
    found: dict[int, float | None] = {s.index: None for s in shards}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(v is None for v in found.values()):
        for shard in (s for s in shards if found[s.index] is None):
            try:
                states = member_states(containers, shard)
            except (ValueError, subprocess.TimeoutExpired):
                continue
            roles = [m.get("Role") for m in states.values()]
            if roles.count("Leader") == 1 and any(m.get("State") == "streaming" for m in states.values()):
                found[shard.index] = round(time.time() - healed, 1)
                continue
            nudge_rewound(containers, shard, states)
        time.sleep(2)
    return found


def drill(containers: dict[str, Any], inventory: Inventory, scenario: str, leader: str) -> DrillResult:
    """One failure with the etcd leader on `leader`, both shards under writes."""
    _settle(containers, inventory)
    ids = etcd_members(containers, inventory)
    leader_affinity(containers, inventory, on=False)
    place_etcd_leader(containers, inventory, leader)
    failure = next(f for f in scenarios.failures(inventory, inventory.shards[0]) if f.name == scenario)
    expected = {s.index: scenarios.evaluate(inventory, s, failure if scenario != "shard-down" else
                                            scenarios.Failure("shard-down", frozenset({s.primary.name})),
                                            next(m for m in inventory.etcd if m.member == leader))
                for s in inventory.shards}
    # shard-down: every shard's primary at once (each shard's failure is its own; they share etcd).
    if scenario == "shard-down":
        failure = scenarios.Failure("shard-down", frozenset(s.primary.name for s in inventory.shards))
    net = scenarios.Network(inventory, failure)
    longest = max((o.rto_seconds or 0 for o in expected.values()), default=0)
    watch = max(QUIET_WATCH_SECONDS, longest + 15)
    before = 5.0
    start_writers(containers, inventory, before + watch + 30)
    time.sleep(before)
    with failed(containers, inventory, failure) as at:
        deadline = time.monotonic() + watch
        while time.monotonic() < deadline:
            time.sleep(1)
        ended = time.time()
        seen = etcd_leader_seen_by(containers, inventory, net.alive)
    healed = time.time()
    stop_writers(containers)
    result = DrillResult(scenario, leader, None if seen is None else seen != ids[leader])
    by_ip = {str(s.ip): s for s in inventory.servers.values()}
    rejoin = rejoined(containers, inventory.shards, healed)
    for shard in inventory.shards:
        acks = acks_of(containers, shard)
        during = [a for a in acks if a.at <= ended]
        lost = missing(containers, shard, acks)
        last = next((a for a in reversed(during) if a.at > at), None)
        result.shards[shard.index] = ShardFigures(
            outage_s=write_outage(acks, at, ended), acked=len(acks), lost=len(lost),
            lost_window_s=round(lost[-1].at - lost[0].at, 2) if lost else 0.0,
            two_primaries=two_primaries(during),
            primary_site=by_ip[last.host].site if last and last.host in by_ip else None, rejoin_s=rejoin[shard.index])
        result.problems += disagreements(result.shards[shard.index], expected[shard.index], result.etcd_election)
    return result


def disagreements(measured: ShardFigures, expected: scenarios.Outcome, election: bool | None) -> list[str]:
    """Where the drill and the model's row (this leader position, this durability) differ: the
    model or the timings must change, not the drill."""
    where = f"{expected.scenario}, shard {expected.shard} ({expected.durability}), etcd leader {expected.etcd_leader}"
    found = []
    writable = measured.outage_s is not None
    if writable != expected.writable:
        found.append(f"{where}: writable {writable}, the model says {expected.writable}")
    if writable and expected.rto_seconds is not None and measured.outage_s is not None \
            and measured.outage_s > expected.rto_seconds + SLACK_SECONDS:
        found.append(f"{where}: writes stopped for {measured.outage_s} s; the model says {expected.rto_seconds} s")
    if measured.lost and measured.lost_window_s > expected.max_loss_seconds + SLACK_SECONDS:
        found.append(f"{where}: {measured.lost} acknowledged rows lost over {measured.lost_window_s} s; "
                     f"the model says at most {expected.max_loss_seconds} s")
    if measured.lost and expected.max_loss_seconds == 0:
        found.append(f"{where}: {measured.lost} acknowledged rows lost; the model says none")
    if measured.two_primaries:
        found.append(f"{where}: two members acknowledged writes at the same time")
    if writable and measured.primary_site != expected.primary_site:
        found.append(f"{where}: the shard led from {measured.primary_site}; the model says {expected.primary_site}")
    if election is not None and election != expected.etcd_election:
        found.append(f"{where}: etcd {'elected' if election else 'kept'} its leader; the model says "
                     f"{'an election' if expected.etcd_election else 'no election'}")
    if measured.rejoin_s is None:
        found.append(f"{where}: not both members back (a leader, a streaming replica) within "
                     f"{REJOIN_TIMEOUT_SECONDS} s of the heal")
    return found


def run(containers: dict[str, Any], inventory: Inventory, chosen: list[tuple[str, str]] | None = None,
        say: Callable[[str], None] = print) -> list[DrillResult]:
    """Every scenario with the etcd leader on every member (or the `chosen` pairs)."""
    prepare_clients(containers, inventory)
    pairs = chosen or [(s, m.member) for s in scenarios.SCENARIOS for m in inventory.etcd]
    results = []
    for scenario, leader in pairs:
        started = time.monotonic()
        try:
            result = drill(containers, inventory, scenario, leader)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
            stop_writers(containers)
            result = DrillResult(scenario, leader, None, problems=[f"{scenario}, etcd leader {leader}: {error}"])
        say(line_of(result.as_json()) + f" ({time.monotonic() - started:.0f} s)")
        results.append(result)
    leader_affinity(containers, inventory, on=True)
    return results


def line_of(result: dict[str, Any]) -> str:
    """One drill on one line (from its JSON form, as drills.json keeps it)."""
    shards = "; ".join(
        f"shard {i}: outage {f['outage_s']} s, lost {f['lost']}/{f['acked']}"
        + (f" over {f['lost_window_s']} s" if f["lost"] else "") + f", leads from {f['primary_site']}"
        + (f", rejoin {f['rejoin_s']} s" if f.get("rejoin_s") is not None else "")
        for i, f in result["shards"].items())
    verdict = "agrees" if not result["problems"] else "DISAGREES"
    election = result["etcd_election"]
    return (f"{result['scenario']} (etcd leader {result['etcd_leader']}): {verdict}: {shards}"
            + ("" if election is None else f"; etcd {'elected a new leader' if election else 'kept its leader'}")
            + "".join(f"\n    {problem}" for problem in result["problems"]))


# --------------------------------------------------------------------------------------------
# A WAN hiccup is not a failover


# The bursts every link has: a second, and five, of 100 % loss between the sites; then jitter.
BLACKOUTS_S = (1.0, 5.0)
JITTER_MS = 30.0
JITTER_SECONDS = 60.0
# The worst place for the etcd leader in a burst: the local member, cut off with the primary,
# so that the other side holds an election while the primary's Patroni cannot reach a leader.
HICCUP_ETCD_LEADER = "etcd-1"


def hiccup(containers: dict[str, Any], inventory: Inventory, relay: str, *, blackout_s: float = 0,
           jitter_ms: float = 0, seconds: float = 0, leader: str = HICCUP_ETCD_LEADER) -> DrillResult:
    """Every packet between the sites dropped for `blackout_s` (or `jitter_ms` added for
    `seconds`), with the etcd leader on `leader`: expected, no failover, no lost row, no two
    primaries; measured, each shard's write outage."""
    _settle(containers, inventory)
    ids = etcd_members(containers, inventory)
    leader_affinity(containers, inventory, on=False)
    place_etcd_leader(containers, inventory, leader)
    homes = {s.index: leader_name(containers, s) for s in inventory.shards}
    watch = blackout_s + QUIET_WATCH_SECONDS if blackout_s else seconds
    start_writers(containers, inventory, 5 + watch + 30)
    time.sleep(5)
    at = time.time()
    if blackout_s:
        control(relay, blackout_s=blackout_s)
    else:
        control(relay, jitter_ms=jitter_ms)
    try:
        time.sleep(watch)
    finally:
        control(relay, jitter_ms=0)
    ended = time.time()
    seen = etcd_leader_seen_by(containers, inventory, lambda server: True)
    stop_writers(containers)
    name = f"blackout {blackout_s:g} s" if blackout_s else f"jitter +-{jitter_ms:g} ms for {seconds:g} s"
    result = DrillResult(name, leader, None if seen is None else seen != ids[leader])
    by_ip = {str(s.ip): s for s in inventory.servers.values()}
    for shard in inventory.shards:
        acks = acks_of(containers, shard)
        during = [a for a in acks if a.at <= ended]
        lost = missing(containers, shard, acks)
        last = next((a for a in reversed(during) if a.at > at), None)
        figures = ShardFigures(write_outage(acks, at, ended), len(acks), len(lost),
                               round(lost[-1].at - lost[0].at, 2) if lost else 0.0, two_primaries(during),
                               by_ip[last.host].site if last and last.host in by_ip else None)
        result.shards[shard.index] = figures
        now = leader_name(containers, shard)
        if now != homes[shard.index]:
            result.problems.append(f"{name}: shard {shard.index} failed over from {homes[shard.index]} to {now}")
        if figures.lost:
            result.problems.append(f"{name}: shard {shard.index}: {figures.lost} acknowledged rows lost")
        if figures.two_primaries:
            result.problems.append(f"{name}: shard {shard.index}: two members acknowledged writes at the same time")
    return result


def hiccups(containers: dict[str, Any], inventory: Inventory, relay: str, say: Callable[[str], None] = print,
            cases: list[dict[str, float]] | None = None) -> list[DrillResult]:
    """The bursts and the jitter (or the `cases` given), each as `hiccup` runs it."""
    results = []
    if cases is None:
        cases = [{"blackout_s": b} for b in BLACKOUTS_S] + [{"jitter_ms": JITTER_MS, "seconds": JITTER_SECONDS}]
    for case in cases:
        started = time.monotonic()
        try:
            result = hiccup(containers, inventory, relay, leader=HICCUP_ETCD_LEADER, **case)
        except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as error:
            stop_writers(containers)
            result = DrillResult(f"hiccup {case}", HICCUP_ETCD_LEADER, None, problems=[f"hiccup {case}: {error}"])
        say(line_of(result.as_json()) + f" ({time.monotonic() - started:.0f} s)")
        results.append(result)
    leader_affinity(containers, inventory, on=True)
    return results


def markdown_table(figures: dict[str, Any], inventory: Inventory) -> str:
    """The failure drills of a run (drills.json) beside the model, for the docs."""
    rows = ["| failure | etcd leader | shard | outage s (model) | acked rows lost (model window s) | "
            "two primaries | leads from | rejoin s |", "|---|---|---|---|---|---|---|---|"]
    rows_of = {(o.scenario, o.shard): o for o in scenarios.analyse(inventory)}
    for drilled in figures.get("scenarios", []):
        for index, measured in drilled["shards"].items():
            model = next(o for o in rows_of[(drilled["scenario"], int(index))].by_leader
                         if o.etcd_leader == drilled["etcd_leader"])
            mode = inventory.shards[int(index)].durability
            rows.append(f"| {drilled['scenario']} | {drilled['etcd_leader']} | {index} ({mode}) | "
                        f"{measured['outage_s']} ({model.rto_seconds}) | "
                        f"{measured['lost']} of {measured['acked']}"
                        + (f" over {measured['lost_window_s']} s" if measured["lost"] else "")
                        + f" ({model.max_loss_seconds}) | {'yes' if measured['two_primaries'] else 'no'} | "
                        f"{measured['primary_site']} ({model.primary_site}) | {measured.get('rejoin_s')} |")
    for hiccup in figures.get("hiccups", []):
        for index, measured in hiccup["shards"].items():
            mode = inventory.shards[int(index)].durability
            rows.append(f"| {hiccup['scenario']} | {hiccup['etcd_leader']} | {index} ({mode}) | "
                        f"{measured['outage_s']} (no failover) | {measured['lost']} of {measured['acked']} (0) | "
                        f"{'yes' if measured['two_primaries'] else 'no'} | {measured['primary_site']} | - |")
    return "\n".join(rows)
