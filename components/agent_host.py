"""A local host for one stateless hot-path task (app, orchestrator, redis, agents, etcd)."""

from __future__ import annotations

import pulumi

from unde_infra.model import Server

from .base import UndeComponent
from .delivery import RemoteFile, deliver
from .hosts import HostProvider
from .wireguard_peer import TunnelWiring, WireGuardPeer


class AgentHost(UndeComponent):
    TYPE = "unde:local:AgentHost"

    def __init__(
        self,
        server: Server,
        hosts: HostProvider,
        user_data: str,
        tunnels: TunnelWiring,
        files: dict[str, RemoteFile] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(server.name, opts)
        self.host = hosts.host(server, user_data, self)
        self.tunnel = WireGuardPeer(server, self.host, tunnels, opts=self.child())
        if files:
            deliver(self.host, files, self, apply_label="secrets")
        self.register_outputs({"private_ip": str(server.ip), "address": self.host.address})
