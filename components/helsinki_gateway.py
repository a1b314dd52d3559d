"""helsinki-gw: the adopted server that terminates every local tunnel and routes between sites."""

from __future__ import annotations

import pulumi

from unde_infra.model import Server

from .base import UndeComponent
from .hosts import HostProvider


class HelsinkiGateway(UndeComponent):
    TYPE = "unde:helsinki:HelsinkiGateway"

    def __init__(
        self, server: Server, hosts: HostProvider, user_data: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(server.name, opts)
        self.host = hosts.host(server, user_data, self)
        self.public_address = self.host.address
        self.private_address = str(server.ip)
        self.register_outputs({"public_address": self.public_address, "private_address": self.private_address})
