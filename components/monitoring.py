"""The monitoring server: Prometheus, Alertmanager and Grafana for both sites."""

from __future__ import annotations

import pulumi

from unde_infra.model import Server

from .base import UndeComponent
from .hosts import HostProvider


class Monitoring(UndeComponent):
    TYPE = "unde:helsinki:Monitoring"

    def __init__(
        self, server: Server, hosts: HostProvider, user_data: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(server.name, opts)
        self.host = hosts.host(server, user_data, self)
        self.register_outputs({"private_ip": str(server.ip)})
