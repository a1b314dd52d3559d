"""Where a server comes from: an hcloud server, or a host that already exists and is reached
over SSH. Components ask a `HostProvider` for a host and get the same thing back either way:
an address to reach it on and the resource that stands for it. A third provider is one more
class here.

All adoption rules live in `server_options`, so every server of every component is protected
the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud

from unde_infra.model import CREATED_OS, Server
from unde_infra.naming import REPLACE_FORCING_FIELDS, bootstrap_name
from unde_infra.render.escape import shell_word
from unde_infra.settings import StackSettings

from .remote_command import RemoteCommand

# The image of a server the program creates (docs/architecture.md, "Operating system and where packages come
# from"); an adopted server keeps the system it runs and is never re-imaged: `image` is in
# REPLACE_FORCING_FIELDS, ignored after creation, and an adopted server states its own system.
IMAGE = CREATED_OS
# An adopted server keeps its public network as it is: detaching a primary IP needs the server
# powered off, a step for a maintenance window, not for `pulumi up`. It keeps its type too: a
# resize powers it off, so it happens only where the topology opts in (servers.<name>.resize).
# And it keeps Hetzner's backups as they are: the program sets none, so the provider's default
# (false) would switch off backups someone enabled. And it stays in the placement group it is in:
# the program sends none for an adopted server, which would ask hcloud to take it out, and that
# needs the server powered off.
ADOPTED_ONLY_FIELDS = ["publicNets", "serverType", "backups", "placementGroupId"]
# Left alone during the adoption run (settings.adopting): whatever the servers have today. The
# provider's Read on import sets no keepDisk, shutdownBeforeDeletion or ignoreRemoteFirewallIds,
# while its Check gives the program's inputs their defaults (false), so an import would differ on
# them (config/provider-schemas/import-facts.yaml); the next run writes the defaults into the
# state, which changes nothing on the server.
ADOPTION_RUN_FIELDS = ["name", "serverType", "labels", "networks", "deleteProtection", "rebuildProtection", "backups",
                       "keepDisk", "shutdownBeforeDeletion", "ignoreRemoteFirewallIds"]


def server_options(
    server: Server,
    settings: StackSettings,
    parent: pulumi.Resource,
    replace_forcing: Sequence[str] = REPLACE_FORCING_FIELDS,
    **extra: object,
) -> pulumi.ResourceOptions:
    """Resource options of the resource that stands for `server`.

    Servers that exist already are adopted with their hcloud id (never created a second time);
    stateful servers are protected from deletion; no server is replaced by a changed
    bootstrap."""
    import_id = None
    if server.existing:
        import_id = settings.import_ids.get(server.name)
        if import_id is None:
            # check_against_inventory reports this before anything is registered; this guards a
            # caller that skipped it, so that a second server is never created.
            raise pulumi.RunError(f"{server.name} exists already and has no import id in importIds")
    return pulumi.ResourceOptions(
        parent=parent,
        import_=import_id,
        protect=server.existing or server.stateful,
        ignore_changes=list(replace_forcing) + _adopted_fields(server, settings, bool(replace_forcing)),
        **extra,  # type: ignore[arg-type]
    )


def _adopted_fields(server: Server, settings: StackSettings, is_server: bool) -> list[str]:
    if not (server.existing and is_server):
        return []
    kept = [f for f in ADOPTED_ONLY_FIELDS if not (f == "serverType" and server.resize)]
    during_adoption = [f for f in ADOPTION_RUN_FIELDS if f not in kept] if settings.adopting else []
    return kept + during_adoption


@dataclass
class Host:
    """A machine a component can deliver files to."""

    server: Server
    address: pulumi.Output[str]  # where SSH reaches it: its public address, or its private one via `jump`
    resource: pulumi.Resource | None  # None for a machine no resource of this stack stands for
    jump: pulumi.Input[str] | None = None  # a host with a public address on the same private network
    ipv6_address: pulumi.Output[str] | None = None
    owner: pulumi.Resource | None = None  # the component the host belongs to
    user: str = "root"
    port: int = 22
    # The address as text where it is known before any resource exists (a private address, an
    # existing host's): the commands' connections then carry it as a plain value.
    fixed_address: str | None = None
    # The system it runs (model.Server.os; an existing host's from its stack's hosts.<name>.os):
    # what its setup steps install from.
    os: str = CREATED_OS
    _connection: tuple[tuple[object, ...], command.remote.ConnectionArgs] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _login: tuple[command.remote.ConnectionArgs, pulumi.Output[command.remote.ConnectionArgs]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def connection(self) -> command.remote.ConnectionArgs:
        """How remote commands log in: built once per host (the key read once) and shared by
        all its commands, unless the address, the jump host or the login changed since."""
        login = (self.address, self.fixed_address, self.jump, self.user, self.port)
        if self._connection is None or any(a is not b for a, b in zip(self._connection[0], login, strict=True)):
            key = admin_private_key()
            proxy = (
                command.remote.ProxyConnectionArgs(host=self.jump, user="root", private_key=key)
                if self.jump is not None
                else None
            )
            connection = command.remote.ConnectionArgs(
                host=self.address if self.fixed_address is None else self.fixed_address,
                user=self.user,
                port=self.port,
                proxy=proxy,
                private_key=key,
            )
            self._connection = (login, connection)
        return self._connection[1]

    def login(self) -> pulumi.Output[command.remote.ConnectionArgs]:
        """The connection as one secret Output, unwrapped once and shared by the host's
        `RemoteCommand`s (the generated class would unwrap it anew for each)."""
        connection = self.connection()
        if self._login is None or self._login[0] is not connection:
            self._login = (connection, pulumi.Output.secret(connection))
        return self._login[1]

    @classmethod
    def at(cls, server: Server, address: str, resource: pulumi.Resource | None, **options: Any) -> Host:
        """A host reached at an address known in advance."""
        return cls(server, pulumi.Output.from_input(address), resource, fixed_address=address, **options)

    def server_id(self) -> pulumi.Output[int]:
        """The hcloud id of this host's server (hcloud ids are integers in the Python SDK)."""
        assert isinstance(self.resource, pulumi.CustomResource), f"{self.server.name} is no hcloud server"
        return self.resource.id.apply(int)

    def as_root(self, script: str) -> str:
        """`script` for this host's login: as is for root, through `sudo` for another user."""
        return script if self.user == "root" else f"sudo -n bash -c {shell_word(script)}"


