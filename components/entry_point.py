"""The public entry of the local site when local-app runs as several instances."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from unde_infra.model import Inventory
from unde_infra.naming import LOAD_BALANCER_TYPE
from unde_infra.render.entry import HTTPS_PORT, UPSTREAM_PATH, nginx_upstream

from .base import UndeComponent
from .delivery import RemoteFile, deliver
from .hosts import Host


class HcloudEntryPoint(UndeComponent):
    """An hcloud Load Balancer in front of every local-app instance, reaching them privately."""

    TYPE = "unde:local:EntryPoint"

    def __init__(
        self,
        name: str,
        location: str,
        network_id: pulumi.Input[int],
        instances: list[Host],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(name, opts)
        balancer = hcloud.LoadBalancer(
            name,
            name=name,
            load_balancer_type=LOAD_BALANCER_TYPE,
            location=location,
            algorithm=hcloud.LoadBalancerAlgorithmArgs(type="least_connections"),
            labels={"managed-by": "unde-infra", "site": "local", "task": "api"},
            opts=self.child(),
        )
        balancer_id = balancer.id.apply(int)
        attachment = hcloud.LoadBalancerNetwork(
            name, load_balancer_id=balancer_id, network_id=network_id, opts=self.child()
        )
        hcloud.LoadBalancerService(
            f"{name}-https",
            load_balancer_id=balancer.id,
            protocol="tcp",  # TLS ends on the instances' nginx, which hold the certificates
            listen_port=HTTPS_PORT,
            destination_port=HTTPS_PORT,
            health_check=hcloud.LoadBalancerServiceHealthCheckArgs(
                protocol="tcp", port=HTTPS_PORT, interval=10, timeout=5, retries=3
            ),
            opts=self.child(),
        )
        for host in instances:
            hcloud.LoadBalancerTarget(
                f"{name}-{host.server.name}",
                load_balancer_id=balancer_id,
                type="server",
                server_id=host.server_id(),
                use_private_ip=True,
                opts=self.child(depends_on=[attachment]),
            )
        self.address = balancer.ipv4
        self.register_outputs({"address": self.address})


class NginxEntryPoint(UndeComponent):
    """On existing hosts: the entry host's nginx spreads requests over every instance."""

    TYPE = "unde:local:EntryPoint"

    def __init__(
        self, name: str, inventory: Inventory, entry: Host, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, opts)
        deliver(
            entry,
            {UPSTREAM_PATH: RemoteFile(nginx_upstream(inventory))},
            self,
            apply="nginx -t && systemctl reload nginx",
        )
        self.address = entry.address
        self.register_outputs({"address": self.address})
