"""Durability drills: each failure of SPEC's scenarios, with the etcd leader first moved to the
member that `scenarios` names as the worst position, under continuous writes.

Per drill a writer in local-app's namespace inserts one row at a time and records every id the
database acknowledged; an observer in each database node's namespace records, every 0.2 s,
whether that node is a writable primary. After the failure and the heal (the old primary must
rejoin with no manual step) the drill measures:
  * the RTO: from the failure to the first moment a node other than the old primary is a
    writable primary (or 0 when the old primary never stopped being one);
  * the acknowledged rows lost: acknowledged ids missing on the final primary, and the span of
    time over which they were acknowledged;
  * whether two writable primaries ever existed at once;
and checks all three against `scenarios --json` for the same shard and failure.

The network is the failover drill's flat segment (test_failover_drill.Lab). A link cut is a
partition made with nftables in the switch namespace, shaped like production: local-etcd-1
keeps its direct tunnel to the witness; every other local server loses Helsinki and the witness.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_failover_drill import CLIENT, Drill, Lab, _report, wait_for
from tests.integration.test_failover_drill import lab_factory as lab_factory  # the fixture
from unde_infra import scenarios, timings
from unde_infra.model import HELSINKI, LOCAL, WITNESS, Inventory, load_topology
from unde_infra.render.etcd import EtcdLayout, etcd_member_files

pytestmark = pytest.mark.integration

WRITER = r"""
import sys, time, psycopg2
dsn, out, seconds, next_id = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
end = time.time() + seconds
conn = None
with open(out, "a", buffering=1) as acked:
    while time.time() < end:
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO drill_w (id) VALUES (%s)", (next_id,))
            acked.write("%d %.3f\n" % (next_id, time.time()))
            next_id += 1
            time.sleep(0.02)
        except psycopg2.Error:
            next_id += 1  # an id whose commit is in doubt is never reused
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.2)
"""

OBSERVER = r"""
import sys, time, psycopg2
dsn, out, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
end = time.time() + seconds
with open(out, "a", buffering=1) as log:
    while time.time() < end:
        state = "down"
        try:
            conn = psycopg2.connect(dsn)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                state = "replica" if cur.fetchone()[0] else "primary"
            conn.close()
        except psycopg2.Error:
            pass
        log.write("%.3f %s\n" % (time.time(), state))
        time.sleep(0.2)
