"""Drills at the real distance, on the converge lab's own servers: PostgreSQL 17, pgvector,
Patroni and etcd from Debian 13 as delivered, every cross-site packet through the topology's
tunnels and across the WAN relay (120 ms round trip by default).

Measured, not stated (each figure from the servers, printed and written to drills.json):
- the commit latency of a single-row insert (p50, p99) and the write rate of one connection, in
  asynchronous and in synchronous mode (Patroni's synchronous_mode, switched with patronictl);
- the replication lag (write, flush, replay) at a steady write rate;
- the etcd leader election across the WAN, with the leader at each member in turn.

`python -m lab --drills` runs them after the converge run (the servers must have converged)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unde_infra import timings
from unde_infra.model import Inventory, Shard, load_topology
from unde_infra.render.postgres import layout_for

from .containers import Container, exec_in
from .wan_relay import DEFAULT_DELAY_MS

PSQL = "runuser -u postgres -- psql -X -At -p 5432 -h /var/run/postgresql"
# The application's database on a shard (shard-credentials.env's SHARD<n>_DATABASE).
APP_DATABASE = "unde"
WORKLOAD = "/var/tmp/unde-drill-insert.sql"
DRILL_TABLE = "unde_drill_commits"


@dataclass
class DrillReport:
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def sh(container: Container, script: str, timeout: float = 120) -> str:
    result = container.exec("sh", "-c", script, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{container.host.name}: exit {result.returncode}: {(result.stdout + result.stderr).strip()[-400:]}")
    return result.stdout.strip()


def sql(container: Container, statement: str, timeout: float = 60, database: str = "postgres") -> str:
    return sh(container, f"{PSQL} -d {database} -c \"{statement}\"", timeout=timeout)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# --------------------------------------------------------------------------------------------
# Commit latency, one connection's write rate, replication lag


def _patronictl(shard: Shard, *args: str) -> str:
    layout = layout_for(shard.primary.os)
    return " ".join([layout.patronictl, "-c", layout.patroni_config, *args])


def set_synchronous(primary: Container, shard: Shard, on: bool, timeout: float = 120) -> None:
    """Patroni's synchronous_mode on or off for the shard, and wait until PostgreSQL commits
    that way (pg_stat_replication's sync_state)."""
    # As the program renders a sync shard (render/postgres.cluster_parameters): synchronous_mode,
    # and commits that wait for it (an async shard commits `local`).
    commit = "on" if on else "local"
    sh(primary, _patronictl(shard, "edit-config", "--force", "--set", f"synchronous_mode={'true' if on else 'false'}",
                            "--pg", f"synchronous_commit={commit}", shard.scope))
    wanted = ("sync" if on else "async", commit)
    deadline = time.monotonic() + timeout
    while True:
        state = (sql(primary, "SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication"),
                 sql(primary, "SHOW synchronous_commit"))
        if state == wanted:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{shard.scope}: replication, synchronous_commit are {state}, not {wanted} "
                               f"after {timeout:.0f} s")
        time.sleep(2)


def pgbench(primary: Container, seconds: int, rate: int | None = None) -> list[float]:
    """One connection inserting single rows for `seconds` (at `rate` a second, or as fast as it
    commits): each transaction's latency in ms, from pgbench's per-transaction log."""
    sql(primary, f"CREATE TABLE IF NOT EXISTS {DRILL_TABLE} (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), v int)")
    sh(primary, f"printf 'INSERT INTO {DRILL_TABLE} (v) VALUES (1);\\n' > {WORKLOAD}; chmod 644 {WORKLOAD}; "
                "rm -f /var/tmp/unde-drill-log*")
    rate_args = f"-R {rate} " if rate else ""
    sh(primary, "cd /var/tmp && runuser -u postgres -- $(ls /usr/lib/postgresql/*/bin/pgbench | tail -1) -n -c 1 "
                f"-T {seconds} {rate_args}-f {WORKLOAD} -l --log-prefix=/var/tmp/unde-drill-log "
                "-h /var/run/postgresql postgres >/dev/null", timeout=seconds + 120)
    log = sh(primary, "cat /var/tmp/unde-drill-log*")
    # client_id transaction_no time(us) script_no time_epoch time_us [schedule_lag]
    return [int(line.split()[2]) / 1000 for line in log.splitlines() if line.strip()]


def commit_figures(latencies: list[float], seconds: int) -> dict[str, float]:
    return {"commits": len(latencies), "p50_ms": round(percentile(latencies, 0.50), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2), "mean_ms": round(statistics.fmean(latencies), 2),
            "commits_per_s": round(len(latencies) / seconds, 1)}


