"""What a real run of a stack needs, checked before it starts: one list of blockers, each with
where it is, what is wrong and the command that fixes it.

The offline preview can stand in for what is missing (an import id, a chat id, a zone) and still
show what the program registers; a real run cannot. So the preview reports every blocker with
what it stood in, `unde-infra validate --real-run` exits non-zero on any, the Makefile's
real-run targets run that first, and the program itself refuses to start under the Pulumi CLI
while one is left (`enforce`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from . import validators
from .availability import type_location_problems
from .errors import PreviewInputError, Problem, Problems, TopologyError
from .model import HELSINKI, ROOT, Inventory, load_topology
from .settings import (
    HCLOUD_TOKEN_ENV,
    MAX_SHARDS,
    PROVIDER_SECRET_KEYS,
    StackSettings,
    check_against_inventory,
    entry_settings_missing,
    missing_import_ids,
    needs_entry_dns,
    needs_telegram_chat,
    parse_settings,
    read_stack_config,
    required_secrets,
    secret_shape_problem,
)

# Address ranges reserved for documentation, each with the RFC that reserves it: no admin's
# traffic ever comes from them.
DOCUMENTATION_RANGES = {
    ip_network("192.0.2.0/24"): "RFC 5737",
    ip_network("198.51.100.0/24"): "RFC 5737",
    ip_network("203.0.113.0/24"): "RFC 5737",
    ip_network("2001:db8::/32"): "RFC 3849",
    ip_network("3fff::/20"): "RFC 9637",
}
# An SSH public key's comment that says it is not one yet.
PLACEHOLDER_COMMENT = re.compile(r"replace|placeholder|example|changeme|your[-_ ]", re.IGNORECASE)
# Key material published in this repository's own examples: whoever holds its private half is not
# the team.
PUBLISHED_KEYS = frozenset({
    "AAAAC3NzaC1lZDI1NTE5AAAAIORkYphJTQaA5oa5NWYvn3Jft7jEpcGL1B+9AP9VTTtd",
})


@dataclass(frozen=True)
class Blocker:
    path: str  # as the stack config or the topology names it: sshKeys[0], servers.scraper.inbound
    message: str
    fix: str  # the command or the edit that removes it
    stand_in: str = ""  # what the offline preview used instead, if it had to
    # Blockers of one kind (every server's import id, ...) share this, so a summary can say them
    # in one line: "<group>: N (name, name, ...)".
    group: str = ""
    subject: str = ""

    def where(self, stack: str) -> str:
        """Its path with the file it is in."""
        return self.path if self.path.startswith("topology:") else f"Pulumi.{stack}.yaml: {self.path}"

    def line(self, stack: str) -> str:
        return f"{self.where(stack)}: {self.message}; fix: {self.fix}"


def blockers(settings: StackSettings, inventory: Inventory, config_keys: set[str] | None = None) -> list[Blocker]:
    """Everything that keeps `settings.stack` from a real run. `config_keys`: the keys its stack
    config sets (prefixed provider keys like hcloud:token included), for the secrets that must be
    there; None where the caller cannot know them (the program under the CLI reads them itself)."""
    stack = settings.stack
    found: list[Blocker] = []
    found += _ssh_key_blockers(settings)
    found += _admin_network_blockers(settings)
    found += _adoption_blockers(settings, inventory)
    found += _inbound_blockers(settings, inventory)
    if needs_telegram_chat(settings, inventory) and settings.telegram_chat_id == 0:
        found.append(Blocker(
            "telegramChatId", "the Telegram chat that receives the alerts is not set (Alertmanager refuses a "
            "telegram_config without chat_id)", f"pulumi config set telegramChatId -100... -s {stack}"))
    if needs_entry_dns(settings, inventory) and settings.dns_zone is None:
        found.append(Blocker(
            "dnsZone", "the DNS zone of the public entry point is not set (the entry fails over by moving its "
            "record)", f"pulumi config set dnsZone unde.app -s {stack}"))
    for key, (what, fix) in entry_settings_missing(settings, inventory).items():
        found.append(Blocker(key, f"{what} is not set", fix))
    if config_keys is not None:
        for key in required_secrets(settings, inventory):
            if key in config_keys or (key == "hcloud:token" and os.environ.get(HCLOUD_TOKEN_ENV)):
                continue
            kind = "provider secret" if key in PROVIDER_SECRET_KEYS else "secret"
            found.append(Blocker(key, f"the {kind} {key} is not set", f"pulumi config set --secret {key} <value> -s {stack}",
                                 group="secrets not set", subject=key))
    return found


def _ssh_key_blockers(settings: StackSettings) -> list[Blocker]:
    found = []
    for i, key in enumerate(settings.ssh_keys):
        _kind, material, *comment = key.split(maxsplit=2)
        if material in PUBLISHED_KEYS or (comment and PLACEHOLDER_COMMENT.search(comment[0])):
            found.append(Blocker(
                f"sshKeys[{i}]",
                f"a placeholder, not an admin's key ({' '.join(comment) or 'published in this repository'}): the "
                "servers would accept only its holder",
                f"pulumi config set --path 'sshKeys[{i}]' \"$(cat ~/.ssh/id_ed25519.pub)\" -s {settings.stack}"))
    return found


def _admin_network_blockers(settings: StackSettings) -> list[Blocker]:
    found = []
    for i, net in enumerate(settings.admin_cidrs):
        why = _not_an_admin_source(net)
        if why:
            found.append(Blocker(
                f"adminCidrs[{i}]",
                f"{net} is {why}: the firewalls would admit SSH from nowhere the admins are, and the first run "
                "attaches them to every public server, locking the admins (and the delivery) out",
                f"pulumi config set --path 'adminCidrs[{i}]' <the team's VPN or office egress, e.g. its /32> -s "
                f"{settings.stack}"))
    return found


def _not_an_admin_source(net: IPv4Network | IPv6Network) -> str:
    for reserved, rfc in DOCUMENTATION_RANGES.items():
        if net.version == reserved.version and net.subnet_of(reserved):  # type: ignore[arg-type]
            return f"a documentation range ({rfc})"
    if not net.network_address.is_global:
        return "not a public range (hcloud firewalls see only traffic from the internet)"
    return ""


def _adoption_blockers(settings: StackSettings, inventory: Inventory) -> list[Blocker]:
    """What exists already must be adopted by its id; creating it a second time either fails
    half-way through a run or, worse, succeeds."""
    stack = settings.stack
    found = [
        Blocker(f"importIds.{name}", f"{name} runs already, so it is adopted, never created: its hcloud id is not set",
                f"pulumi config set --path 'importIds.{name}' <id> -s {stack}   # hcloud server describe {name}",
                stand_in="a stand-in id", group="importIds: running servers without their hcloud id", subject=name)
        for name in missing_import_ids(settings, inventory)
    ]
    adopts_servers = any(s.existing and s.dedicated is None for s in inventory.stack_servers(settings.site))
    if settings.site == HELSINKI and adopts_servers and settings.network_import_id is None:
        found.append(Blocker(
            "networkImport.id",
            "the running servers are on a network already: without its id the run creates a second network",
            f"pulumi config set --path 'networkImport.id' <id> -s {stack}   # hcloud network list; "
            "add networkImport.subnets (the subnets it has) too"))
    if settings.site == HELSINKI and adopts_servers:
        for i in range(len(settings.ssh_keys)):
            if i not in settings.ssh_key_import_ids and i not in settings.new_ssh_keys:
                found.append(Blocker(
                    f"sshKeyImportIds.{i}",
                    "the Hetzner project has servers already, so this key may be uploaded already (Hetzner refuses "
                    "a second copy half-way through the run): say which",
                    f"pulumi config set --path 'sshKeyImportIds.{i}' <id> -s {stack}   # hcloud ssh-key list; "
                    f"or <id> = new if it is not uploaded"))
    if needs_entry_dns(settings, inventory) and settings.dns_zone is not None and settings.dns_zone_import is None:
        found.append(Blocker(
            "dnsZoneImport",
            f"the zone {settings.dns_zone} may exist at Hetzner already (adopt it by its id) or not (the run creates "
            "it; then point the domain's NS records at Hetzner's): say which",
            f"pulumi config set dnsZoneImport <zone id> -s {stack}   # hcloud zone list; or `new`"))
    return found


def _inbound_blockers(settings: StackSettings, inventory: Inventory) -> list[Blocker]:
    return [
        Blocker(
            f"topology: servers.{s.name}.inbound",
            f"{s.name} runs today with a public interface and does not say what it serves publicly: the first run "
            "attaches a firewall that admits only SSH from adminCidrs (and its role's ports), stopping the rest",
            f"record it in config/topology.yaml, servers.{s.name}.inbound (from `hcloud firewall describe` or "
            "`ss -tlnp` on the server); `inbound: []` if it serves nothing",
            stand_in="nothing served but SSH",
            group="topology: servers.<name>.inbound: running servers that do not say what they serve publicly",
            subject=s.name)
        for s in inventory.stack_servers(settings.site)
        if s.existing and s.dedicated is None and s.has_public_interface and not s.inbound_declared
    ]


@dataclass
class CheckedStack:
    stack: str
    config: dict[str, Any]  # the stack config's keys, unprefixed for the project's own
    settings: StackSettings
    inventory: Inventory
    topology: Path
    blockers: list[Blocker]


def check_stacks(
    stacks: list[str],
    topology: Path | None,
    shards: int | None,
    project_dir: Path = ROOT,
    config_overrides: dict[str, Any] | None = None,
) -> list[CheckedStack]:
    """The topology, the policy configuration and every stack's settings, checked together (all
    problems at once, PreviewInputError), and each stack's blockers of a real run. `topology`,
    the operator's --topology, may be any file; the stack config's own `topology` must stay
    inside the project."""
    from policies.rules import load_policy_config

    if shards is not None:
        try:
            validators.bounded_int(shards, 1, MAX_SHARDS, "the shard count")
        except ValueError as exc:
            raise PreviewInputError(f"--shards: {exc}") from None
    load_policy_config()
    checked = []
    errors: list[str] = []
    for stack in stacks:
        config = {**read_stack_config(stack, project_dir), **(config_overrides or {})}
        if shards is not None:
            config["shards"] = shards
        problems = Problems()
        settings = parse_settings(stack, config, problems, project_dir=project_dir)
        if problems:
            errors.append(TopologyError(f"Pulumi.{stack}.yaml", problems.items).report())
            continue
        path = topology if topology is not None else settings.topology_path(project_dir)
        inventory = load_topology(path, shards=settings.shards)
        check_against_inventory(settings, inventory, problems)
        if problems:
            errors.append(TopologyError(f"Pulumi.{stack}.yaml", problems.items).report())
            continue
        # hcloud refuses a type where it is not sold only when `pulumi up` orders the server.
        unsold = [Problem(where, message) for where, message in type_location_problems(inventory, settings)]
        if unsold:
            errors.append(TopologyError(f"{path.name} (as the {stack} stack builds it, Pulumi.{stack}.yaml)", unsold).report())
            continue
        checked.append(CheckedStack(stack, config, settings, inventory, path, blockers(settings, inventory, set(config))))
    if errors:
        raise PreviewInputError("\n".join(errors))
    return checked


def summary_lines(found: list[Blocker], stack: str) -> list[str]:
    """The blockers as a person reads them at a glance: one line each, those of one group in one
    line (where its first one stands), without the fixes (`validate --real-run` gives each with
    its fix)."""
    entries: list[Blocker | list[Blocker]] = []
    groups: dict[str, list[Blocker]] = {}
    for blocker in found:
        if not blocker.group:
            entries.append(blocker)
        elif blocker.group in groups:
            groups[blocker.group].append(blocker)
        else:
            groups[blocker.group] = [blocker]
            entries.append(groups[blocker.group])
    lines = []
    for entry in entries:
        if isinstance(entry, Blocker):
            stood = f" [the preview stood in: {entry.stand_in}]" if entry.stand_in else ""
            lines.append(f"{entry.where(stack)}: {entry.message}{stood}")
            continue
        stand_ins = sorted({m.stand_in for m in entry if m.stand_in})
        shown_stand_ins = ", ".join(stand_ins) if len(stand_ins) <= 2 else f"{stand_ins[0]} .. {stand_ins[-1]}"
        stood = f" [the preview stood in: {shown_stand_ins}]" if stand_ins else ""
        lines.append(f"{entry[0].group}: {len(entry)} ({', '.join(m.subject for m in entry)}){stood}")
    return lines


# --------------------------------------------------------------------------------------------
# Enforcement in the program


_REPORTED_BY_PREVIEW: ContextVar[bool] = ContextVar("unde_infra_blockers_reported_by_preview", default=False)


@contextmanager
def reported_by_preview() -> Iterator[None]:
    """The offline preview reports the blockers itself (in its summary) and runs the program
    past them, to show what it would register; only that in-process runner sets this."""
    token = _REPORTED_BY_PREVIEW.set(True)
    try:
        yield
    finally:
        _REPORTED_BY_PREVIEW.reset(token)


def enforce(settings: StackSettings, inventory: Inventory) -> None:
    """Under the Pulumi CLI (preview or up), stop before anything is registered while a blocker
    is left: every one of them, `path: message; fix: ...`."""
    if _REPORTED_BY_PREVIEW.get():
        return
    found = blockers(settings, inventory)
    if found:
        raise TopologyError(
            f"Pulumi.{settings.stack}.yaml (not ready for a real run)",
            [Problem(b.path, f"{b.message}; fix: {b.fix}") for b in found],
        )


def secret_problems(values: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(key, problem) for key, value in sorted(values.items()) if (problem := secret_shape_problem(key, value))]
