"""The two stacks: which components each site is made of, and what each exports."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_hcloud as hcloud
from pulumi.runtime.config import is_config_secret

from unde_infra.availability import site_location, type_location_problems
from unde_infra.errors import Problems
from unde_infra.firewall import firewall_plans
from unde_infra.model import (
    HELSINKI,
    LOCAL,
    MONITORING_TASK,
    ROOT,
    SECOND_MONITORING_TASK,
    WITNESS,
    Inventory,
    load_topology,
)
from unde_infra.readiness import enforce, secret_problems
from unde_infra.render.app_secrets import MEK_PRESENCE_SCRIPT, MEK_TASKS, mek_presence_files, mek_presence_setup
from unde_infra.render.cloud_init import base_setup_script, bootstrap_user_data, day2_base_files
from unde_infra.render.entry import api_instances, needs_load_balancer
from unde_infra.render.entry_failover import EntryDns
from unde_infra.render.exporters import needs_standalone_postgres_exporter
from unde_infra.render.posthog import POSTHOG_TASK
from unde_infra.settings import (
    KNOWN_KEYS,
    NEW,
    PROVIDER_SECRET_KEYS,
    SECRET_KEYS,
    TOPOLOGY_OVERRIDE_ENV,
    StackSettings,
    check_against_inventory,
    local_type,
    parse_settings,
    plaintext_secret_problems,
)

from .agent_host import AgentHost
from .batch_host import BatchHost
from .dedicated_host import DedicatedHost
from .delivery import RemoteFile, deliver
from .entry_point import HcloudEntryPoint, NginxEntryPoint
from .exporters import deliver_exporters, deliver_standalone_backups
from .firewalls import Firewalls
from .ha_files import ETCD_MEMBER_SETUP, etcd_files
from .helsinki_gateway import HelsinkiGateway
from .hosts import ExistingHosts, HcloudHosts, Host, HostProvider
from .monitoring import Monitoring, deliver_monitoring
from .network import HelsinkiNetwork, LocalNetwork
from .object_storage import ObjectStorage
from .posthog import deliver_posthog
from .redis import deliver_redis
from .secrets import LocalSecrets
from .shard_pair import ShardPair
from .warm_standby import WarmStandby
from .wireguard_peer import RouterOsTunnels, TunnelWiring, WireGuardPeer, WitnessTunnel

PLACEMENT_GROUP_SIZE = 10  # hcloud's limit of servers in one spread placement group
HELSINKI_EXPORTS = (
    "networkId", "gatewayPublicAddress", "gatewayPrivateAddress", "gatewaySshEndpoint", "gatewayPublicAddress6",
    "witnessPublicAddress", "standbyEntryAddress",
)  # fmt: skip


def load_stack() -> tuple[StackSettings, Inventory]:
    """Read this stack's config and the topology; every problem of either is reported at once."""
    config = pulumi.Config()
    raw = {key: _config_value(value) for key in sorted(KNOWN_KEYS - SECRET_KEYS) if (value := config.get(key)) is not None}
    problems = Problems()
    stack = pulumi.get_stack()
    settings = parse_settings(stack, raw, problems)
    # A secret set without --secret reaches the program as plain config: refused, by its name.
    secrets = {
        **{key: is_config_secret(f"{config.name}:{key}") for key in SECRET_KEYS if config.get(key) is not None},
        **{key: is_config_secret(key) for key in PROVIDER_SECRET_KEYS if _provider_config(key) is not None},
    }
    plaintext_secret_problems(stack, secrets, problems)
    problems.raise_if_any(f"Pulumi.{stack}.yaml")
    override = os.environ.get(TOPOLOGY_OVERRIDE_ENV)
    inventory = load_topology(Path(override) if override else settings.topology_path(ROOT), shards=settings.shards)
    check_against_inventory(settings, inventory, problems)
    for path, message in type_location_problems(inventory, settings):
        problems.add(path, message)
    # Each secret's shape, read here where the real run has them in plain (never printed).
    values = {key: value for key in SECRET_KEYS if (value := config.get(key)) is not None}
    values |= {key: value for key in PROVIDER_SECRET_KEYS if (value := _provider_config(key)) is not None}
    for key, problem in secret_problems(values):
        problems.add(key, problem)
    problems.raise_if_any(f"Pulumi.{stack}.yaml")
    enforce(settings, inventory)
    return settings, inventory