def replication_lag(primary: Container, seconds: int, rate: int) -> dict[str, float]:
    """The standby's write, flush and replay lag (pg_stat_replication, ms) sampled every second
    while one connection writes `rate` rows a second."""
    samples: list[tuple[float, float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            row = sql(primary, "SELECT coalesce(extract(epoch FROM write_lag), 0) * 1000, "
                               "coalesce(extract(epoch FROM flush_lag), 0) * 1000, "
                               "coalesce(extract(epoch FROM replay_lag), 0) * 1000 FROM pg_stat_replication")
            if row:
                write, flush, replay = (float(x) for x in row.split("|"))
                samples.append((write, flush, replay))
            time.sleep(1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        pgbench(primary, seconds, rate)
    finally:
        done.set()
        sampler.join(timeout=30)
    steady = samples[2:] or samples  # after the first seconds of the run
    if not steady:
        raise RuntimeError("no replication lag sampled")
    return {f"{name}_lag_{stat}_ms": round(fn([s[i] for s in steady]), 1)
            for i, name in enumerate(("write", "flush", "replay"))
            for stat, fn in (("median", statistics.median), ("max", max))} | {"rows_per_s": rate, "samples": len(steady)}


def durability_drills(containers: dict[str, Container], shard: Shard, seconds: int = 15) -> dict[str, Any]:
    primary = containers[shard.primary.name]
    figures: dict[str, Any] = {}
    set_synchronous(primary, shard, on=False)
    figures["async"] = commit_figures(pgbench(primary, seconds), seconds)
    figures["async"]["replication"] = replication_lag(primary, seconds, rate=50)
    set_synchronous(primary, shard, on=True)
    try:
        figures["sync"] = commit_figures(pgbench(primary, seconds), seconds)
    finally:
        set_synchronous(primary, shard, on=shard.synchronous)
    return figures


# --------------------------------------------------------------------------------------------
# etcd: the leader election across the WAN


ETCDCTL = "ETCDCTL_API=3 etcdctl --endpoints=$(grep -o 'http://[0-9.]*:2379' /etc/etcd/unde-etcd.yml | head -1)"


def etcd_status(container: Container) -> list[dict[str, Any]]:
    return json.loads(sh(container, f"{ETCDCTL} endpoint status --cluster -w json", timeout=30))  # type: ignore[no-any-return]


def etcd_leader(container: Container, timeout: float = 30) -> tuple[int, dict[int, str]]:
    """The leader's member id, once every member names the same one, and each member's id -> its
    client endpoint."""
    deadline = time.monotonic() + timeout
    while True:
        status = etcd_status(container)
        members = {s["Status"]["header"]["member_id"]: s["Endpoint"] for s in status}
        leaders = {s["Status"]["leader"] for s in status}
        if len(leaders) == 1 and len(members) == len(status):
            return leaders.pop(), members
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd members disagree on the leader for {timeout:.0f} s: {leaders}")
        time.sleep(1)


def etcd_election(containers: dict[str, Container], inventory: Inventory, timeout: float = 60) -> dict[str, Any]:
    """For each member in turn: make it the leader (etcdctl move-leader), stop its etcd, and
    time until the other two agree on a new leader; then start it again."""
    hosts = {str(m.host.ip): m.host.name for m in inventory.etcd if m.host.name in containers}
    figures: dict[str, Any] = {}
    for host_ip, name in hosts.items():
        observer = containers[next(n for ip, n in hosts.items() if ip != host_ip)]
        leader, members = etcd_leader(observer)
        target = next(member for member, endpoint in members.items() if host_ip in endpoint)
        if leader != target:
            sh(observer, f"ETCDCTL_API=3 etcdctl --endpoints={members[leader]} move-leader {target:x}", timeout=60)
        deadline = time.monotonic() + 30
        while etcd_leader(observer)[0] != target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd: the leadership did not move to {name}")
            time.sleep(0.5)
        stopped = time.monotonic()
        sh(containers[name], "systemctl kill -s SIGKILL etcd; systemctl stop etcd", timeout=60)
        elected = None
        while time.monotonic() - stopped < timeout:
            try:
                status = json.loads(sh(observer, f"{ETCDCTL} endpoint status -w json", timeout=10))
                new = status[0]["Status"]["leader"]
                if new and new != target:
                    elected = time.monotonic() - stopped
                    break
            except (RuntimeError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.2)
        sh(containers[name], "systemctl start etcd", timeout=120)
        figures[name] = {"election_s": round(elected, 2) if elected is not None else None}
        time.sleep(5)  # it rejoins before the next member is taken down
    return figures


def leader_of(containers: dict[str, Any], shard: Shard) -> str:
    """The member of `shard` that leads now, as Patroni says."""
    node = containers[shard.replica.name]
    members = json.loads(sh(node, _patronictl(shard, "list", "-f", "json", shard.scope)))
    leaders = [m["Member"] for m in members if m.get("Role") == "Leader"]
    if len(leaders) != 1:
        raise RuntimeError(f"{shard.scope}: leaders {leaders}")
    return str(leaders[0])


def lead_at_home(containers: dict[str, Any], shard: Shard, timeout: float = 300) -> None:
    """The drills start as production runs: the shard led from the local site, its replica
    streaming (after the lab's reboots, or a drill, either node may lead; a rewound old primary
    streams only once the new one has written past the rewind)."""
    replica = containers[shard.replica.name]
    deadline = time.monotonic() + timeout
    while True:
        members = {m["Member"]: m for m in json.loads(sh(replica, _patronictl(shard, "list", "-f", "json", shard.scope)))}
        leader = next((name for name, m in members.items() if m.get("Role") == "Leader"), None)
        home = members.get(shard.primary.name, {})
        if leader == shard.primary.name and members.get(shard.replica.name, {}).get("State") == "streaming":
            return
        if leader == shard.replica.name and home.get("State") == "streaming":
            replica.exec("sh", "-c", _patronictl(shard, "switchover", "--leader", shard.replica.name, "--candidate",
                                                 shard.primary.name, "--force", shard.scope), timeout=120)
        elif leader is not None:
            # WAL past the rewind point, so that the rewound member becomes consistent and streams.
            sql(containers[leader], "SELECT pg_switch_wal()")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{shard.scope}: not led from {shard.primary.name} with its replica streaming "
                               f"after {timeout:.0f} s: {members}")
        time.sleep(5)


# --------------------------------------------------------------------------------------------
# SPEC scenario 1: the local primary dies under writes


WRITER = """
import sys, time, psycopg2
env = dict(line.split("=", 1) for line in open("/etc/unde/secrets/shard-credentials.env").read().split())
dsn = (f"host={env['SHARD0_HOST']} port={env['SHARD0_PORT']} dbname={env['SHARD0_DATABASE']} "
       f"user={env['SHARD0_USER']} password={env['SHARD0_PASSWORD']} "
       f"target_session_attrs={env['SHARD0_TARGET_SESSION_ATTRS']} connect_timeout={env['SHARD0_CONNECT_TIMEOUT']} "
       f"tcp_user_timeout={env['SHARD0_TCP_USER_TIMEOUT']} keepalives={env['SHARD0_KEEPALIVES']} "
       f"keepalives_idle={env['SHARD0_KEEPALIVES_IDLE']} keepalives_interval={env['SHARD0_KEEPALIVES_INTERVAL']} "
       f"keepalives_count={env['SHARD0_KEEPALIVES_COUNT']}")
log = open(sys.argv[1], "w", buffering=1)
deadline = time.monotonic() + float(sys.argv[2])
n, conn = 0, None
while time.monotonic() < deadline:
    try:
        if conn is None:
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
        n += 1
        conn.cursor().execute("INSERT INTO unde_drill_acks (id) VALUES (%s)", (n,))
        log.write(f"{time.time():.3f} {n} ok\\n")
        time.sleep(0.02)
    except Exception as error:
        log.write(f"{time.time():.3f} {n} err {type(error).__name__}\\n")
        conn = None
        time.sleep(0.2)
"""
WRITER_PATH = "/var/tmp/unde-drill-writer.py"
WRITER_LOG = "/var/tmp/unde-drill-writer.log"


def _pids_of(leader: int) -> list[int]:
    """Every process of the container whose init is `leader` (its pid namespace)."""
    own = os.readlink(f"/proc/{leader}/ns/pid")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == own:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


# Everything in and out of a server dropped: its addresses and routes stay (a link set down
# would take them), packets to it vanish as they do when a machine dies.
VANISHED = ("table inet unde_drill_down {\n"
            "  chain input { type filter hook input priority -400; policy drop; }\n"
            "  chain output { type filter hook output priority -400; policy drop; }\n}\n")


def server_down(server: Any, down: bool) -> None:
    """The server stops as a dead one does: every process frozen, every packet to and from it
    dropped; and back (thawed, its packets flowing), as after a power cycle that kept its disk."""
    leader = server.pid if hasattr(server, "pid") else server.leader()
    namespace = server.host.namespace
    if down:
        subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=VANISHED, text=True,
                       capture_output=True, check=True)
    for pid in _pids_of(leader):
        try:
            os.kill(pid, signal.SIGSTOP if down else signal.SIGCONT)
        except ProcessLookupError:
            pass
    if not down:
        subprocess.run(["ip", "netns", "exec", namespace, "nft", "delete", "table", "inet", "unde_drill_down"],
                       capture_output=True, check=True)


def primary_dies(containers: dict[str, Any], shard: Shard, before_s: float = 10, after_s: float = 60) -> dict[str, Any]:
    """SPEC scenario 1 under writes from the application's server (local-orchestrator, through
    PgBouncer with target_session_attrs=read-write, as the services connect): the local primary
    dies; measured: the write outage (RTO), acknowledged rows missing on the new primary, whether
    two members ever led at once, and the old primary's rejoin once it is back."""
    client = containers["local-orchestrator"]
    primary, replica = containers[shard.primary.name], containers[shard.replica.name]
    sh(client, "python3 -c 'import psycopg2' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
               "--no-install-recommends python3-psycopg2 >/dev/null", timeout=300)
    sql(primary, "CREATE TABLE IF NOT EXISTS unde_drill_acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now()); "
                 "TRUNCATE unde_drill_acks; GRANT INSERT, SELECT ON unde_drill_acks TO orchestrator",
        database=APP_DATABASE)
    sh(client, f"cat > {WRITER_PATH} <<'EOF'\n{WRITER}\nEOF")
    total = before_s + after_s
    writer = client.exec("sh", "-c", f"nohup python3 {WRITER_PATH} {WRITER_LOG} {total} >/dev/null 2>&1 & echo started")
    assert writer.returncode == 0, writer.stderr
    time.sleep(before_s)
    died = time.time()
    server_down(primary, True)
    leaders_seen: set[tuple[str, ...]] = set()
    promoted = None
    try:
        deadline = time.monotonic() + after_s
        while time.monotonic() < deadline:
            try:
                members = json.loads(sh(replica, _patronictl(shard, "list", "-f", "json", shard.scope), timeout=15))
                leading = tuple(sorted(m["Member"] for m in members if m.get("Role") == "Leader"))
                leaders_seen.add(leading)
                if promoted is None and leading == (shard.replica.name,):
                    promoted = time.time() - died
            except (RuntimeError, ValueError):
                pass
            time.sleep(1)
    finally:
        server_down(primary, False)
    time.sleep(5)
    log = sh(client, f"cat {WRITER_LOG}")
    events = [line.split() for line in log.splitlines() if line.strip()]
    acked = {int(e[1]) for e in events if e[2] == "ok"}
    # The write outage: the gap between the last acknowledged write before the failure and the
    # first one after it.
    oks = sorted(float(e[0]) for e in events if e[2] == "ok")
    outage = max((after - before for before, after in zip(oks, oks[1:], strict=False) if before <= died + 1 and after > died),
                 default=None)
    stored = {int(x) for x in sql(replica, "SELECT id FROM unde_drill_acks", database=APP_DATABASE).split() if x}
    lost = sorted(acked - stored)
    rejoined = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        members = json.loads(sh(replica, _patronictl(shard, "list", "-f", "json", shard.scope), timeout=15))
        old: dict[str, Any] = next((m for m in members if m["Member"] == shard.primary.name), {})
        if old.get("State") == "streaming":
            rejoined = True
            break
        # WAL past the rewind point: the rewound member streams once it is consistent.
        sql(replica, "SELECT pg_switch_wal()")
        time.sleep(3)
    return {"rto_s": round(outage, 1) if outage is not None else None,
            "promoted_after_s": round(promoted, 1) if promoted else None,
            "acked": len(acked), "acked_lost": len(lost), "lost_ids": lost[:20],
            "two_leaders": any(len(group) > 1 for group in leaders_seen),
            "old_primary_streams_again": bool(rejoined),
            "model_rto_s": timings.failover_rto_seconds()}


def run(containers: dict[str, Container], inventory: Inventory, wan_delay_ms: float) -> DrillReport:
    report = DrillReport()
    report.figures["wan_rtt_ms"] = 2 * wan_delay_ms
    shard = inventory.shards[0]
    try:
        lead_at_home(containers, shard)
        report.figures["durability"] = durability_drills(containers, shard)
    except RuntimeError as error:
        report.problems.append(f"durability drills: {error}")
    try:
        lead_at_home(containers, shard)
        report.figures["primary_dies"] = primary_dies(containers, shard)
        lead_at_home(containers, shard)
    except (RuntimeError, ValueError) as error:
        report.problems.append(f"primary failure drill: {error}")
    try:
        report.figures["etcd_election"] = etcd_election(containers, inventory)
    except (RuntimeError, ValueError) as error:
        report.problems.append(f"etcd election drill: {error}")
    report.problems += disagreements(report.figures)
    return report


def disagreements(figures: dict[str, Any]) -> list[str]:
    """Where a drill measured more than the timings the failure model (`scenarios`) assumes: the
    model or the timings must change, not the drill."""
    found = []
    for name, measured in figures.get("etcd_election", {}).items():
        seconds = measured["election_s"]
        if seconds is None or seconds > timings.ETCD_ELECTION_MAX_SECONDS:
            found.append(f"etcd election with the leader on {name} took {seconds} s; the model assumes at most "
                         f"{timings.ETCD_ELECTION_MAX_SECONDS:g} s (timings.ETCD_ELECTION_MAX_SECONDS)")
    failure = figures.get("primary_dies")
    if failure:
        if failure["rto_s"] is None or failure["rto_s"] > failure["model_rto_s"]:
            found.append(f"writes stopped for {failure['rto_s']} s when the primary died; the model says "
                         f"{failure['model_rto_s']} s (timings.failover_rto_seconds)")
        if failure["two_leaders"]:
            found.append("two members led at once")
        if not failure["old_primary_streams_again"]:
            found.append("the old primary did not stream again within 3 minutes of coming back")
    lag = figures.get("durability", {}).get("async", {}).get("replication")
    if lag and lag["replay_lag_max_ms"] > timings.REPLICATION_LAG_SECONDS * 1000:
        found.append(f"replication lag reached {lag['replay_lag_max_ms']} ms; the model assumes "
                     f"{timings.REPLICATION_LAG_SECONDS} s (timings.REPLICATION_LAG_SECONDS)")
    return found


def summary(report: DrillReport) -> list[str]:
    lines = [f"drills at {report.figures.get('wan_rtt_ms', 0):g} ms RTT:"]
    durability = report.figures.get("durability", {})
    for mode in ("async", "sync"):
        figures = durability.get(mode)
        if figures:
            lines.append(f"  {mode}: single-row commit p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms; "
                         f"one connection {figures['commits_per_s']} commits/s")
    lag = durability.get("async", {}).get("replication")
    if lag:
        lines.append(f"  replication at {lag['rows_per_s']} rows/s: replay lag median {lag['replay_lag_median_ms']} ms, "
                     f"max {lag['replay_lag_max_ms']} ms (write {lag['write_lag_median_ms']}, flush {lag['flush_lag_median_ms']})")
    for name, figures in report.figures.get("etcd_election", {}).items():
        lines.append(f"  etcd: leader on {name} killed, new leader after {figures['election_s']} s")
    lines += [f"  PROBLEM {p}" for p in report.problems]
    return [re.sub(r"\s+$", "", line) for line in lines]


# --------------------------------------------------------------------------------------------
# A lab left running (`python -m lab --keep`): the drills again, without building it again


@dataclass
class KeptHost:
    name: str
    namespace: str = ""


@dataclass
class Kept:
    """A server of a lab left running, found by its systemd-nspawn process."""

    host: KeptHost
    pid: int

    def exec(self, *command: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return exec_in(self.pid, *command, timeout=timeout, stdin=stdin)


def kept_servers(run_dir: str) -> dict[str, Kept]:
    found = {}
    listing = subprocess.run(["pgrep", "-af", "systemd-nspawn --boot"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        match = re.search(rf" -D {re.escape(run_dir)}/servers/([^/]+)/root ", line)
        namespace = re.search(r"--network-namespace-path=/run/netns/(\S+)", line)
        if match:
            nspawn = int(line.split()[0])
            children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
            if children:
                host = KeptHost(match.group(1), namespace.group(1) if namespace else "")
                found[match.group(1)] = Kept(host, int(children[0]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.drills", description="the drills, on a lab left running")
    parser.add_argument("--run-dir", default="/var/tmp/unde-lab/run")
    parser.add_argument("--wan-delay-ms", type=float, default=DEFAULT_DELAY_MS, help="the relay's, as the lab runs it")
    args = parser.parse_args()
    servers = kept_servers(args.run_dir)
    if not servers:
        print(f"no lab running from {args.run_dir} (`python -m lab --keep` leaves one)")
        return 2
    report = run(servers, load_topology(), args.wan_delay_ms)  # type: ignore[arg-type]
    for line in summary(report):
        print(line)
    print(json.dumps(report.figures, indent=1))
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
