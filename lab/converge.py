"""`make converge`: build the default topology's servers for real and report.

Steps: preview both stacks offline (with the lab operator's key as the admin key); build or
reuse the releases' roots; lay the networks; boot every server from its user data; deliver
the helsinki stack, then the local stack, as the deploy pipeline runs them; check each role as
an operator would; deliver everything again and count what changed; reboot; change one file
and deliver what pulumi would run again. The last line printed is the summary; the exit status
is non-zero on any failed command or check."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from unde_infra import ops
from unde_infra.preview import OFFLINE_ENTRY_SETTINGS
from unde_infra.render import patroni
from unde_infra.render.app_secrets import MEK_PRESENCE_METRIC

from . import apt_proxy, drills, health, netns, roots, wan_relay
from .containers import Container, cgroup_hierarchies
from .delivery import DeliveryRun, Operator, Outcome, changed, deliver, failure_lines, per_server, state_of
from .network import PREFIX, PROXY4, PROXY6, PROXY_NAME, PROXY_PORT, S3_ADDRESS, S3_ADDRESS6, LabNetwork
from .s3 import S3StandIn, write_ca
from .servers import LabPreview, lab_topology, run_preview
from .wan_relay import DEFAULT_DELAY_MS

CACHE = Path("/var/tmp/unde-lab")
# Where a role cannot converge here, and why: each such command's failure is reported as a stop
# (with its reason), not as a problem, as long as its reason is the one named here.
KNOWN_STOPS = {
    "monitoring:apply": (r"apt\.grafana\.com",
                         "Grafana comes from Grafana's own apt repository, which the lab cannot reach (the setup "
                         "configures Prometheus and Alertmanager first)"),
    "production-db:apply:base": (r"Release file|Could not connect|unreachable",
                                 "production-db is a dedicated server with no public address in the topology, and "
                                 "the program gives it no route beyond the private network: nothing leads it to the "
                                 "archive (its egress needs a decision: Robot's own uplink or the gateway's NAT)"),
    "posthog:apply:posthog": (r"github\.com|docker",
                              "PostHog's ClickHouse configuration comes from GitHub and its images from Docker Hub "
                              "and ghcr.io, which the lab cannot reach (Docker Engine from Debian installs and starts)"),
}
OPERATOR_ADDRESS = "198.51.100.10"  # inside the stacks' adminCidrs (198.51.100.0/24)


@dataclass
class Lab:
    run_dir: Path
    preview: LabPreview
    network: LabNetwork
    operator: Operator
    admin_key: str
    containers: dict[str, Container] = field(default_factory=dict)
    booted: dict[str, float] = field(default_factory=dict)  # seconds from the lab's first boot to sshd
    boot_started: float = 0.0
    host_proxy: str = ""  # the archive proxy as this machine reaches it
    proxies: list[object] = field(default_factory=list)
    stand_ins: list[S3StandIn] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    # The distance between the sites, each way (0: none); SPEC's round trip is 120 ms.
    wan_delay_ms: float = DEFAULT_DELAY_MS

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log.append(line)
        print(line, flush=True)


def _keypair(run_dir: Path) -> tuple[Path, str]:
    key = run_dir / "operator_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "unde-lab-operator", "-f", str(key)], check=True)
    return key, (run_dir / "operator_ed25519.pub").read_text().strip()


def _proxy_in(namespace: str | None, host: str, port: int) -> tuple[object, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if namespace:
        with netns.entered(namespace):
            sock = socket.socket(family, socket.SOCK_STREAM)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(256)
    server = apt_proxy.serve(sock, CACHE / "apt-proxy")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, sock.getsockname()[1]


def serve_archive_proxies(inet: str = f"{PREFIX}-inet") -> list[object]:
    """The archive proxy where the servers' apt looks for it, on the lab's internet."""
    return [_proxy_in(inet, address, PROXY_PORT)[0] for address in (PROXY4, PROXY6)]


def build_lab(run_dir: Path, config_overrides: dict[str, object] | None = None,
              wan_delay_ms: float = DEFAULT_DELAY_MS) -> Lab:
    run_dir.mkdir(parents=True, exist_ok=True)
    key, public = _keypair(run_dir)
    preview = run_preview(public, lab_topology(run_dir), config_overrides)
    network = LabNetwork(preview.hosts, preview.networks, OPERATOR_ADDRESS)
    lab = Lab(run_dir, preview, network, Operator(network.operator, key), public, wan_delay_ms=wan_delay_ms)
    return lab


def start(lab: Lab) -> None:
    lab.say(f"network: {len(lab.preview.hosts)} servers, hubs {[n.hub for n in lab.preview.networks]} + inet")
    lab.network.up()
    if lab.wan_delay_ms:
        lab.network.start_wan(lab.run_dir, lab.wan_delay_ms)
        lab.say(f"WAN: {lab.wan_delay_ms:g} ms each way between the local site and the others (lab/wan_relay.py)")
    host_proxy, host_port = _proxy_in(None, "127.0.0.1", 0)
    lab.proxies.append(host_proxy)
    lab.host_proxy = f"http://127.0.0.1:{host_port}"
    lab.proxies += serve_archive_proxies(lab.network.inet)
    ca = lab_ca()
    endpoint = lab.preview.inventory.object_storage.endpoint
    s3 = S3StandIn(lab.network.inet, [S3_ADDRESS, S3_ADDRESS6], [endpoint], list(lab.preview.inventory.object_storage.buckets),
                   lab.run_dir / "s3", ca)
    s3.start()
    lab.stand_ins.append(s3)
    images = sorted({h.image for h in lab.preview.hosts})
    built = {}
    for image in images:
        started = time.monotonic()
        built[image] = build_root(image, host_port, endpoint, lab.run_dir / "roots.log")
        lab.say(f"root {image}: {built[image].path.name} ({time.monotonic() - started:.0f} s)")
    for host in lab.preview.hosts:
        container = Container(host, built[host.image], lab.run_dir / "servers" / host.name, lab.admin_key)
        lab.containers[host.name] = container


def stop(lab: Lab) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda c: c.stop(timeout=60), lab.containers.values()))
    for container in lab.containers.values():
        container.remove_disk()
    for proxy in lab.proxies:
        proxy.shutdown()  # type: ignore[attr-defined]
    for stand_in in lab.stand_ins:
        stand_in.stop()
    lab.network.down()


def build_root(image: str, host_port: int, endpoint: str, log: Path) -> roots.Root:
    """The release's root as the lab's servers use it (built once, then kept), through the
    archive proxy the host reaches on `host_port`."""
    # The endpoint on IPv6 too: local-shard-0 has no IPv4 (whether Hetzner's endpoint answers on
    # IPv6 is the real network's question; the lab assumes it does).
    hosts_lines = (f"{PROXY4} {PROXY_NAME}\n{PROXY6} {PROXY_NAME}\n{S3_ADDRESS} {endpoint}\n"
                   f"{S3_ADDRESS6} {endpoint}\n")
    return roots.build(image, CACHE / "roots", f"http://127.0.0.1:{host_port}", f"http://{PROXY_NAME}:{PROXY_PORT}",
                       hosts_lines, lab_ca()[0], log)


def lab_ca() -> tuple[Path, Path]:
    """The lab's CA, made once and kept: the roots trust it, so a new one builds new roots."""
    directory = CACHE / "ca"
    if not (directory / "ca.pem").exists():
        write_ca(directory, "unde-infra converge lab CA", days=3650)
    return directory / "ca.pem", directory / "ca.key"


