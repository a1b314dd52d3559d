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
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unde_infra import timings
from unde_infra.model import Inventory, load_topology

from . import failover_drills
from .cluster import ETCDCTL, etcd_leader, lead_at_home, sh, sql
from .containers import Container, exec_in
from .wan_relay import DEFAULT_DELAY_MS

WORKLOAD = "/var/tmp/unde-drill-insert.sql"
DRILL_TABLE = "unde_drill_commits"


@dataclass
class DrillReport:
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    agreeing: int = 0  # failure drills that agree with `scenarios`
    drilled: int = 0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# --------------------------------------------------------------------------------------------
# Commit latency, one connection's write rate, replication lag


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


def durability_drills(containers: dict[str, Container], inventory: Inventory, seconds: int = 15) -> dict[str, Any]:
    """Each durability mode on a shard the program renders that way (the lab has one of each):
    one connection's single-row commits, and the async shard's replication lag at a steady rate."""
    figures: dict[str, Any] = {}
    for shard in inventory.shards:
        if shard.durability in figures:
            continue
        primary = containers[shard.primary.name]
        figures[shard.durability] = commit_figures(pgbench(primary, seconds), seconds) | {"shard": shard.index}
        if not shard.synchronous:
            figures[shard.durability]["replication"] = replication_lag(primary, seconds, rate=50)
    return figures


# --------------------------------------------------------------------------------------------
# etcd: the leader election across the WAN


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


# make test's drills: the whole matrix (`make drills`) takes about an hour on the 2-core machine,
# most of it the rejoins (pg_rewind copies the new primary's pg_wal across the relay). One
# failover with its rejoin, the sync shard's wait for a vanished replica after an etcd election
# (the model's change), and the two bursts.
SHORT_FAILURES = [("shard-down", "etcd-1"), ("helsinki-down", "etcd-3")]
SHORT_HICCUPS = [{"blackout_s": b} for b in failover_drills.BLACKOUTS_S]


def run(containers: dict[str, Any], inventory: Inventory, wan_delay_ms: float, relay: str | None,
        say: Callable[[str], None] = print, chosen: list[tuple[str, str]] | None = None,
        basics: bool = True, hiccups: list[dict[str, float]] | None = None) -> DrillReport:
    """Every drill, in the order that leaves the lab as it found it: the commit costs and the
    replication lag, the etcd elections, every failure scenario with the etcd leader on each
    member, and the WAN hiccups (through the relay's control socket `relay`)."""
    report = DrillReport()
    report.figures["wan_rtt_ms"] = 2 * wan_delay_ms
    if basics:
        try:
            for shard in inventory.shards:
                lead_at_home(containers, shard)
            report.figures["durability"] = durability_drills(containers, inventory)
        except RuntimeError as error:
            report.problems.append(f"durability drills: {error}")
        try:
            failover_drills.leader_affinity(containers, inventory, on=False)
            report.figures["etcd_election"] = etcd_election(containers, inventory)
        except (RuntimeError, ValueError) as error:
            report.problems.append(f"etcd election drill: {error}")
        finally:
            failover_drills.leader_affinity(containers, inventory, on=True)
        report.problems += disagreements(report.figures)
    results = failover_drills.run(containers, inventory, chosen, say=say)
    report.figures["scenarios"] = [r.as_json() for r in results]
    report.problems += [p for r in results for p in r.problems]
    report.agreeing = sum(1 for r in results if not r.problems)
    report.drilled = len(results)
    if relay:
        bursts = failover_drills.hiccups(containers, inventory, relay, say=say, cases=hiccups)
        report.figures["hiccups"] = [r.as_json() for r in bursts]
        report.problems += [p for r in bursts for p in r.problems]
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
    lag = figures.get("durability", {}).get("async", {}).get("replication")
    if lag and lag["replay_lag_max_ms"] > timings.REPLICATION_LAG_SECONDS * 1000:
        found.append(f"replication lag reached {lag['replay_lag_max_ms']} ms; the model assumes "
                     f"{timings.REPLICATION_LAG_SECONDS} s (timings.REPLICATION_LAG_SECONDS)")
    return found


def summary(report: DrillReport) -> list[str]:
    """The figures at a glance; the last line says how many failure drills agree with `scenarios`."""
    lines = [f"drills at {report.figures.get('wan_rtt_ms', 0):g} ms RTT:"]
    durability = report.figures.get("durability", {})
    for mode in ("async", "sync"):
        figures = durability.get(mode)
        if figures:
            lines.append(f"  {mode} (shard {figures['shard']}): single-row commit p50 {figures['p50_ms']} ms, "
                         f"p99 {figures['p99_ms']} ms; one connection {figures['commits_per_s']} commits/s")
    lag = durability.get("async", {}).get("replication")
    if lag:
        lines.append(f"  replication at {lag['rows_per_s']} rows/s: replay lag median {lag['replay_lag_median_ms']} ms, "
                     f"max {lag['replay_lag_max_ms']} ms (write {lag['write_lag_median_ms']}, flush {lag['flush_lag_median_ms']})")
    for name, figures in report.figures.get("etcd_election", {}).items():
        lines.append(f"  etcd: leader on {name} killed, new leader after {figures['election_s']} s")
    for kind in ("scenarios", "hiccups"):
        for result in report.figures.get(kind, []):
            lines.append("  " + failover_drills.line_of(result))
    lines += [f"  PROBLEM {p}" for p in report.problems]
    lines.append(f"drills: {report.agreeing} of {report.drilled} failure drills agree with `unde-infra scenarios`")
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
    parser.add_argument("--only", action="append", default=[], metavar="SCENARIO:ETCD_MEMBER",
                        help="this failure drill alone (repeatable), e.g. link-cut:etcd-3; 'none' for none")
    parser.add_argument("--no-hiccups", action="store_true")
    parser.add_argument("--failures-only", action="store_true", help="skip the durability and election drills")
    parser.add_argument("--table", metavar="DRILLS_JSON", help="print a run's failure drills as a Markdown table, and stop")
    args = parser.parse_args()
    inventory = load_topology(Path(args.run_dir) / "topology.yaml")
    if args.table:
        print(failover_drills.markdown_table(json.loads(Path(args.table).read_text()), inventory))
        return 0
    servers = kept_servers(args.run_dir)
    if not servers:
        print(f"no lab running from {args.run_dir} (`python -m lab --keep` leaves one)")
        return 2
    from .converge import serve_archive_proxies

    serve_archive_proxies()  # the kept lab's proxy ended with the run that built it
    chosen = [tuple(o.split(":", 1)) for o in args.only if o != "none"] or None
    if args.only == ["none"]:
        chosen = []
    relay = None if args.no_hiccups else str(Path(args.run_dir) / "wan.sock")
    report = run(servers, inventory, args.wan_delay_ms, relay, chosen=chosen,  # type: ignore[arg-type]
                 basics=not args.failures_only)
    for line in summary(report):
        print(line)
    (Path(args.run_dir) / "drills.json").write_text(json.dumps(report.figures, indent=1))
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
