"""The public entry of the local site: nginx with TLS on the entry host, or, when local-app runs
as several instances on hcloud, an hcloud Load Balancer with a certificate Hetzner manages."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from unde_infra.model import Inventory
from unde_infra.naming import LOAD_BALANCER_TYPE
from unde_infra.render.entry import (
    API_BACKEND_PORT,
    HEALTH_PATH,
    HTTPS_PORT,
    entry_files,
    entry_setup_command,
)

from .base import UndeComponent
from .delivery import RemoteFile, deliver
from .hosts import Host


class HcloudEntryPoint(UndeComponent):
    """An hcloud Load Balancer in front of every local-app instance, reaching them privately. It
    terminates TLS with a managed certificate (Let's Encrypt through Hetzner DNS, so the domain's
    zone must be at Hetzner), redirects HTTP to HTTPS and checks each instance's /healthz."""

    TYPE = "unde:local:EntryPoint"

    def __init__(
        self,
        name: str,
        location: str,
        network_id: pulumi.Input[int],
        instances: list[Host],
        domain: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(name, opts)
        labels = {"managed-by": "unde-infra", "site": "local", "task": "api"}
        balancer = hcloud.LoadBalancer(
            name,
            name=name,
            load_balancer_type=LOAD_BALANCER_TYPE,
            location=location,
            algorithm=hcloud.LoadBalancerAlgorithmArgs(type="least_connections"),
            labels=labels,
            opts=self.child(),
        )
        certificate = hcloud.ManagedCertificate(
            f"{name}-certificate", name=f"{name}-{domain}", domain_names=[domain], labels=labels, opts=self.child()
        )
        balancer_id = balancer.id.apply(int)
        attachment = hcloud.LoadBalancerNetwork(
            name, load_balancer_id=balancer_id, network_id=network_id, opts=self.child()
        )
        hcloud.LoadBalancerService(
            f"{name}-https",
            load_balancer_id=balancer.id,
            protocol="https",
            listen_port=HTTPS_PORT,
            destination_port=API_BACKEND_PORT,  # each instance's FastAPI, over the private network
            http=hcloud.LoadBalancerServiceHttpArgs(
                certificates=[certificate.id.apply(int)], redirect_http=True
            ),
            health_check=hcloud.LoadBalancerServiceHealthCheckArgs(
                protocol="http", port=API_BACKEND_PORT, interval=10, timeout=5, retries=3,
                http=hcloud.LoadBalancerServiceHealthCheckHttpArgs(path=HEALTH_PATH, status_codes=["2??"]),
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
    """The entry host's nginx: TLS (certbot) and HTTP/2 in front of every instance's FastAPI."""

    TYPE = "unde:local:EntryPoint"

    def __init__(
        self, name: str, inventory: Inventory, entry: Host, domain: str, email: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(name, opts)
        files = {path: RemoteFile(f.content, mode=f.mode) for path, f in entry_files(inventory, domain, email).items()}
        deliver(entry, files, self, apply=entry_setup_command(), apply_label="entry")
        self.address = entry.address
        self.register_outputs({"address": self.address})