# Checks the lab cannot make, and why (reported with the known stops).
KNOWN_CHECK_STOPS = {
    "nginx TLS handshake for the entry name (local-app, standby-api)":
        "the certificate comes from Let's Encrypt (HTTP-01 or DNS-01), which the lab cannot reach; the "
        "entry serves port 80 (the challenge and the redirect) until it has one, and that is checked",
}
# What an adopted server of these tasks runs today, before the program touches it (installed in
# its disk before its first boot, with no service started).
ADOPTED_RUNNING = {"staging-db": ("postgresql",), "catalog-db": ("postgresql",), "batch-redis": ("redis-server",)}
# Thirty systemd instances need more inotify instances than a host's default 128 per user
# ("Too many open files" in the containers' units otherwise).
HOST_SYSCTLS = {"fs.inotify.max_user_instances": "8192", "fs.inotify.max_user_watches": "1048576"}


def boot_all(lab: Lab, names: list[str] | None = None) -> dict[str, float]:
    """Boots the servers (all at once, as a `pulumi up` creates them) and waits until each one's
    sshd listens, as the delivery would (cloud-init goes on meanwhile); seconds from start, per
    server."""
    for key, value in HOST_SYSCTLS.items():
        netns.run(["sysctl", "-q", "-w", f"{key}={value}"])
    chosen = [lab.containers[n] for n in (names if names is not None else list(lab.containers))]
    started = time.monotonic()
    for container in chosen:
        if container.process is None or container.process.poll() is not None:
            if container.boots == 0:
                container.prepare()
                running = ADOPTED_RUNNING.get(lab.preview.inventory.servers[container.host.name].task)
                if container.host.user_data is None and running:
                    lab.say(f"{container.host.name}: adopted, runs {' '.join(running)} today")
                    container.install_offline(running, lab.host_proxy)
            container.boot()

    def wait(container: Container) -> tuple[str, bool, float]:
        up = container.wait_sshd()
        return container.host.name, up, time.monotonic() - started

    booted = {}
    with ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
        for name, up, seconds in pool.map(wait, chosen):
            booted[name] = seconds
            if not up:
                lab.say(f"BOOT {name}: no sshd after {seconds:.0f} s (console: {lab.containers[name].console})")
    return booted


