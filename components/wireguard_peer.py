"""One local server's own WireGuard tunnel to helsinki-gw, with both ends' keys.

The local stack makes both keys and the preshared key of each tunnel (32 random bytes each, the
public halves derived by X25519) and configures both ends: the local server, and the tunnel's
own interface on helsinki-gw. The helsinki stack so never needs anything from the local stack,
and there is no cycle between the stacks."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import pulumi
import pulumi_random as random

from unde_infra.model import Inventory, Server
from unde_infra.naming import delivery_name
from unde_infra.render.monitoring import tunnel_collector_files
from unde_infra.render.wireguard import (
    ROUTEROS_SCRIPT_PATH,
    TunnelKeys,
    config_path,
    gateway_apply_command,
    gateway_tunnel_config,
    local_apply_command,
    local_tunnel_files,
    routeros_script,
    witness_files,
)
from unde_infra.wgkeys import private_key_from_bytes

from .base import UndeComponent
from .delivery import RemoteFile, deliver, secret_files
from .hosts import Host
from .remote_command import RemoteCommand, in_turn

SAMPLE_KEYS = TunnelKeys.generate()  # only to learn the rendered paths; never delivered
COLLECTOR_TIMER = "unde-vpn-tunnel-collector.timer"


@dataclass
class TunnelWiring:
    """What every tunnel of the local stack shares: the far end and how to reach it."""

    inventory: Inventory
    gateway: Host | None  # linux mode: each tunnel's interface on helsinki-gw is written with its peer
    endpoint_v4: pulumi.Input[str]
    # Local servers without a public IPv4 (the shards on hcloud) reach helsinki-gw over IPv6.
    endpoint_v6: pulumi.Input[str]
    private_servers_use_ipv6: bool

    def endpoint(self, server: Server) -> pulumi.Input[str]:
        return self.endpoint_v6 if self.private_servers_use_ipv6 and not server.public_ipv4 else self.endpoint_v4


def tunnel_keys(name: str, parent: pulumi.Resource) -> pulumi.Output[TunnelKeys]:
    """Both private keys and the preshared key of one tunnel, as Pulumi secrets."""
    parts = {
        part: random.RandomBytes(f"{name}-{part}", length=32, opts=pulumi.ResourceOptions(parent=parent)).base64
        for part in ("local-key", "remote-key", "preshared-key")
    }

    def build(values: dict[str, str]) -> TunnelKeys:
        return TunnelKeys(
            local_private=private_key_from_bytes(base64.b64decode(values["local-key"])),
            remote_private=private_key_from_bytes(base64.b64decode(values["remote-key"])),
            preshared=values["preshared-key"],
        )

    return pulumi.Output.secret(pulumi.Output.all(**parts).apply(build))


class WireGuardPeer(UndeComponent):
    TYPE = "unde:network:WireGuardPeer"

    def __init__(
        self, server: Server, host: Host, wiring: TunnelWiring, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        inventory, gateway = wiring.inventory, wiring.gateway
        if server.tunnel is None:
            raise ValueError(f"{server.name} has no tunnel in the topology")
        tunnel = server.tunnel
        super().__init__(f"{server.name}-{tunnel.interface}", opts)
        self.tunnel = tunnel
        self.keys = tunnel_keys(f"{server.name}-{tunnel.interface}", self)

        def render_local(args: list[Any]) -> dict[str, str]:
            return local_tunnel_files(server, inventory, args[0], endpoint_host=args[1])

        files = secret_files(
            render_local, pulumi.Output.all(self.keys, wiring.endpoint(server)), [SAMPLE_KEYS, "192.0.2.1"]
        )
        files.update(collector_files(server, inventory))
        deliver(host, files, self, apply=f"{local_apply_command([tunnel.interface])}\n{COLLECTOR_APPLY}")
        if gateway is not None:
            # The tunnel's own interface on helsinki-gw (linux mode; RouterOS gets one script).
            deliver(
                gateway,
                {
                    config_path(tunnel.interface): RemoteFile(
                        self.keys.apply(lambda keys: gateway_tunnel_config(server, inventory, keys)),
                        mode="0600",
                        secret=True,
                    )
                },
                self,
                apply=local_apply_command([tunnel.interface]),
                apply_label=tunnel.interface,
            )
        self.register_outputs(
            {
                "interface": tunnel.interface,
                "local_ip": str(tunnel.local_ip),
                "helsinki_ip": str(tunnel.helsinki_ip),
                "public_key": self.keys.apply(lambda keys: keys.local_public),
            }
        )


COLLECTOR_APPLY = f"systemctl daemon-reload && systemctl enable --now {COLLECTOR_TIMER}"


def collector_files(server: Server, inventory: Inventory) -> dict[str, RemoteFile]:
    """The node_exporter textfile collector of a server's tunnels (an executable script, units)."""
    return {
        path: RemoteFile(text, mode="0644" if path.startswith("/etc/systemd/") else "0755")
        for path, text in tunnel_collector_files(server, inventory).items()
    }


