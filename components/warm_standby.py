"""What the local stack gives SPEC scenario 2's warm standby in Helsinki.

The helsinki stack builds the standby servers (standby-api, standby-orchestrator) like any other
Helsinki server. Everything that needs a fact only the local stack has lives here, so that the
helsinki stack never reads the local stack's outputs:

* the public entry's DNS zone and record (the record's value is the local entry's address), in
  Hetzner's DNS through a provider of its own: a token that can touch only DNS sits on the
  standby entry point, which faces the internet, so the zone belongs in a Hetzner project of its
  own (`dnsApiToken`);
* the failover watcher on the standby entry point (decider) and on the etcd witness (observer):
  its parameters hold the local entry's address and the standby's (read from helsinki);
* the standby entry point's nginx and TLS (render/entry.py, as on the local entry, in front of
  standby-api's own FastAPI): it serves the entry's name, so its certificate is the local
  stack's business too, obtained by DNS-01 through the zone (the name reaches it only after a
  failover, so HTTP-01 cannot) with the watcher's token;
* the standby orchestrator's secrets (the Master Encryption Key, the shard credentials), which
  the local stack generates.
"""

from __future__ import annotations

from functools import partial

import pulumi
import pulumi_hcloud as hcloud

from unde_infra import timings
from unde_infra.model import STANDBY_ORCHESTRATOR_TASK, Inventory, Server
from unde_infra.render.entry import DnsChallenge, entry_files, entry_setup_command
from unde_infra.render.entry_failover import (
    DECIDER,
    EXECUTABLES,
    OBSERVER,
    RECORD_TYPE,
    TOKEN_PATH,
    EntryDns,
    acme_hook_command,
    decider,
    observer,
    watcher_apply,
    watcher_files,
)

from .base import UndeComponent
from .delivery import RemoteFile, deliver, pick
from .hosts import Host
from .secrets import LocalSecrets

LABELS = {"managed-by": "unde-infra"}
# Only for working out the file paths before the addresses are known.
_SAMPLE_ADDRESS = "192.0.2.1"


class WarmStandby(UndeComponent):
    TYPE = "unde:local:WarmStandby"

    def __init__(
        self,
        inventory: Inventory,
        dns: EntryDns,
        entry_address: pulumi.Input[str],
        standby_address: pulumi.Input[str],
        witness_address: pulumi.Input[str] | None,
        gateway_address: pulumi.Input[str],
        secrets: LocalSecrets,
        acme_email: str,
        opts: pulumi.ResourceOptions | None = None,
        zone_import_id: str | None = None,
    ) -> None:
        super().__init__("warm-standby", opts)
        token = pulumi.Config().require_secret("dnsApiToken")
        provider = hcloud.Provider("dns", token=token, opts=self.child())
        # The zone may hold records the team adds by hand: never deleted by the program.
        zone = hcloud.Zone(
            "entry-zone", name=dns.zone, mode="primary", delete_protection=True, labels=LABELS,
            # A zone that exists at Hetzner already is adopted (dnsZoneImport) with the labels it has.
            opts=self.child(provider=provider, protect=True, import_=zone_import_id,
                            ignore_changes=["labels"] if zone_import_id else None),
        )
        # The program sets the record once, at the local entry; from then on the watcher owns its
        # value (it moves it to Helsinki and back), so a `pulumi up` never moves users. A new
        # local entry address reaches the record through the watcher's parameters.
        self.record = hcloud.ZoneRrset(
            "entry-record", zone=zone.name, name=dns.hostname, type=RECORD_TYPE,
            ttl=timings.ENTRY_RECORD_TTL_SECONDS,
            records=[hcloud.ZoneRrsetRecordArgs(value=entry_address, comment="local entry; moved by unde-entry-failover")],
            labels=LABELS,
            opts=self.child(provider=provider, ignore_changes=["records"]),
        )
        addresses = pulumi.Output.all(pulumi.Output.from_input(entry_address), pulumi.Output.from_input(standby_address))
        vantage_points: list[tuple[str, Server, pulumi.Input[str]]] = []
        standby_entry = decider(inventory)
        if standby_entry is not None:
            vantage_points.append((DECIDER, standby_entry, standby_address))
        witness = observer(inventory)
        if witness is not None and witness_address is not None:
            vantage_points.append((OBSERVER, witness, witness_address))
        for role, server, address in vantage_points:
            render = partial(_render, role=role, server=server, inventory=inventory, dns=dns)
            rendered = addresses.apply(render)
            files = {
                path: RemoteFile(pick(rendered, path), mode="0755" if path in EXECUTABLES else "0644")
                for path in render([_SAMPLE_ADDRESS, _SAMPLE_ADDRESS])
            }
            if role == DECIDER:
                files[TOKEN_PATH] = RemoteFile(token.apply(lambda value: value + "\n"), mode="0600", secret=True)
            host = Host(server, pulumi.Output.from_input(address), None)
            written = deliver(host, files, self, apply=watcher_apply(role), apply_label="entry-failover",
                              depends_on=[self.record])
            if role == DECIDER:
                # The entry point itself, once the DNS-01 hook and its token are there.
                challenge = DnsChallenge(acme_hook_command("auth"), acme_hook_command("cleanup"))
                entry = {
                    path: RemoteFile(f.content, mode=f.mode)
                    for path, f in entry_files(inventory, dns.fqdn, acme_email, api_servers=[server],
                                               dns_challenge=challenge).items()
                }
                deliver(host, entry, self, apply=entry_setup_command(), apply_label="entry", depends_on=written)
        for server in inventory.servers.values():
            if server.task == STANDBY_ORCHESTRATOR_TASK:
                # No public SSH needed: reached on its private address through helsinki-gw.
                host = Host(server, pulumi.Output.from_input(str(server.ip)), None, jump=gateway_address)
                deliver(host, secrets.files_for(server), self, apply_label="secrets")
        self.register_outputs({"entryRecord": dns.fqdn})


def _render(addresses: list[str], *, role: str, server: Server, inventory: Inventory, dns: EntryDns) -> dict[str, str]:
    local_address, standby_address = addresses
    return watcher_files(role, server, inventory, dns, local_address, standby_address)
