"""One user-data shard: the local primary and its hot standby in Helsinki, built together."""

from __future__ import annotations

import pulumi

from unde_infra.model import Inventory, Shard
from unde_infra.render.node_setup import shard_node_steps
from unde_infra.render.patroni import Node
from unde_infra.render.shard_routing import routing_apply

from .base import UndeComponent
from .delivery import deliver
from .ha_files import ETCD_MEMBER_SETUP, etcd_files, shard_node_files, shard_secrets
from .hosts import Host, HostProvider
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
        inventory: Inventory,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(shard.scope, opts)
        self.shard = shard
        self.primary = local_hosts.host(shard.primary, user_data[shard.primary.name], self)
        self.replica = replica_hosts.host(shard.replica, user_data[shard.replica.name], self)
        self.tunnel = WireGuardPeer(shard.primary, self.primary, tunnels, opts=self.child())
        database_secrets = shard_secrets(shard, self, secrets.app_passwords_of(shard.index))
        nodes: tuple[tuple[Node, Host], ...] = (("primary", self.primary), ("replica", self.replica))
        for node, host in nodes:
            files = {**shard_node_files(shard, node, inventory, database_secrets, host.os),
                     **secrets.files_for(host.server)}
            setup = shard_node_steps(host.os)[0]
            # PgBouncer's postinst sets its files' mode: installed before they are written.
            written = deliver(host, files, self, apply=setup.command, depends_on=[self.tunnel], first=("pgbouncer",))
            # The routing watcher, once Patroni runs (docs/failures.md, "Routing follows the primary").
            routing = secrets.routing_files(shard, node)
            if routing:
                deliver(host, routing, self, apply=routing_apply(), apply_label="routing", depends_on=written[-1:])
            member = etcd_files(host.server, inventory)  # the plan's etcd-2 on shard-replica-0
            if member:
                deliver(host, member, self, apply=ETCD_MEMBER_SETUP.command, apply_label="etcd")
        self.register_outputs(
            {"primary_ip": str(shard.primary.ip), "replica_ip": str(shard.replica.ip), "scope": shard.scope}
        )