def settle(lab: Lab) -> dict[str, str]:
    """Waits for every server to finish booting (cloud-init included); the states."""
    with ThreadPoolExecutor(max_workers=len(lab.containers) or 1) as pool:
        return dict(zip(lab.containers, pool.map(lambda c: c.wait_booted(), lab.containers.values()), strict=True))


def deliver_stacks(lab: Lab, only: set[str] | None = None, boot: bool = False) -> dict[str, DeliveryRun]:
    """Each stack's delivery, helsinki then local as the deploy pipeline runs them. With `boot`,
    a stack's new servers boot as its `pulumi up` creates them (the adopted ones run already):
    the local stack's servers come up after helsinki's gateway carries their traffic."""
    runs = {}
    for stack, commands in lab.preview.plans:
        if boot:
            names = [h.name for h in lab.preview.hosts if h.stack in ("", stack) and lab.containers[h.name].boots == 0]
            booted = boot_all(lab, names)
            lab.booted.update(booted)
            lab.say(f"{stack}: {len(booted)} servers up (sshd), slowest {max(booted.values(), default=0):.0f} s")
        chosen = commands if only is None else [c for c in commands if c.urn in only]
        lab.say(f"deliver {stack}: {len(chosen)} commands")
        run = deliver(commands, lab.operator, None if only is None else [c.urn for c in chosen])
        runs[stack] = run
        worst = max(run.peak.items(), key=lambda item: item[1], default=("-", 0))
        lab.say(f"deliver {stack}: {len(run.ran())} ran, {len(run.failed)} failed, {len(run.skipped)} skipped in "
                f"{run.seconds:.0f} s; most at once to one endpoint {worst[1]} ({worst[0]})")
        for line in failure_lines(run):
            if not line.startswith("SKIPPED"):
                lab.say(f"  {line}")
    return runs


