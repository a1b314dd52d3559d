"""helsinki-gw: the adopted server that terminates every local tunnel and routes between sites."""

from __future__ import annotations

import pulumi

from unde_infra.model import Inventory, Server
from unde_infra.render.wireguard import (
    NFTABLES_PATH,
    SYSCTL_PATH,
    gateway_base_apply_command,
    gateway_nftables,
    gateway_sysctl,
)
from unde_infra.settings import StackSettings

from .base import UndeComponent
from .delivery import RemoteFile, deliver
from .hosts import HostProvider
from .wireguard_peer import COLLECTOR_APPLY, collector_files


class HelsinkiGateway(UndeComponent):
    TYPE = "unde:helsinki:HelsinkiGateway"

    def __init__(
        self,
        server: Server,
        hosts: HostProvider,
        user_data: str,
        inventory: Inventory,
        settings: StackSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(server.name, opts)
        self.host = hosts.host(server, user_data, self)
        self.public_address = self.host.address
        self.public_address6 = self.host.ipv6_address
        self.private_address = str(server.ip)
        self.egress: list[pulumi.Resource] = []
        if inventory.network.wireguard.mode == "linux":
            # Forwarding, NAT for the private-only servers and the firewall, before any tunnel:
            # the local stack adds each tunnel's own interface with its peer.
            files = {
                SYSCTL_PATH: RemoteFile(gateway_sysctl()),
                NFTABLES_PATH: RemoteFile(gateway_nftables(inventory, list(settings.admin_cidrs)), mode="0755"),
                **collector_files(server, inventory),
            }
            # What the servers without a public address wait for before they install anything:
            # their way to the archive is this NAT.
            self.egress = deliver(self.host, files, self, apply=f"{gateway_base_apply_command()}\n{COLLECTOR_APPLY}")[-1:]
        self.register_outputs({"public_address": self.public_address, "private_address": self.private_address})
