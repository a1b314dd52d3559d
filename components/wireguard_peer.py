"""One local server's own WireGuard tunnel to helsinki-gw."""

from __future__ import annotations

import pulumi

from unde_infra.model import Server

from .base import UndeComponent
from .hosts import Host


class WireGuardPeer(UndeComponent):
    TYPE = "unde:network:WireGuardPeer"

    def __init__(self, server: Server, host: Host, opts: pulumi.ResourceOptions | None = None) -> None:
        if server.tunnel is None:
            raise ValueError(f"{server.name} has no tunnel in the topology")
        tunnel = server.tunnel
        super().__init__(f"{server.name}-{tunnel.interface}", opts)
        self.tunnel = tunnel
        self.register_outputs(
            {
                "interface": tunnel.interface,
                "local_ip": str(tunnel.local_ip),
                "helsinki_ip": str(tunnel.helsinki_ip),
            }
        )