def _provider_config(key: str) -> str | None:
    """A provider's setting (`hcloud:token`) as the program reads it."""
    namespace, _, name = key.partition(":")
    return pulumi.Config(namespace).get(name)


def _config_value(text: str) -> Any:
    """Structured config values (maps, lists, numbers) arrive as JSON text, plain strings as is."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _ssh_keys(settings: StackSettings) -> list[pulumi.Output[str]]:
    """The admin keys of the Hetzner project. Hetzner holds one copy of a key per project, so the
    helsinki stack owns them (the local stack reads their ids); a key uploaded before is adopted."""
    keys = []
    for i, key in enumerate(settings.ssh_keys):
        import_id = settings.ssh_key_import_ids.get(i)
        options = pulumi.ResourceOptions(
            import_=import_id,
            # An adopted key keeps the name and labels it was uploaded with.
            ignore_changes=["name", "labels"] if import_id else None,
        )
        keys.append(hcloud.SshKey(f"admin-{i}", name=f"unde-admin-{i}", public_key=key, opts=options).id)
    return keys


def build_helsinki(settings: StackSettings, inventory: Inventory) -> dict[str, Any]:
    network = HelsinkiNetwork("helsinki", inventory, settings)
    keys = _ssh_keys(settings)
    depends: list[pulumi.Resource] = list(network.subnets.values())
    hosts: dict[str, HcloudHosts] = {}
    base = BaseDelivery(inventory)
    for site_name in {s.site for s in inventory.stack_servers(HELSINKI)}:
        hosts[site_name] = HcloudHosts(
            settings, site_location(inventory, site_name), keys, network_id=network.network_id, depends_on=depends,
            on_new_host=base,
        )
    gateway: HelsinkiGateway | None = None
    built: dict[str, Host] = {}
    # The gateway first: servers without a public address are reached through it.
    for server in sorted(inventory.stack_servers(HELSINKI), key=lambda s: s.task != "gateway"):
        user_data = bootstrap_user_data(server, inventory, settings.ssh_keys)
        if server.dedicated is not None:
            assert gateway is not None  # built first
            built[server.name] = DedicatedHost(server, gateway.public_address).host
        elif server.task == "gateway":
            gateway = HelsinkiGateway(server, hosts[server.site], user_data, inventory, settings)
            built[server.name] = gateway.host
            base.egress = gateway.egress
            for provider in hosts.values():
                provider.jump = gateway.public_address
        elif server.task == MONITORING_TASK:
            built[server.name] = Monitoring(server, hosts[server.site], user_data, inventory, settings).host
        else:
            batch = BatchHost(server, hosts[server.site], user_data)
            built[server.name] = batch.host
            if server.task == POSTHOG_TASK:
                deliver_posthog(batch.host, batch)
            _deliver_etcd_member(batch, inventory)
    assert gateway is not None  # the model requires exactly one gateway
    base.rest(built)
    cloud = {name: host for name, host in built.items() if host.server.dedicated is None}
    Firewalls("helsinki", firewall_plans(inventory, HELSINKI, settings.admin_cidrs), _server_ids(cloud))
    ObjectStorage("object-storage", inventory)
    standby = inventory.standby_entry
    return {
        "networkId": network.network_id,
        "gatewayPublicAddress": gateway.public_address,
        "gatewayPrivateAddress": gateway.private_address,
        "gatewaySshEndpoint": gateway.public_address.apply(lambda a: f"root@{a}:22"),
        "gatewayPublicAddress6": gateway.public_address6,
        "witnessPublicAddress": next(
            (built[m.host.name].address for m in inventory.etcd if m.site == WITNESS and m.host.name in built), ""
        ),
        # Where the entry record fails over to (the local stack owns the record).
        "standbyEntryAddress": built[standby.name].address if standby is not None else "",
        "sshKeyIds": keys,
    }


def build_local(settings: StackSettings, inventory: Inventory) -> dict[str, Any]:
    helsinki = pulumi.StackReference(settings.helsinki_stack)
    keys = helsinki.require_output("sshKeyIds")
    base = BaseDelivery(inventory)
    local_hosts: HostProvider
    if settings.provider == "hcloud":
        network = LocalNetwork("local", inventory, settings.location)
        local_hosts = HcloudHosts(
            settings,
            settings.location,
            keys,
            network_id=network.network_id,
            depends_on=[network.subnet],
            type_for=lambda server: local_type(server, settings, inventory) or "",
            on_new_host=base,
        )
    else:
        local_hosts = ExistingHosts(settings, on_new_host=base)
    # Replicas of one spread group never share a physical host; hcloud allows 10 servers a group.
    spread_groups = [
        hcloud.PlacementGroup(f"replicas-{k}", name=f"unde-replicas-{k}", type="spread", labels={"managed-by": "unde-infra"})
        for k in range(-(-len(inventory.shards) // PLACEMENT_GROUP_SIZE))
    ]
    gateway_address = helsinki.require_output("gatewayPublicAddress")
    replica_hosts = HcloudHosts(
        settings,
        settings.replica_location,
        keys,
        network_id=helsinki.require_output("networkId").apply(int),
        placement_for=lambda server: spread_groups[(server.shard or 0) // PLACEMENT_GROUP_SIZE].id.apply(int),
        jump=gateway_address,
        on_new_host=base,
    )
    linux_gateway = inventory.network.wireguard.mode == "linux"
    gateway_host = Host(inventory.gateway, gateway_address, helsinki)
    wiring = TunnelWiring(
        inventory,
        gateway_host if linux_gateway else None,
        gateway_address,
        helsinki.require_output("gatewayPublicAddress6"),
        private_servers_use_ipv6=settings.provider == "hcloud",
    )
    secrets = LocalSecrets(inventory)
    built: dict[str, Host] = {}
    peers: dict[str, WireGuardPeer] = {}
    # The entry host first: local servers without a public address are reached through it.
    for server in sorted(inventory.site_servers(LOCAL), key=lambda s: not s.entry_point):
        if server.shard is None:
            user_data = bootstrap_user_data(server, inventory, settings.ssh_keys)
            agent = AgentHost(server, local_hosts, user_data, wiring, secrets.files_for(server))
            built[server.name], peers[server.name] = agent.host, agent.tunnel
            _deliver_etcd_member(agent, inventory)
            if server == secrets.redis_server():
                deliver_redis(agent.host, secrets, agent)
            if server.task == SECOND_MONITORING_TASK:
                # The second alert path: it must not depend on Helsinki, so the local stack builds it.
                deliver_monitoring(agent.host, agent, inventory, settings)
            if isinstance(local_hosts, HcloudHosts) and local_hosts.jump is None and server.public_ipv4:
                local_hosts.jump = agent.host.address
    pairs = []
    for shard in inventory.shards:
        bootstraps = {s.name: bootstrap_user_data(s, inventory, settings.ssh_keys) for s in (shard.primary, shard.replica)}
        pair = ShardPair(shard, local_hosts, replica_hosts, bootstraps, wiring, secrets, inventory)
        built[shard.primary.name], peers[shard.primary.name] = pair.primary, pair.tunnel
        pairs.append(pair)
    base.rest({**built, **{p.replica.server.name: p.replica for p in pairs}})
    if not linux_gateway:
        RouterOsTunnels(
            inventory,
            Host(inventory.gateway, gateway_address, helsinki, user=settings.routeros_user),
            {name: peer.keys for name, peer in peers.items()},
            list(settings.admin_cidrs),
            settings.routeros_private_interface,
        )
    witness = next((m.host for m in inventory.etcd if m.site == WITNESS), None)
    etcd_local = next((m.host for m in inventory.etcd if m.site == LOCAL), None)
    if witness is not None and etcd_local is not None and etcd_local.name in built:
        witness_address = helsinki.require_output("witnessPublicAddress")
        WitnessTunnel(
            inventory,
            {etcd_local.name: built[etcd_local.name], witness.name: Host(witness, witness_address, helsinki)},
            witness_address,
        )
    instances = [built[s.name] for s in api_instances(inventory)]
    entry_address: pulumi.Input[str]
    if settings.provider == "hcloud" and needs_load_balancer(inventory):
        entry_address = HcloudEntryPoint(
            "local-app-lb", settings.location, network.network_id, instances, settings.entry_domain
        ).address
    else:
        # One instance, or several on existing hosts: the entry host's own nginx (TLS, HTTP/2).
        entry_address = NginxEntryPoint(
            "local-app-entry", inventory, instances[0], settings.entry_domain, settings.acme_email
        ).address
    if settings.provider == "hcloud":
        Firewalls("local", firewall_plans(inventory, LOCAL, settings.admin_cidrs), _server_ids(built))
    outputs: dict[str, Any] = {}
    if inventory.standby_entry is not None and settings.dns_zone is not None:
        dns = EntryDns(settings.dns_zone, settings.entry_hostname)
        WarmStandby(
            inventory,
            dns,
            entry_address,
            helsinki.require_output("standbyEntryAddress"),
            helsinki.require_output("witnessPublicAddress") if witness is not None else None,
            gateway_address,
            secrets,
            settings.acme_email,
            zone_import_id=settings.dns_zone_import if settings.dns_zone_import != NEW else None,
        )
        outputs["entryRecord"] = dns.fqdn
    # How `unde-infra ops` reaches the local servers without a public address (docs/operations.md).
    jump = local_hosts.jump if isinstance(local_hosts, HcloudHosts) else None
    return {
        **outputs,
        "sshJump": pulumi.Output.from_input(jump).apply(lambda a: f"root@{a}:22" if a else ""),
        "entryAddress": entry_address,
        "shards": [
            {"shard": s.index, "primary": str(s.primary.ip), "replica": str(s.replica.ip)} for s in inventory.shards
        ],
        "tunnels": {
            server.name: {"interface": t.interface, "local": str(t.local_ip), "helsinki": str(t.helsinki_ip)}
            for server, t in inventory.tunnels()
        },
        "gatewayEndpoint": helsinki.require_output("gatewayPublicAddress"),
    }


@dataclass
class BaseDelivery:
    """Every server's base files and packages (node_exporter, private routes, the install
    script), also on servers that were adopted and whose user data never runs again; and the
    exporters its services need. Delivered as each host is made (`on_new_host`), so that the
    base is first in the host's turn; `rest` delivers it to hosts no provider made."""

    inventory: Inventory
    done: set[str] = field(default_factory=set)
    # What a server without a public address waits for before its base installs anything: the
    # gateway's NAT, its only way to the archive (the helsinki stack; empty where the gateway
    # is another stack's, which deploys first).
    egress: list[pulumi.Resource] = field(default_factory=list)

    def __call__(self, host: Host) -> None:
        if host.server.name in self.done:
            return
        self.done.add(host.server.name)
        inventory = self.inventory
        files = {path: RemoteFile(text, mode=mode) for path, (text, mode) in day2_base_files(host.server, inventory).items()}
        owner = host.owner or host.resource
        assert owner is not None
        private = host.jump is not None and host.server.task != "gateway"
        deliver(host, files, owner, apply=base_setup_script(host.server, inventory), apply_label="base",
                depends_on=list(self.egress) if private else None)
        if host.server.task in MEK_TASKS:
            # Whichever stack builds a key holder watches the key: it is in RAM only.
            presence = {path: RemoteFile(text, mode="0755" if path == MEK_PRESENCE_SCRIPT else "0644")
                        for path, text in mek_presence_files().items()}
            deliver(host, presence, owner, apply=mek_presence_setup(), apply_label="mek-presence")
        deliver_exporters(host, owner)
        if needs_standalone_postgres_exporter(host.server):
            deliver_standalone_backups(host, inventory, owner)

    def rest(self, hosts: dict[str, Host]) -> None:
        for host in hosts.values():
            self(host)


def _deliver_etcd_member(component: AgentHost | BatchHost, inventory: Inventory) -> None:
    files = etcd_files(component.host.server, inventory)
    if files:
        deliver(component.host, files, component, apply=ETCD_MEMBER_SETUP.command, apply_label="etcd")


def _server_ids(hosts: dict[str, Host]) -> dict[str, pulumi.Output[int]]:
    return {name: host.server_id() for name, host in hosts.items()}


def build_site(settings: StackSettings, inventory: Inventory) -> dict[str, Any]:
    if settings.site == HELSINKI:
        return build_helsinki(settings, inventory)
    return build_local(settings, inventory)

