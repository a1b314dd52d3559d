"""The Helsinki private network: one hcloud network, its subnets and the routes via helsinki-gw."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from unde_infra.model import Inventory
from unde_infra.settings import StackSettings
from unde_infra.sizing import HCLOUD_NETWORK_ZONES

from .base import UndeComponent


class HelsinkiNetwork(UndeComponent):
    TYPE = "unde:network:HelsinkiNetwork"

    def __init__(
        self, name: str, inventory: Inventory, settings: StackSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, opts)
        plan = inventory.network
        zone = inventory.sites["helsinki"].network_zone or "eu-central"
        # An existing network is adopted at the plan's range: a range change makes the provider
        # replace the network (ipRange forces a new resource), so the one-time widening is done
        # beforehand with Hetzner's change_ip_range action (check_against_inventory says how).
        # The adoption run (`adopting: true`) leaves every field the live network may have
        # otherwise; the next run converges them in place.
        adopting = settings.network_import_id is not None
        adoption_run = adopting and settings.adopting
        ignored = ["name", "labels"] if adopting else []
        if adoption_run:
            ignored += ["deleteProtection", "exposeRoutesToVswitch"]
        self.network = hcloud.Network(
            "unde",
            name="unde",
            ip_range=str(plan.ip_range),
            labels={"managed-by": "unde-infra"},
            delete_protection=True,
            opts=self.child(protect=True, import_=settings.network_import_id, ignore_changes=ignored or None),
        )
        # hcloud ids are integers in the Python SDK; the provider returns them as strings.
        self.network_id: pulumi.Output[int] = self.network.id.apply(int)
        self.subnets: dict[str, hcloud.NetworkSubnet] = {}
        for subnet_name, subnet in plan.subnets.items():
            vswitch = subnet.type == "vswitch"
            if vswitch and settings.vswitch_id is None:
                continue
            exists = subnet.ip_range in settings.existing_subnets
            self.subnets[subnet_name] = hcloud.NetworkSubnet(
                f"subnet-{subnet_name}",
                network_id=self.network_id,
                type=subnet.type,
                network_zone=zone,
                ip_range=str(subnet.ip_range),
                vswitch_id=settings.vswitch_id if vswitch else None,
                # hcloud's import id of a subnet is `<network id>-<ip range>`.
                opts=self.child(
                    import_=f"{settings.network_import_id}-{subnet.ip_range}" if exists else None,
                    protect=exists,
                ),
            )
        gateway_ip = str(inventory.gateway.ip)
        destinations = {
            "local": str(inventory.sites["local"].range),
            "tunnels": str(plan.tunnel_range),
            # Servers without a public address reach the internet through helsinki-gw's NAT.
            "default": "0.0.0.0/0",
        }
        self.routes = [
            hcloud.NetworkRoute(
                f"route-{label}",
                network_id=self.network_id,
                destination=destination,
                gateway=gateway_ip,
                opts=self.child(),
            )
            for label, destination in destinations.items()
        ]
        self.register_outputs({"network_id": self.network_id})


class LocalNetwork(UndeComponent):
    """The local site's private network when it is built on Hetzner Cloud (sin by default).

    Hetzner networks do not span network zones, so it is separate from the Helsinki network;
    WireGuard tunnels join the two."""

    TYPE = "unde:network:LocalNetwork"

    def __init__(self, name: str, inventory: Inventory, location: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        local_range = str(inventory.sites["local"].range)
        self.network = hcloud.Network(
            "unde-local",
            name="unde-local",
            ip_range=local_range,
            labels={"managed-by": "unde-infra", "site": "local"},
            delete_protection=True,
            opts=self.child(protect=True),
        )
        self.network_id: pulumi.Output[int] = self.network.id.apply(int)
        self.subnet = hcloud.NetworkSubnet(
            "subnet-local",
            network_id=self.network_id,
            type="cloud",
            network_zone=HCLOUD_NETWORK_ZONES[location],
            ip_range=local_range,
            opts=self.child(),
        )
        self.register_outputs({"network_id": self.network_id})