def clean(run_dir: Path, prefix: str = PREFIX) -> None:
    """What an earlier run left (one stopped by force): its containers, disks, namespaces and
    its WAN relay."""
    netns.run(["pkill", "-f", f"lab.wan_relay --namespace {prefix}-"], check=False)
    for pid in netns.run(["pgrep", "-f", f"systemd-nspawn --boot .* -D {run_dir}/"], check=False).stdout.split():
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    time.sleep(1)
    servers = run_dir / "servers"
    if servers.is_dir():
        for server in servers.iterdir():
            if (server / "root").is_mount():
                netns.run(["umount", "-l", str(server / "root")], check=False)
        shutil.rmtree(servers, ignore_errors=True)
    for hierarchy in cgroup_hierarchies():
        groups = sorted((hierarchy / "unde-lab").glob("**/"), key=lambda g: len(g.parts), reverse=True)
        for group in groups:
            try:
                group.rmdir()
            except OSError:
                pass
    for name in netns.run(["ip", "netns", "list"], check=False).stdout.split("\n"):
        name = name.split(" ")[0]
        if name.startswith(prefix + "-"):
            netns.delete(name)


def is_known_stop(outcome: Outcome) -> bool:
    known = KNOWN_STOPS.get(outcome.name)
    return known is not None and re.search(known[0], outcome.reason) is not None


def known_stops(runs: dict[str, DeliveryRun]) -> list[str]:
    return [f"{o.server}: {o.name}: {KNOWN_STOPS[o.name][1]} ({o.reason[-200:]})"
            for r in runs.values() for o in r.failed if is_known_stop(o)]


def role_probes(lab: Lab) -> dict[str, dict[str, health.Probe]]:
    """What to check on each server, by its role in the topology."""
    inventory = lab.preview.inventory
    local = next(r for r in lab.preview.results if r.run.stack == "local")
    # The entry's name as the local stack exports it (its DNS record).
    entry = str(local.run.plain_outputs().get("entryRecord") or OFFLINE_ENTRY_SETTINGS["entryDomain"])
    secrets = [c.stdin or "" for _, commands in lab.preview.plans for c in commands]
    etcd_hosts = {m.host.name for m in inventory.etcd}
    probes: dict[str, dict[str, health.Probe]] = {}
    for name in lab.containers:
        server = inventory.servers[name]
        chosen = dict(health.every_server())
        if server.task == "shard":
            shard = next(s for s in inventory.shards if s.primary.name == name)
            chosen.update(health.shard_primary(str(shard.primary.ip), str(shard.replica.ip), shard.synchronous))
        elif server.task == "shard-replica":
            chosen.update(health.shard_replica())
        if name in etcd_hosts:
            chosen.update(health.etcd_member())
        if server.task == "redis":
            acl = next((c.stdin or "" for _, cs in lab.preview.plans for c in cs
                        if c.server == name and c.name.endswith("users.acl")), "")
            chosen.update(health.redis_acl(health.redis_passwords(acl, secrets)))
        if server.task in ("api", "standby-api"):
            # The TLS handshake needs the entry's certificate, from Let's Encrypt, which the lab
            # cannot reach (KNOWN_CHECK_STOPS): port 80's part is checked instead.
            chosen.update(health.entry_http(entry))
        if server.task in ("monitoring", "monitoring-local"):
            chosen.update(health.prometheus(f"{server.ip}:9090"))
            chosen.update(health.alertmanager(f"{server.ip}:9093"))
        if server.tunnel is not None:
            chosen.update(health.wireguard(server.tunnel.interface))
        if server.task == "gateway":
            for _, tunnel in inventory.tunnels():
                chosen.update(health.wireguard(tunnel.interface))
        probes[name] = chosen
    return probes


# What a shard node checks only while it holds the role it was built with: both nodes reboot at
# once, and whichever Patroni elects first leads afterwards (any order is healthy).
ROLE_BOUND_CHECKS = ("pgvector: HNSW index answers a nearest-neighbour query", "replication flows through the tunnel",
                     "PostgreSQL 17 in recovery (hot standby)", "pgvector table replicated",
                     "pgBackRest check (the S3 stand-in)")


def after_reboot_probes(chosen: dict[str, health.Probe]) -> dict[str, health.Probe]:
    return {name: probe for name, probe in chosen.items() if name not in ROLE_BOUND_CHECKS}


