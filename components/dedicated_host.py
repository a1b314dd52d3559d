"""production-db: a dedicated Robot server that Pulumi neither creates nor changes.

It is an inventory entry with a component of its own so that the network, firewall, monitoring
and backup wiring can name it like any other server. It joins the Helsinki network through the
vSwitch subnet (HelsinkiNetwork); Hetzner Robot, not hcloud, owns the machine."""

from __future__ import annotations

import pulumi

from unde_infra.model import Server

from .base import UndeComponent
from .hosts import Host


class DedicatedHost(UndeComponent):
    TYPE = "unde:helsinki:DedicatedHost"

    def __init__(self, server: Server, jump: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(server.name, opts)
        self.server = server
        # Reached over its vSwitch address through helsinki-gw, for day-2 files only.
        self.host = Host.at(server, str(server.ip), None, jump=jump, owner=self)
        self.register_outputs(
            {"private_ip": str(server.ip), "dedicated": server.dedicated or "", "task": server.task}
        )
