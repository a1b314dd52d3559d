"""What the lab builds, read from an offline preview of both stacks: each server's release,
addresses and user data, the private networks with the routes the program registers, and the
remote commands of every server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from unde_infra.delivery_plan import PlannedCommand, plan_from_run
from unde_infra.model import LOCAL, ROOT, Inventory
from unde_infra.naming import REMOTE_COMMAND_TYPE
from unde_infra.offline import Record, unwrap_secrets
from unde_infra.preview import StackResult, prepare, run_stacks

from .network import LabHost, PrivateNetwork

SERVER_TYPE = "hcloud:index/server:Server"
ROUTE_TYPE = "hcloud:index/networkRoute:NetworkRoute"
NETWORK_TYPE = "hcloud:index/network:Network"
STACKS = ["helsinki", "local"]
# Config secrets the services parse as URLs: the offline placeholders are no URLs, and
# Alertmanager refuses its configuration over them. Names nobody resolves; nothing is sent.
LAB_SECRETS = {"slackWebhookUrl": "https://hooks.slack.unde-lab.invalid/services/lab",
              "heartbeatUrl": "https://heartbeat.unde-lab.invalid/ping/lab"}


# The lab builds the default topology plus a second shard that commits synchronously: a derived
# shard (its addresses and tunnel from the pools, not the plan's) is built for real, and every
# drill measures both durability modes under the same failure.
LAB_SHARDS = {"count": 2, "durability_overrides": {1: "sync"}}


def lab_topology(run_dir: Path) -> Path:
    """The default topology with the lab's shards, written into the run's directory."""
    topology = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text())
    topology["shards"].update(LAB_SHARDS)
    path = run_dir / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    return path


@dataclass
class LabPreview:
    results: list[StackResult]
    hosts: list[LabHost]
    networks: list[PrivateNetwork]
    # Each stack's commands, in the order the deploy pipeline runs the stacks.
    plans: list[tuple[str, list[PlannedCommand]]]

    @property
    def inventory(self) -> Inventory:
        return self.results[0].inventory


def run_preview(admin_key: str, topology: Path | None, config_overrides: dict[str, Any] | None = None) -> LabPreview:
    """Both stacks offline, as `make preview` runs them (of `topology`, else the project's), with
    the lab operator's key as the stacks' admin key (hcloud's ssh_keys and the admin user's
    authorized keys)."""
    overrides = {"sshKeys": [admin_key], **(config_overrides or {})}
    results = run_stacks(prepare(STACKS, topology, None, config_overrides=overrides), secret_values=LAB_SECRETS)
    return LabPreview(results, _hosts(results), _networks(results), _plans(results))


def _image(existing: bool) -> str:
    return "debian-12" if existing else "debian-13"


def _hosts(results: list[StackResult]) -> list[LabHost]:
    inventory = results[0].inventory
    records: dict[str, Record] = {}
    creator: dict[str, str] = {}
    for result in results:
        for record in result.run.records:
            if record.type == SERVER_TYPE:
                name = unwrap_secrets(record.inputs).get("name", record.name)
                records[name] = record
                creator[name] = result.run.stack
    targets = {c.server for result in results for c in plan_from_run(result.run).commands}
    hosts = []
    for name, server in inventory.servers.items():
        if name not in targets and name not in records:
            continue
        found = records.get(name)
        outputs = unwrap_secrets(found.outputs) if found else {}
        inputs = unwrap_secrets(found.inputs) if found else {}
        public4 = outputs.get("ipv4Address") or (str(server.public_address) if server.public_address else None)
        public6 = outputs.get("ipv6Address") if any(n.get("ipv6Enabled") for n in inputs.get("publicNets", [])) else None
        hosts.append(LabHost(
            name=name,
            image=_image(server.existing),
            network="sin" if server.site == LOCAL else "hel",
            private=str(server.ip),
            public4=public4 or None,
            public6=public6 or None,
            # An adopted server's user data never runs again (the provider ignores it).
            user_data=None if server.existing else inputs.get("userData"),
            stack="" if server.existing else creator.get(name, ""),
        ))
    return hosts


def _networks(results: list[StackResult]) -> list[PrivateNetwork]:
    networks: dict[str, PrivateNetwork] = {}
    routes: list[tuple[str, str]] = []
    for result in results:
        hub = "hel" if result.run.stack == "helsinki" else "sin"
        for record in result.run.records:
            inputs = unwrap_secrets(record.inputs)
            if record.type == NETWORK_TYPE and hub not in networks:
                networks[hub] = PrivateNetwork(hub, inputs["ipRange"], _first_host(inputs["ipRange"]))
            elif record.type == ROUTE_TYPE:
                routes.append((inputs["destination"], inputs["gateway"]))
    if "hel" in networks:
        networks["hel"].routes = routes
        # hcloud answers on the network's gateway (the topology's network.gateway).
        networks["hel"].gateway = str(results[0].inventory.network.gateway)
    return list(networks.values())


def _first_host(ip_range: str) -> str:
    import ipaddress

    return str(next(ipaddress.ip_network(ip_range).hosts()))


def _plans(results: list[StackResult]) -> list[tuple[str, list[PlannedCommand]]]:
    return [(result.run.stack, [c for c in plan_from_run(result.run).commands if c.type == REMOTE_COMMAND_TYPE])
            for result in results]
