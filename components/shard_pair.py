"""One user-data shard: the local primary and its hot standby in Helsinki, built together."""

from __future__ import annotations

import pulumi

from unde_infra.model import Shard

from .base import UndeComponent
from .delivery import deliver
from .hosts import HostProvider
from .secrets import LocalSecrets
from .wireguard_peer import TunnelWiring, WireGuardPeer


class ShardPair(UndeComponent):
    TYPE = "unde:local:ShardPair"

    def __init__(
        self,
        shard: Shard,
        local_hosts: HostProvider,
        replica_hosts: HostProvider,
        user_data: dict[str, str],
        tunnels: TunnelWiring,
        secrets: LocalSecrets,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(shard.scope, opts)
        self.shard = shard
        self.primary = local_hosts.host(shard.primary, user_data[shard.primary.name], self)
        self.replica = replica_hosts.host(shard.replica, user_data[shard.replica.name], self)
        self.tunnel = WireGuardPeer(shard.primary, self.primary, tunnels, opts=self.child())
        for host in (self.primary, self.replica):
            deliver(host, secrets.files_for(host.server), self, apply_label="secrets")
        self.register_outputs(
            {"primary_ip": str(shard.primary.ip), "replica_ip": str(shard.replica.ip), "scope": shard.scope}
        )