def check_all(lab: Lab, probes: dict[str, dict[str, health.Probe]]) -> list[health.Check]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = pool.map(lambda name: health.run_checks(lab.containers[name], probes[name]), probes)
        checks = [c for batch in found for c in batch]
    for check in checks:
        if not check.ok:
            lab.say(f"  CHECK FAILED {check.server}: {check.name}: {check.detail}")
    lab.say(f"checks: {sum(c.ok for c in checks)} of {len(checks)} passed")
    return checks


# How far the measured round trip through a tunnel may be from the relay's: WireGuard and the
# relay's own work, on a machine busy with 31 servers.
WAN_TOLERANCE_MS = 10.0


def wan_paths(lab: Lab) -> list[tuple[str, str, str]]:
    """(from, to, its private address): the cross-site paths the data takes, each through its own
    tunnel: every shard's replication, and the local etcd member's witness tunnel."""
    inventory = lab.preview.inventory
    paths = [(s.primary.name, s.replica.name, str(s.replica.ip)) for s in inventory.shards]
    witness = next((s for s in inventory.servers.values() if s.site == "witness"), None)
    local_etcd = next((m.host for m in inventory.etcd if m.host.site == "local"), None)
    if witness is not None and local_etcd is not None:
        paths.append((local_etcd.name, witness.name, str(witness.ip)))
    return [p for p in paths if p[0] in lab.containers and p[1] in lab.containers]


def measure_wan(lab: Lab) -> tuple[dict[str, object], list[str]]:
    """The round trip of each cross-site path (ping through its tunnel), and the problems: a
    path that does not cross the WAN at its distance."""
    figures: dict[str, object] = {}
    problems = []
    for source, target, address in wan_paths(lab):
        result = lab.containers[source].exec("ping", "-n", "-c", "20", "-i", "0.1", "-W", "2", address, timeout=60)
        rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", result.stdout))
        median = rtts[len(rtts) // 2] if rtts else None
        figures[f"{source} -> {target}"] = {"replies": len(rtts), "median_ms": median,
                                            "min_ms": rtts[0] if rtts else None, "max_ms": rtts[-1] if rtts else None}
        lab.say(f"WAN: {source} -> {target} ({address}, through its tunnel): {len(rtts)}/20 replies, "
                f"median {median} ms")
        expected = 2 * lab.wan_delay_ms
        if median is None or abs(median - expected) > WAN_TOLERANCE_MS:
            problems.append(f"{source}: the round trip to {target} is {median} ms, not {expected:g} +- {WAN_TOLERANCE_MS:g}")
    if lab.network.wan_control:
        figures["relay"] = wan_relay.control(lab.network.wan_control)
    return figures, problems


def snapshot(lab: Lab) -> dict[str, dict[str, str]]:
    """Per server: each delivered file's inode and mtime, and each running service's
    invocation (a restart makes a new one; a reload does not)."""
    files: dict[str, list[str]] = {}
    for _, commands in lab.preview.plans:
        for command in commands:
            path = command.name.partition(":")[2]
            if path.startswith("/"):
                files.setdefault(command.server, []).append(path)
    script = ("for f in \"$@\"; do stat -c 'file %n %i %Y' \"$f\" 2>/dev/null; done; "
              "for u in $(systemctl list-units --type=service --state=running --no-legend --plain | awk '{print $1}'); do "
              "echo \"unit $u $(systemctl show -p InvocationID --value $u)\"; done")

    def one(name: str) -> tuple[str, dict[str, str]]:
        out = lab.containers[name].exec("sh", "-c", script, "snapshot", *sorted(set(files.get(name, []))), timeout=120).stdout
        entries = {}
        for line in out.splitlines():
            kind, key, *rest = line.split(" ")
            entries[f"{kind} {key}"] = " ".join(rest)
        return name, entries

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, lab.containers))


