"""WireGuard tunnel collector (node_exporter textfile collector) on every server with a tunnel."""

from __future__ import annotations

from pathlib import PurePosixPath

from ...files import python_script
from ...model import Inventory, Server
from ..systemd import timer_unit
from .common import DEFAULT_PATHS, MonitoringPaths
from .metrics import TUNNEL_COLLECTOR_INTERVAL_SECONDS, TUNNEL_PING_COUNT

TUNNEL_COLLECTOR_UNIT = "unde-vpn-tunnel-collector"
TUNNEL_METRICS_FILE = "unde_vpn_tunnel.prom"
TUNNEL_COLLECTOR_SOURCE = "vpn_tunnel_collector.py"



def tunnels_seen_from(server: Server, inventory: Inventory) -> list[dict[str, str]]:
    """The tunnels a server measures: a local server its own (far end: helsinki-gw's tunnel
    address), helsinki-gw every tunnel (far end: the local server's tunnel address). Empty for
    other servers, and for helsinki-gw in routeros mode (RouterOS terminates the tunnels)."""
    if server.tunnel is not None:
        return [{"tunnel": server.name, "peer_ip": str(server.tunnel.helsinki_ip)}]
    if server.task == "gateway" and inventory.network.wireguard.mode == "linux":
        return [{"tunnel": s.name, "peer_ip": str(t.local_ip)} for s, t in sorted(inventory.tunnels(), key=lambda x: x[0].name)]
    return []


def tunnel_collector_settings(tunnels: list[dict[str, str]], paths: MonitoringPaths = DEFAULT_PATHS) -> dict[str, object]:
    """The collector's parameters (`vpn-tunnel-collector.json` beside it)."""
    return {
        "tunnels": tunnels,
        "output_dir": paths.textfile_dir,
        "file_name": TUNNEL_METRICS_FILE,
        "ping_count": TUNNEL_PING_COUNT,
    }


def tunnel_collector_files(
    server: Server, inventory: Inventory, *, paths: MonitoringPaths = DEFAULT_PATHS
) -> dict[str, str]:
    """The collector script (files/vpn_tunnel_collector.py) with its parameters, and its systemd
    service and timer, keyed by absolute path; empty for a server without tunnels. Runs as root:
    `wg show` needs CAP_NET_ADMIN."""
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
        **python_script(paths.tunnel_collector, TUNNEL_COLLECTOR_SOURCE, tunnel_collector_settings(tunnels, paths)),
        f"{unit_dir}/{TUNNEL_COLLECTOR_UNIT}.service": service,
        f"{unit_dir}/{TUNNEL_COLLECTOR_UNIT}.timer": timer,
    }