"""


@dataclass
class Measured:
    rto_seconds: float
    lost_rows: int
    lost_span_seconds: float
    two_primaries: bool
    acked: int


class DurabilityDrill(Drill):
    def __init__(self, inventory: Inventory, lab: Lab, patroni_bin: str) -> None:
        super().__init__(inventory, inventory.shards[0], lab, patroni_bin)
        self.python = str(Path(patroni_bin).parent / "python3")  # the venv has psycopg2
        self.primary, self.replica = self.shard.primary.name, self.shard.replica.name
        self.etcd_conf = {m.host.name: str(self.lab.base / m.member / "etcd.yml") for m in inventory.etcd}
        self.partitioned = False
        self.drills_run = 0

    # --- etcd -----------------------------------------------------------------------------------
    def etcdctl(self, *args: str, endpoints: str | None = None) -> subprocess.CompletedProcess[str]:
        endpoints = endpoints or ",".join(f"http://{m.host.ip}:2379" for m in self.inventory.etcd)
        return self.lab.exec(self.inventory.etcd[0].host.name, ["etcdctl", f"--endpoints={endpoints}", *args],
                             check=False, env={"ETCDCTL_API": "3"}, timeout=20)

    def etcd_status(self) -> dict[str, tuple[int, int]]:
        """member name -> (member id, leader id), read from each endpoint."""
        found = {}
        for m in self.inventory.etcd:
            out = self.lab.exec(m.host.name, ["etcdctl", f"--endpoints=http://{m.host.ip}:2379", "endpoint", "status",
                                              "-w", "json"], check=False, env={"ETCDCTL_API": "3"}, timeout=10)
            if out.returncode == 0:
                header = json.loads(out.stdout)[0]["Status"]
                found[m.member] = (header["header"]["member_id"], header["leader"])
        return found

    def move_leader(self, member: str) -> None:
        def moved() -> bool:
            status = self.etcd_status()
            if len(status) < len(self.inventory.etcd) or member not in status:
                return False
            target, leader = status[member][0], status[member][1]
            if leader == target:
                return True
            leader_member = next((m for m, (mid, _) in status.items() if mid == leader), None)
            if leader_member is None:
                return False
            host = next(m.host for m in self.inventory.etcd if m.member == leader_member)
            self.etcdctl("move-leader", format(target, "x"), endpoints=f"http://{host.ip}:2379")
            return False

        wait_for(f"etcd leadership on {member}", moved, 60, interval=1)

    def start_etcd_member(self, server: str) -> None:
        self.lab.start(server, "etcd", ["etcd", "--config-file", self.etcd_conf[server]], as_postgres=False)

    # --- network --------------------------------------------------------------------------------
    def link_cut(self) -> None:
        """Production's link cut: the tunnels to helsinki-gw are gone; local-etcd-1 keeps its
        direct tunnel to the witness."""
        inv = self.inventory
        etcd_local = next(m.host.name for m in inv.etcd if m.site == LOCAL)
        local = [s for s in self.lab.node_ns if inv.server(s).site == LOCAL]
        far = [s for s in self.lab.node_ns if inv.server(s).site in (HELSINKI, WITNESS)]
        witness = [s for s in far if inv.server(s).site == WITNESS]
        blocked = [(a, b) for a in local for b in far if not (a == etcd_local and b in witness)]
        rules = ["add table bridge unde", "add chain bridge unde cut { type filter hook forward priority 0; }"]
        for a, b in blocked:
            pa, pb = self.lab.switch_port[a], self.lab.switch_port[b]
            rules += [f"add rule bridge unde cut iifname {pa} oifname {pb} drop",
                      f"add rule bridge unde cut iifname {pb} oifname {pa} drop"]
        self.lab.exec_ns(self.lab.switch, ["nft", "-f", "-"], input_text="\n".join(rules) + "\n")
        self.partitioned = True

    def heal_link(self) -> None:
        self.lab.exec_ns(self.lab.switch, ["nft", "delete", "table", "bridge", "unde"])
        self.partitioned = False

    # --- load and observation -------------------------------------------------------------------
    def start_load(self, seconds: float) -> tuple[Path, dict[str, Path]]:
        base = self.lab.base
        acked = base / f"acked-{time.monotonic_ns()}.log"
        hosts = ",".join(str(self.servers[s].ip) for s in (self.primary, self.replica))
        dsn = (f"host={hosts} port=5432 user=postgres dbname=postgres connect_timeout=2 "
               "target_session_attrs=read-write keepalives_idle=2 keepalives_interval=1 keepalives_count=2")
        env = {"PGPASSWORD": self.secrets.superuser_password}
        self.drills_run += 1  # each drill's ids start in a range of their own
        self.lab.start(CLIENT, "writer", [self.python, "-c", WRITER, dsn, str(acked), str(seconds),
                                          str(self.drills_run * 10_000_000)], env=env, as_postgres=False)
        logs = {}
        for server in (self.primary, self.replica):
            log = base / f"observe-{server}-{time.monotonic_ns()}.log"
            own = f"host={self.servers[server].ip} port=5432 user=postgres dbname=postgres connect_timeout=1"
            self.lab.start(server, "observer", [self.python, "-c", OBSERVER, own, str(log), str(seconds)], env=env,
                           as_postgres=False)
            logs[server] = log
        return acked, logs

    def healthy(self) -> None:
        """The shard as it runs day to day: every etcd member up, the local node primary, the
        Helsinki node streaming from it."""
        wait_for("the replica to stream", lambda: self.is_streaming_to(self.primary, self.replica), 120, interval=1)
        if self.shard.synchronous:
            wait_for("the replica to be the synchronous standby", lambda: self.sync_standby(self.primary) == self.replica,
                     60, interval=1)

    def sync_standby(self, via: str) -> str | None:
        status, text = self.patroni_api(via, "GET", "/cluster", {})
        if status != 200:
            return None
        members = json.loads(text.strip() or "{}").get("members", [])
        return next((m["name"] for m in members if m.get("role") == "sync_standby"), None)

    def switch_home(self) -> None:
        if self.writable(self.primary):
            return
        wait_for("the local node to stream from Helsinki", lambda: self.is_streaming_to(self.replica, self.primary),
                 120, interval=1)
        if self.shard.synchronous:  # Patroni switches over only to the synchronous standby
            wait_for("the local node to be the synchronous standby",
                     lambda: self.sync_standby(self.replica) == self.primary, 60, interval=1)
        status, text = self.patroni_api(self.replica, "POST", "/switchover",
                                        {"leader": self.replica, "candidate": self.primary})
        assert status == 200, f"switchover refused: {status} {text}"
        wait_for("the local node to be primary again", lambda: self.writable(self.primary), 60, interval=0.5)


def _measure(drill: DurabilityDrill, acked_log: Path, observed: dict[str, Path], failed_at: float) -> Measured:
    acked = [(int(i), float(t)) for i, t in (line.split() for line in acked_log.read_text().splitlines() if line)]
    final = next(s for s in (drill.primary, drill.replica) if drill.writable(s))
    present = {int(x) for x in drill.sql(final, "SELECT id FROM drill_w").stdout.split()}
    lost = [(i, t) for i, t in acked if i not in present]
    samples = {s: [(float(t), state) for t, state in (line.split() for line in p.read_text().splitlines() if line)]
               for s, p in observed.items()}
    promoted = [t for t, state in samples[drill.replica] if t >= failed_at and state == "primary"]
    after = [state for t, state in samples[drill.primary] if t >= failed_at]
    # A killed node's observer dies with it: "kept" needs samples, all of them primary.
    if promoted:
        rto = min(promoted) - failed_at
    elif after and all(state == "primary" for state in after):
        rto = 0.0
    else:
        rto = float("inf")
    two = any(
        abs(ta - tb) < 0.2 and sa == sb == "primary"
        for ta, sa in samples[drill.primary] if ta >= failed_at
        for tb, sb in samples[drill.replica] if tb >= failed_at
    )
    span = (max(t for _, t in lost) - min(t for _, t in lost)) if lost else 0.0
    return Measured(round(rto, 1), len(lost), round(span, 1), two, len(acked))


FAILURES: dict[str, tuple[Callable[[DurabilityDrill], None], Callable[[DurabilityDrill], None]]] = {}


def _servers_of(drill: DurabilityDrill, site: str) -> list[str]:
    return [s for s in drill.lab.node_ns if drill.inventory.server(s).site == site and s != CLIENT]


def _kill(drill: DurabilityDrill, servers: list[str]) -> None:
    for server in servers:
        drill.lab.kill_server(server)


def _restart(drill: DurabilityDrill, servers: list[str]) -> None:
    for server in servers:
        if server in drill.etcd_conf:
            drill.start_etcd_member(server)
        if server in (drill.primary, drill.replica):
            drill.start_patroni(server)


def _failure(name: str, drill: DurabilityDrill) -> tuple[Callable[[], None], Callable[[], None]]:
    if name == "shard-down":
        servers = [drill.primary]
    elif name == "local-site-down":
        servers = _servers_of(drill, LOCAL)
    elif name == "helsinki-down":
        servers = _servers_of(drill, HELSINKI)
    elif name == "third-site-down":
        servers = _servers_of(drill, WITNESS)
    else:
        return drill.link_cut, drill.heal_link
    return (lambda: _kill(drill, servers)), (lambda: _restart(drill, servers))


def run_drill(drill: DurabilityDrill, name: str, request: pytest.FixtureRequest,
              leader: str | None = None) -> tuple[Measured, scenarios.Outcome]:
    """The failure with the etcd leader on `leader`, by default where `scenarios` says it hurts most."""
    worst = next(o for o in scenarios.analyse(drill.inventory, [name]) if o.shard == drill.shard.index)
    predicted = worst if leader is None else next(o for o in worst.by_leader if o.etcd_leader == leader)
    drill.switch_home()
    drill.healthy()
    assert predicted.etcd_leader is not None
    drill.move_leader(predicted.etcd_leader)
    # Long enough for the predicted promotion, or for a demotion that `scenarios` says will not come.
    hold = (predicted.rto_seconds or timings.async_loss_window_seconds()) + 8
    acked, observed = drill.start_load(hold + 120)
    time.sleep(3)
    inject, heal = _failure(name, drill)
    failed_at = time.time()
    inject()
    time.sleep(hold)
    heal()
    # The heal: the old primary rejoins as a replica of whoever is primary, with no manual step.
    def rejoined() -> bool:
        return drill.is_streaming_to(drill.primary, drill.replica) or drill.is_streaming_to(drill.replica, drill.primary)

    wait_for(f"the shard to stream again after {name}", rejoined, 150, interval=1)
    time.sleep(2)
    measured = _measure(drill, acked, observed, failed_at)
    _report(request, f"{drill.shard.durability}:{name}@{predicted.etcd_leader}",
            f"rto {measured.rto_seconds} s (bound {predicted.rto_seconds}), lost {measured.lost_rows} of "
            f"{measured.acked} acked over {measured.lost_span_seconds} s (bound {predicted.max_loss_seconds} s), "
            f"two primaries {measured.two_primaries}")
    return measured, predicted


def check(measured: Measured, predicted: scenarios.Outcome) -> None:
    assert not measured.two_primaries and not predicted.two_primaries
    assert predicted.writable
    if predicted.rto_seconds == 0:
        assert measured.rto_seconds == 0, measured
    else:
        assert predicted.rto_seconds is not None and 0 < measured.rto_seconds <= predicted.rto_seconds, measured
    if predicted.max_loss_seconds == 0:
        assert measured.lost_rows == 0, measured
    else:
        assert measured.lost_span_seconds <= predicted.max_loss_seconds, measured


@pytest.fixture
def drill_for(lab_factory: Callable[[str], Lab], deployed_patroni: str) -> Iterator[Callable[[str], DurabilityDrill]]:
    def make(durability: str) -> DurabilityDrill:
        inventory = load_topology(placement="three-sites")
        inventory = dataclasses.replace(
            inventory, shards=tuple(dataclasses.replace(s, durability=durability) for s in inventory.shards))
        drill = DurabilityDrill(inventory, lab_factory(durability[0] + "d"), deployed_patroni)
        drill.bootstrap()
        drill.check_bootstrap()
        created = drill.sql(drill.primary, "CREATE TABLE drill_w (id bigint PRIMARY KEY)")
        assert created.returncode == 0, created.stderr
        return drill

    yield make


DRILLS = ("shard-down", "link-cut", "local-site-down", "helsinki-down", "third-site-down")


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_every_failure_with_the_etcd_leader_in_the_worst_place(durability: str, drill_for, request) -> None:  # type: ignore[no-untyped-def]
    drill = drill_for(durability)
    failures = []
    for name in DRILLS:
        measured, predicted = run_drill(drill, name, request)
        try:
            check(measured, predicted)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, failures
    if durability == "async":
        # The local member's leader affinity brings the leader home ...
        etcd_local = next(m for m in drill.inventory.etcd if m.site == LOCAL)
        drill.move_leader("etcd-3")
        files = etcd_member_files(etcd_local, drill.inventory, EtcdLayout(tools_dir=str(drill.lab.base)))
        script = drill.lab.base / "etcd-leader-affinity"
        for path in (str(script), f"{script}.json"):  # the script and its parameters beside it
            Path(path).write_text(files[path])
        moved = drill.lab.exec(etcd_local.host.name, ["python3", str(script)], check=False, timeout=60)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        wait_for("the leader back on the local member", lambda: drill.etcd_status()[etcd_local.member][1]
                 == drill.etcd_status()[etcd_local.member][0], 20, interval=0.5)
        # ... where a link cut loses nothing: the local member and the witness keep the quorum.
        measured, predicted = run_drill(drill, "link-cut", request, leader=etcd_local.member)
        check(measured, predicted)
        assert predicted.primary_site == LOCAL and measured.lost_rows == 0