def admin_private_key() -> pulumi.Output[str] | None:
    """The admin key remote commands log in with: the `sshPrivateKey` config secret when set (a CI
    runner), otherwise the operator's ssh-agent."""
    return pulumi.Config().get_secret("sshPrivateKey")


class TypeChooser(Protocol):
    def __call__(self, server: Server) -> str: ...


class PlacementChooser(Protocol):
    def __call__(self, server: Server) -> pulumi.Input[int] | None: ...


class HostProvider(Protocol):
    def host(self, server: Server, user_data: str, parent: pulumi.Resource) -> Host: ...


# Called with every host a provider makes, before the component that asked goes on: the site
# delivers the host's base there, so that the base (its packages, the users they create, the
# script every install goes through) is the first thing in the host's turn.
NewHostHook = Callable[[Host], None]


@dataclass
class HcloudHosts:
    """Servers on Hetzner Cloud in one location, optionally attached to a private network."""

    settings: StackSettings
    location: str
    ssh_key_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    network_id: pulumi.Input[int] | None = None
    provider: pulumi.ProviderResource | None = None
    depends_on: Sequence[pulumi.Resource] | None = None
    # Local servers on hcloud take the cheapest type of their location that fits their size.
    type_for: TypeChooser | None = None
    placement_for: PlacementChooser | None = None
    # Servers without a public IPv4 are reached through this host (helsinki-gw in Helsinki, the
    # entry host at the local site), over the private network.
    jump: pulumi.Input[str] | None = None
    on_new_host: NewHostHook | None = None

    def host(self, server: Server, user_data: str, parent: pulumi.Resource) -> Host:
        server_type = server.hcloud_type or (self.type_for(server) if self.type_for else None)
        if server_type is None:
            raise pulumi.RunError(f"{server.name}: no hcloud server type")
        networks = None
        if self.network_id is not None:
            networks = [hcloud.ServerNetworkArgs(network_id=self.network_id, ip=str(server.ip))]
        resource = hcloud.Server(
            server.name,
            name=server.name,
            server_type=server_type,
            # A created server gets IMAGE; an adopted one states the system it runs (the field is
            # ignored after creation either way, so it is never re-imaged).
            image=IMAGE if not server.existing else server.os,
            location=self.location,
            labels=server.labels,
            user_data=user_data,
            ssh_keys=self.ssh_key_ids,
            public_nets=[
                hcloud.ServerPublicNetArgs(ipv4_enabled=server.public_ipv4, ipv6_enabled=server.public_ipv6)
            ],
            networks=networks,
            # Adopted servers keep their placement: hcloud moves a server into a group only while
            # it is powered off.
            placement_group_id=self.placement_for(server) if self.placement_for and not server.existing else None,
            # hcloud requires both protections to have the same value.
            delete_protection=server.stateful or server.existing,
            rebuild_protection=server.stateful or server.existing,
            opts=server_options(server, self.settings, parent, provider=self.provider, depends_on=self.depends_on),
        )
        if server.public_ipv4:
            host = Host(server, resource.ipv4_address, resource, ipv6_address=resource.ipv6_address, owner=parent,
                        os=server.os)
        else:
            host = Host.at(server, str(server.ip), resource, jump=self.jump, ipv6_address=resource.ipv6_address,
                           owner=parent, os=server.os)
        if self.on_new_host is not None:
            self.on_new_host(host)
        return host



@dataclass
class ExistingHosts:
    """Hosts that already run (a local data centre, another cloud): reached over SSH and
    bootstrapped with the same cloud-config, run once by cloud-init's single-module mode."""

    settings: StackSettings
    on_new_host: NewHostHook | None = None

    def host(self, server: Server, user_data: str, parent: pulumi.Resource) -> Host:
        entry = self.settings.hosts[server.name]
        host = Host.at(server, entry.address, None, user=entry.user, port=entry.port, owner=parent, os=entry.os)
        # cloud-init re-runs the bootstrap from a NoCloud seed on the host itself; the seed is
        # written first, and the run is triggered again only when the bootstrap changes.
        # printf's own format (\n), one shell word: the command stays what it was before, so an
        # existing host is not bootstrapped again for nothing.
        meta_data = shell_word(f"instance-id: {server.name}\\nlocal-hostname: {server.name}\\n")
        seed = RemoteCommand(
            bootstrap_name(server.name),
            host=host,
            create=host.as_root(
                "set -eu; install -d -m 0755 /var/lib/cloud/seed/nocloud; "
                "cat > /var/lib/cloud/seed/nocloud/user-data; "
                f"printf {meta_data} > /var/lib/cloud/seed/nocloud/meta-data; "
                "cloud-init clean --logs && cloud-init init && cloud-init modules --mode=config "
                "&& cloud-init modules --mode=final"
            ),
            stdin=user_data,
            triggers=[user_data],
            opts=server_options(server, self.settings, parent, replace_forcing=[]),
        )
        host.resource = seed
        if self.on_new_host is not None:
            self.on_new_host(host)
        return host
