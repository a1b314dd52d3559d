"""A Helsinki (or witness-site) server for one batch or core task."""

from __future__ import annotations

import pulumi

from unde_infra.model import Server

from .base import UndeComponent
from .delivery import RemoteFile, deliver
from .hosts import HostProvider


class BatchHost(UndeComponent):
    TYPE = "unde:helsinki:BatchHost"

    def __init__(
        self,
        server: Server,
        hosts: HostProvider,
        user_data: str,
        files: dict[str, RemoteFile] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(server.name, opts)
        self.host = hosts.host(server, user_data, self)
        if files:
            deliver(self.host, files, self)
        self.register_outputs({"private_ip": str(server.ip), "address": self.host.address})