class RouterOsTunnels(UndeComponent):
    """Mode routeros: one RouterOS script with every tunnel, uploaded to the router and imported.
    RouterOS has no shell, so the script is copied (scp) and run with /import; it removes itself
    after the import because it holds private keys."""

    TYPE = "unde:network:RouterOsTunnels"

    def __init__(
        self,
        inventory: Inventory,
        router: Host,
        keys: dict[str, pulumi.Output[TunnelKeys]],
        admin_cidrs: list[IPv4Network | IPv6Network],
        private_interface: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        import pulumi_command as command

        super().__init__(router.server.name, opts)
        script: pulumi.Output[str] = pulumi.Output.secret(  # type: ignore[arg-type]
            pulumi.Output.all(**keys).apply(
                lambda by_server: routeros_script(inventory, by_server, admin_cidrs, private_interface)  # type: ignore[arg-type]
            )
        )
        # An upload is an SSH connection too: it waits for the router's turn like a command.
        upload = in_turn(router, lambda opts: command.remote.CopyToRemote(
            delivery_name(router.server.name, ROUTEROS_SCRIPT_PATH),
            connection=router.connection(),
            source=script.apply(pulumi.StringAsset),
            remote_path=ROUTEROS_SCRIPT_PATH.lstrip("/"),
            triggers=[script],
            opts=opts,
        ), self.child())
        RemoteCommand(
            f"{router.server.name}:apply:routeros",
            host=router,
            create=gateway_apply_command(inventory, "routeros"),
            triggers=[script],
            opts=self.child(depends_on=[upload]),
        )
        self.register_outputs({"tunnels": sorted(keys)})


class WitnessTunnel(UndeComponent):
    """The local etcd member's direct tunnel to the etcd witness, which does not pass through
    helsinki-gw: losing Helsinki leaves etcd-1 and the witness a quorum."""

    TYPE = "unde:network:WitnessTunnel"

    def __init__(
        self,
        inventory: Inventory,
        hosts: dict[str, Host],
        witness_endpoint: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("etcd-witness", opts)
        keys = tunnel_keys("etcd-witness", self)

        def render(args: list[Any]) -> dict[str, str]:
            return {
                f"{server}:{path}": text
                for server, files in witness_files(inventory, args[0], endpoint_host=args[1]).items()
                for path, text in files.items()
            }

        files = secret_files(render, pulumi.Output.all(keys, witness_endpoint), [SAMPLE_KEYS, "192.0.2.1"])
        for name, host in hosts.items():
            mine = {key.partition(":")[2]: spec for key, spec in files.items() if key.startswith(f"{name}:")}
            interfaces = [path.rsplit("/", 1)[1].removesuffix(".conf") for path in mine]
            deliver(host, mine, self, apply=local_apply_command(interfaces), apply_label="witness")
        self.register_outputs({"members": sorted(hosts)})
