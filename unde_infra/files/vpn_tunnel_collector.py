#!/usr/bin/python3
"""WireGuard tunnel metrics for node_exporter's textfile collector. Delivered by unde-infra.

For each tunnel: vpn_tunnel_up (1 when the far end's tunnel address answers ping, i.e. traffic
crosses), vpn_tunnel_rtt_ms (average ping RTT), vpn_tunnel_handshake_age_seconds (+Inf when no
handshake ever happened). The peer of a tunnel is found by its allowed IPs, so the collector
does not depend on interface names on helsinki-gw.

Its parameters are in the JSON file beside it (`<this file>.json`, rendered by unde-infra):
tunnels ([{"tunnel", "peer_ip"}]), output_dir, file_name, ping_count."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Peer = tuple[str, list[Network], int]  # interface, allowed networks, latest handshake (0: never)


def load_settings(path: str | None) -> dict[str, Any]:
    with open(path or os.path.abspath(__file__) + ".json", encoding="utf-8") as f:
        settings: dict[str, Any] = json.load(f)
    return settings


def parse_wg_dump(text: str) -> list[Peer]:
    """The peers in `wg show all dump`: interface lines have 5 fields, peer lines 9."""
    peers = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 9:
            continue
        networks = [ipaddress.ip_network(n, strict=False) for n in fields[4].split(",") if n and n != "(none)"]
        peers.append((fields[0], networks, int(fields[5])))
    return peers


def wg_peers() -> list[Peer]:
    out = subprocess.run(["wg", "show", "all", "dump"], capture_output=True, text=True, timeout=10)
    return parse_wg_dump(out.stdout)


def parse_ping(text: str) -> tuple[int, float | None]:
    """(replies received, average RTT in ms or None) from iputils ping's summary."""
    received = re.search(r"(\d+) (?:packets )?received", text)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", text)
    return (int(received.group(1)) if received else 0), (float(rtt.group(1)) if rtt else None)


def ping(address: str, count: int) -> tuple[int, float | None]:
    try:
        out = subprocess.run(
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", address],
            capture_output=True, text=True, timeout=count + 5,
        ).stdout
    except subprocess.TimeoutExpired:
        return 0, None
    return parse_ping(out)


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def exposition(tunnels: Sequence[dict[str, str]], peers: Sequence[Peer], pings: Sequence[tuple[int, float | None]],
               now: float) -> str:
    """The three metric families in Prometheus' text format."""
    metrics: dict[str, list[str]] = {"up": [], "rtt": [], "age": []}
    for tunnel, (received, rtt) in zip(tunnels, pings, strict=True):
        address = ipaddress.ip_address(tunnel["peer_ip"])
        match = next((p for p in peers if any(address in n for n in p[1])), None)
        interface = match[0] if match else ""
        labels = f'tunnel="{label(tunnel["tunnel"])}",interface="{label(interface)}",peer_ip="{address}"'
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
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """node_exporter must never read a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", help="the parameters (default: the JSON file beside this script)")
    parser.add_argument("--output-dir", help="overrides the configured textfile directory")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    tunnels = settings["tunnels"]
    try:
        peers = wg_peers()
    except (OSError, subprocess.SubprocessError):
        peers = []
    now = time.time()
    count = int(settings["ping_count"])
    with ThreadPoolExecutor(max_workers=8) as pool:
        pings = list(pool.map(lambda t: ping(t["peer_ip"], count), tunnels))
    write_atomically(os.path.join(args.output_dir or settings["output_dir"], settings["file_name"]),
                     exposition(tunnels, peers, pings, now))
    return 0


if __name__ == "__main__":
    sys.exit(main())