def changes(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    found = []
    for server, entries in before.items():
        for key, value in entries.items():
            now = after.get(server, {}).get(key)
            if now is not None and now != value:
                found.append(f"{server}: {key} {'rewritten' if key.startswith('file') else 'restarted'}")
    return sorted(found)


def reboot_all(lab: Lab) -> dict[str, float]:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(lab.containers)) as pool:
        list(pool.map(lambda c: c.reboot(), lab.containers.values()))
    booted = {}
    with ThreadPoolExecutor(max_workers=len(lab.containers)) as pool:
        for name, up in zip(lab.containers, pool.map(lambda c: c.wait_sshd(), lab.containers.values()), strict=True):
            booted[name] = time.monotonic() - started
            if not up:
                lab.say(f"REBOOT {name}: no sshd after {booted[name]:.0f} s")
    return booted


def mek_present(lab: Lab, name: str) -> str:
    """The key-presence metric as node_exporter serves it (1: the key is in RAM)."""
    container = lab.containers[name]
    container.exec("systemctl", "start", "unde-mek-presence.service", timeout=60)
    metrics = container.exec("sh", "-c", "curl -fsS --max-time 10 http://127.0.0.1:9100/metrics", timeout=30).stdout
    values = [line.split()[-1] for line in metrics.splitlines() if line.startswith(MEK_PRESENCE_METRIC + " ")]
    return values[0] if values else "absent"


def redeliver_mek(lab: Lab) -> dict[str, tuple[str, str]]:
    """After the reboots: the key-presence metric on each key holder, `ops redeliver-mek`'s
    re-delivery (its `pulumi up --target-replace` runs the key's delivery command again), and the
    metric after it."""
    inventory = lab.preview.inventory
    holders = [s.name for s in ops.mek_servers(inventory) if s.name in lab.containers]
    before = {name: mek_present(lab, name) for name in holders}
    urns = {ops.mek_urn(inventory.servers[name]) for name in holders}
    for _stack, commands in lab.preview.plans:
        chosen = [c for c in commands if c.urn in urns]
        if chosen:
            run = deliver(commands, lab.operator, [c.urn for c in chosen])
            for line in failure_lines(run):
                lab.say(f"  {line}")
    return {name: (before[name], mek_present(lab, name)) for name in holders}


