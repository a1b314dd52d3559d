"""WireGuard tunnel collector (node_exporter textfile collector) on every server with a tunnel."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from ...model import Inventory, Server
from ..systemd import timer_unit
from .common import DEFAULT_PATHS, MonitoringPaths
from .metrics import TUNNEL_COLLECTOR_INTERVAL_SECONDS, TUNNEL_PING_COUNT

TUNNEL_COLLECTOR_UNIT = "unde-vpn-tunnel-collector"
TUNNEL_METRICS_FILE = "unde_vpn_tunnel.prom"

_COLLECTOR = '''#!/usr/bin/python3
"""WireGuard tunnel metrics for node_exporter's textfile collector. Rendered by unde-infra.

For each tunnel: vpn_tunnel_up (1 when the far end's tunnel address answers ping, i.e. traffic
crosses), vpn_tunnel_rtt_ms (average ping RTT), vpn_tunnel_handshake_age_seconds (+Inf when no
handshake ever happened). The peer of a tunnel is found by its allowed IPs, so the collector
does not depend on interface names on helsinki-gw."""
import argparse
import ipaddress
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

TUNNELS = __TUNNELS__
OUTPUT_DIR = __OUTPUT_DIR__
FILE_NAME = __FILE_NAME__
PING_COUNT = __PING_COUNT__


def wg_peers():
    """(interface, allowed networks, latest handshake) of every peer of every interface."""
    out = subprocess.run(["wg", "show", "all", "dump"], capture_output=True, text=True, timeout=10)
    peers = []
    for line in out.stdout.splitlines():
        fields = line.split("\\t")
        if len(fields) != 9:  # interface lines have 5 fields, peer lines 9
            continue
        networks = [ipaddress.ip_network(n, strict=False) for n in fields[4].split(",") if n and n != "(none)"]
        peers.append((fields[0], networks, int(fields[5])))
    return peers


def ping(address):
    """(replies received, average RTT in ms or None)."""
    try:
        out = subprocess.run(
            ["ping", "-n", "-q", "-c", str(PING_COUNT), "-i", "0.2", "-W", "1", address],
            capture_output=True, text=True, timeout=PING_COUNT + 5,
        ).stdout
    except subprocess.TimeoutExpired:
        return 0, None
    received = re.search(r"(\\d+) (?:packets )?received", out)
    rtt = re.search(r"= [\\d.]+/([\\d.]+)/", out)
    return (int(received.group(1)) if received else 0), (float(rtt.group(1)) if rtt else None)


def label(value):
    return value.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    args = parser.parse_args()
    try:
        peers = wg_peers()
    except (OSError, subprocess.SubprocessError):
        peers = []
    now = time.time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        pings = list(pool.map(lambda t: ping(t["peer_ip"]), TUNNELS))
    metrics = {"up": [], "rtt": [], "age": []}
    for tunnel, (received, rtt) in zip(TUNNELS, pings):
        address = ipaddress.ip_address(tunnel["peer_ip"])
        match = next((p for p in peers if any(address in n for n in p[1])), None)
        interface = match[0] if match else ""
        labels = f'tunnel="{label(tunnel["tunnel"])}",interface="{label(interface)}",peer_ip="{tunnel["peer_ip"]}"'
        metrics["up"].append(f"vpn_tunnel_up{{{labels}}} {1 if received > 0 else 0}")
        if rtt is not None:
            metrics["rtt"].append(f"vpn_tunnel_rtt_ms{{{labels}}} {rtt}")
        age = "+Inf" if not match or match[2] == 0 else str(max(0.0, round(now - match[2], 3)))
        metrics["age"].append(f"vpn_tunnel_handshake_age_seconds{{{labels}}} {age}")
    lines = [
        "# HELP vpn_tunnel_up 1 when the far end of the WireGuard tunnel answers ping through it.",
        "# TYPE vpn_tunnel_up gauge", *metrics["up"],
        "# HELP vpn_tunnel_rtt_ms Average ping RTT through the tunnel, milliseconds.",
        "# TYPE vpn_tunnel_rtt_ms gauge", *metrics["rtt"],
        "# HELP vpn_tunnel_handshake_age_seconds Seconds since the latest WireGuard handshake.",
        "# TYPE vpn_tunnel_handshake_age_seconds gauge", *metrics["age"],
    ]
    # Atomic replace: node_exporter must never read a half-written file.
    path = os.path.join(args.output_dir, FILE_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\\n".join(lines) + "\\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
'''


def tunnels_seen_from(server: Server, inventory: Inventory) -> list[dict[str, str]]:
    """The tunnels a server measures: a local server its own (far end: helsinki-gw's tunnel
    address), helsinki-gw every tunnel (far end: the local server's tunnel address). Empty for
    other servers, and for helsinki-gw in routeros mode (RouterOS terminates the tunnels)."""
    if server.tunnel is not None:
        return [{"tunnel": server.name, "peer_ip": str(server.tunnel.helsinki_ip)}]
    if server.task == "gateway" and inventory.network.wireguard.mode == "linux":
        return [{"tunnel": s.name, "peer_ip": str(t.local_ip)} for s, t in sorted(inventory.tunnels(), key=lambda x: x[0].name)]
    return []


def tunnel_collector_script(tunnels: list[dict[str, str]], paths: MonitoringPaths = DEFAULT_PATHS) -> str:
    return (
        _COLLECTOR.replace("__TUNNELS__", json.dumps(tunnels))
        .replace("__OUTPUT_DIR__", json.dumps(paths.textfile_dir))
        .replace("__FILE_NAME__", json.dumps(TUNNEL_METRICS_FILE))
        .replace("__PING_COUNT__", str(TUNNEL_PING_COUNT))
    )


def tunnel_collector_files(
    server: Server, inventory: Inventory, *, paths: MonitoringPaths = DEFAULT_PATHS
) -> dict[str, str]:
    """The collector script and its systemd service and timer, keyed by absolute path; empty for
    a server without tunnels. Runs as root: `wg show` needs CAP_NET_ADMIN."""
    tunnels = tunnels_seen_from(server, inventory)
    if not tunnels:
        return {}
    unit_dir = str(PurePosixPath(paths.root) / "etc/systemd/system")
    service = "\n".join(
        [
            "[Unit]",
            "Description=WireGuard tunnel metrics for node_exporter (unde-infra)",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart=/usr/bin/python3 {paths.tunnel_collector}",
            "",
        ]
    )
    timer = timer_unit(
        "Collect WireGuard tunnel metrics (unde-infra)",
        ["OnBootSec=15s", f"OnUnitActiveSec={TUNNEL_COLLECTOR_INTERVAL_SECONDS}s", "AccuracySec=1s"],
    )
    return {
        paths.tunnel_collector: tunnel_collector_script(tunnels, paths),
        f"{unit_dir}/{TUNNEL_COLLECTOR_UNIT}.service": service,
        f"{unit_dir}/{TUNNEL_COLLECTOR_UNIT}.timer": timer,
    }