def change_one_file(lab: Lab) -> tuple[list[str], dict[str, DeliveryRun]]:
    """A Patroni setting changed in the program (an MR's one-line change): preview again, run
    what pulumi would run again (the commands whose inputs changed), nothing else."""
    old = {stack: state_of(commands) for stack, commands in lab.preview.plans}
    saved = patroni.PRIMARY_START_TIMEOUT
    patroni.PRIMARY_START_TIMEOUT = saved + 30
    try:
        changed_preview = run_preview(lab.admin_key, lab.run_dir / "topology.yaml")
    finally:
        patroni.PRIMARY_START_TIMEOUT = saved
    lab.preview.plans = changed_preview.plans
    selected: list[str] = []
    for stack, commands in changed_preview.plans:
        selected += changed(commands, old[stack])
    runs = deliver_stacks(lab, set(selected))
    return sorted(u.rsplit("::", 1)[-1] for u in selected), runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make converge", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=CACHE / "run")
    parser.add_argument("--keep", action="store_true", help="leave the servers running (for a look inside)")
    parser.add_argument("--clean", action="store_true", help="only remove what an earlier run left")
    parser.add_argument("--drills", nargs="?", const="all", choices=["all", "short"],
                        help="after the converge run, the drills at the distance (lab/drills.py): figures in "
                             "drills.json; 'short' (make test's): one failover, one sync wait, the bursts")
    parser.add_argument("--wan-delay-ms", type=float, default=DEFAULT_DELAY_MS,
                        help="the distance between the sites, each way (default 60: SPEC's 120 ms round trip; 0: none)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    clean(args.run_dir)
    if args.clean:
        return 0
    lab = build_lab(args.run_dir, wan_delay_ms=args.wan_delay_ms)
    problems: list[str] = []
    figures: dict[str, object] = {}
    drill_lines: list[str] = ["drills: none ran (the lab stopped before them)"]
    try:
        start(lab)
        lab.boot_started = boot_started = time.monotonic()
        runs = deliver_stacks(lab, boot=True)
        booted = lab.booted
        stops = known_stops(runs) + [f"{check}: {why}" for check, why in KNOWN_CHECK_STOPS.items()]
        for line in stops:
            lab.say(f"  STOPPED {line}")
        problems += [f"{o.server}: {o.name}: {o.reason}" for r in runs.values() for o in r.failed
                     if not is_known_stop(o)]
        states = settle(lab)
        problems += [f"{name}: booted {state}" for name, state in states.items() if state not in ("running", "degraded")]
        probes = role_probes(lab)
        # A server whose base stopped (a known stop) has nothing to check.
        for outcome in (o for r in runs.values() for o in r.failed if is_known_stop(o) and o.name.endswith(":apply:base")):
            probes.pop(outcome.server, None)
        checks = check_all(lab, probes)
        problems += [f"{c.server}: {c.name}: {c.detail}" for c in checks if not c.ok]
        if lab.wan_delay_ms:
            figures["wan"], wan_problems = measure_wan(lab)
            problems += wan_problems
        all_commands = [c for _, commands in lab.preview.plans for c in commands]
        figures.update(known_stops=stops, booted=booted, delivery={s: {"run": r.to_json()} for s, r in runs.items()},
                       servers=per_server(list(runs.values()), all_commands,
                                          {n: c.first_boot for n, c in lab.containers.items()}),
                       lab_converged_s=time.monotonic() - boot_started, checks=[c.__dict__ for c in checks])
        before = snapshot(lab)
        again = deliver_stacks(lab)
        problems += [f"again: {o.server}: {o.name}: {o.reason}" for r in again.values() for o in r.failed
                     if not is_known_stop(o)]
        changed_again = changes(before, snapshot(lab))
        lab.say(f"delivered again: {len(changed_again)} changes" + "".join(f"\n  {c}" for c in changed_again))
        problems += [f"second run changed {c}" for c in changed_again]
        rebooted = reboot_all(lab)
        settle(lab)
        after_reboot = check_all(lab, {name: after_reboot_probes(chosen) for name, chosen in probes.items()})
        mek = redeliver_mek(lab)
        lab.say(f"MEK after reboot -> after redeliver-mek: {mek}")
        problems += [f"{c.server}: after reboot: {c.name}: {c.detail}" for c in after_reboot if not c.ok]
        problems += [f"{n}: MEK presence {b} -> {a} (expected 0 -> 1)" for n, (b, a) in mek.items() if (b, a) != ("0", "1")]
        ran, change_runs = change_one_file(lab)
        lab.say(f"one Patroni setting changed: pulumi would run {ran}")
        problems += [f"change: {o.server}: {o.name}: {o.reason}" for r in change_runs.values() for o in r.failed]
        figures.update(again={s: r.to_json() for s, r in again.items()}, changed_again=changed_again,
                       rebooted=rebooted, after_reboot=[c.__dict__ for c in after_reboot], mek=mek, change=ran)
        if args.drills:
            relay = lab.network.wan_control if lab.wan_delay_ms else None
            short = args.drills == "short"
            report = drills.run(lab.containers, lab.preview.inventory, lab.wan_delay_ms, relay, say=lab.say,
                                chosen=drills.SHORT_FAILURES if short else None,
                                hiccups=drills.SHORT_HICCUPS if short else None)
            drill_lines = drills.summary(report)
            for line in drill_lines[:-1]:
                lab.say(line)
            (lab.run_dir / "drills.json").write_text(json.dumps(report.figures, indent=1))
            problems += [f"drill: {p}" for p in report.problems]
    finally:
        figures["seconds"] = time.monotonic() - started
        (lab.run_dir / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
        if not args.keep:
            stop(lab)
    for problem in problems:
        print(f"PROBLEM {problem}")
    total = sum(len(c) for _, c in lab.preview.plans)
    print(f"converge: {len(lab.containers)} servers, {total} commands, {len(problems)} problems, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    if args.drills:
        print(drill_lines[-1], flush=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
