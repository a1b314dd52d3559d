"""The rules of the plan, as plain functions over a neutral view of a stack's resources.

The same functions run in `pulumi preview --policy-pack policies` (policies/__main__.py wraps
them in a PolicyPack) and in the offline preview (`unde-infra preview`), so a rule lives in one
place. Each rule takes every resource of the stack and the context (inventory, policy config)
and returns its violations."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unde_infra import known
from unde_infra.config_files import add_validation_problems, join_path, read_config
from unde_infra.errors import Problems, shown
from unde_infra.firewall import ANYWHERE, HTTP_PORT, HTTPS_PORT, SSH_PORT, allows, as_rule, covers, wireguard_port_range
from unde_infra.firewall import Rule as FirewallRule
from unde_infra.known import MONITORING
from unde_infra.limits import size_over_limit
from unde_infra.model import KNOWN_SITES, LOCAL, MIN_ETCD_MEMBERS, ROOT, Inventory, colocated_tasks, stack_of
from unde_infra.naming import (
    REMOTE_COMMAND_TYPE,
    REPLACE_FORCING_FIELDS,
    SERVER_TYPE,
    bootstrapped_server,
    delivered_file,
)
from unde_infra.schema import FREE_TEXT, Size
from unde_infra.validators import ServerName

POLICY_CONFIG = ROOT / "config" / "policy.yaml"
FIREWALL = "hcloud:index/firewall:Firewall"
WIREGUARD_PEER = "unde:network:WireGuardPeer"
MANDATORY, ADVISORY, DISABLED = "mandatory", "advisory", "disabled"
# Text that gives a secret away wherever it appears in user data.
SECRET_MARKERS = ("PrivateKey", "PresharedKey", "PASSWORD=", "password:", "BEGIN PRIVATE KEY", "BEGIN OPENSSH PRIVATE KEY")


@dataclass(frozen=True)
class ResourceView:
    type: str
    name: str
    urn: str
    inputs: Mapping[str, Any]
    protect: bool = False
    ignore_changes: tuple[str, ...] = ()
    import_id: str | None = None
    parent: str | None = None
    secret_inputs: frozenset[str] = frozenset()
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exception_:
    host: str
    task: str
    reason: str


@dataclass(frozen=True)
class PolicyConfig:
    local_limit: Size
    exceptions: tuple[Exception_, ...]
    entry_point_tasks: frozenset[str]
    tunnel_endpoint_tasks: frozenset[str]
    tunnel_endpoint_sites: frozenset[str]
    stateful_tasks: frozenset[str]
    ssh_max_prefix: int
    enforcement: Mapping[str, str] = field(default_factory=dict)
    ssh_max_prefix6: int = 32
    etcd_min_members: int = MIN_ETCD_MEMBERS


# The hard rules. config/policy.yaml may tighten them, never loosen them: an attempt is an error
# of policy.yaml (exit 2), so a merge request cannot switch a rule off to let a change through.
HARD_LOCAL_LIMIT = Size(vcpu=16, ram_gb=32)  # SPEC: at most 16 vCPU / 32 GB per local server
HARD_SSH_MAX_PREFIX = {4: 16, 6: 32}  # SSH from a wider network is SSH from the internet
HARD_ETCD_MIN_MEMBERS = MIN_ETCD_MEMBERS


class _PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ExceptionSpec(_PolicyModel):
    host: ServerName = Field(description="The server that runs a second task.")
    task: str = Field(description="The second task (a known task).")
    reason: str = Field(min_length=1, max_length=FREE_TEXT, description="Why, one line, for the reviewer.")


Level = Literal["mandatory", "advisory", "disabled"]


class PolicyFile(_PolicyModel):
    local_limit: Size = Field(
        description="The largest local server (checked on hcloud types by their specs and on existing hosts by "
                    "their declared size): at most SPEC's 16 vCPU / 32 GB.")
    exceptions: list[ExceptionSpec] = Field(
        default=[],
        description="One server, one task: a server may run a second task only when it is listed here with a "
                    "reason (co-location is granted here, not by the topology, so that a topology edit cannot grant "
                    "itself an exception).")
    entry_point_tasks: list[str] = Field(
        description="Tasks whose servers may take HTTPS (and HTTP, for ACME's challenge and the redirect) from the "
                    "internet. Never a data task.")
    tunnel_endpoint_tasks: list[str] = Field(
        description="Tasks whose servers may take WireGuard from the internet. Never a data task.")
    tunnel_endpoint_sites: list[str] = Field(
        default=[], description="Sites whose servers may take WireGuard from the internet (the witness's direct tunnel).")
    stateful_tasks: list[str] = Field(
        description="Tasks whose servers hold state: protected in Pulumi and by hcloud, never replaced. May add "
                    "tasks, never drop one that holds state (unde_infra/known.py), so a topology edit that stops "
                    "marking one stateful is caught.")
    ssh_max_prefix: int = Field(
        ge=0, le=32,
        description="The widest IPv4 network SSH may come from (an admin CIDR wider than this is \"the "
                    "internet\"): at least /16.")
    ssh_max_prefix_ipv6: int = Field(
        default=HARD_SSH_MAX_PREFIX[6], ge=0, le=128,
        description="The same for IPv6 admin CIDRs: at least /32.")
    etcd_min_members: int = Field(
        default=HARD_ETCD_MIN_MEMBERS, ge=0, le=9, description="The fewest etcd members: at least 3.")
    enforcement: dict[str, Level] = Field(
        default={},
        description="Enforcement per rule, by name (below): mandatory (fails the preview, exit 1), advisory "
                    "(reported), disabled. A mandatory rule stays mandatory; an advisory one may be made mandatory.")


def load_policy_config(path: Path | None = None) -> PolicyConfig:
    """config/policy.yaml, checked by its schema and against the hard rules; every problem is
    reported at once (TopologyError, path: message)."""
    path = path or POLICY_CONFIG
    problems = Problems()
    data = read_config(path, problems)
    problems.raise_if_any(str(path))
    try:
        spec = PolicyFile.model_validate(data)
    except ValidationError as exc:
        add_validation_problems(problems, "", exc)
        problems.raise_if_any(str(path))
        raise  # unreachable: raise_if_any raised
    _check_hard_rules(spec, problems)
    problems.raise_if_any(str(path))
    return PolicyConfig(
        local_limit=spec.local_limit,
        exceptions=tuple(Exception_(e.host, e.task, e.reason) for e in spec.exceptions),
        entry_point_tasks=frozenset(spec.entry_point_tasks),
        tunnel_endpoint_tasks=frozenset(spec.tunnel_endpoint_tasks),
        tunnel_endpoint_sites=frozenset(spec.tunnel_endpoint_sites),
        stateful_tasks=frozenset(spec.stateful_tasks),
        ssh_max_prefix=spec.ssh_max_prefix,
        enforcement=dict(spec.enforcement),
        ssh_max_prefix6=spec.ssh_max_prefix_ipv6,
        etcd_min_members=spec.etcd_min_members,
    )


def _check_hard_rules(spec: PolicyFile, problems: Problems) -> None:
    over = size_over_limit(spec.local_limit.vcpu, spec.local_limit.ram_gb, HARD_LOCAL_LIMIT)
    if over:
        problems.add("local_limit", f"may tighten SPEC's {HARD_LOCAL_LIMIT.vcpu} vCPU / {HARD_LOCAL_LIMIT.ram_gb:g} GB, never loosen it: {over}")
    for key, version in (("ssh_max_prefix", 4), ("ssh_max_prefix_ipv6", 6)):
        value = getattr(spec, key)
        if value < HARD_SSH_MAX_PREFIX[version]:
            problems.add(key, f"/{value} lets SSH come from the internet; at most as wide as /{HARD_SSH_MAX_PREFIX[version]}")
    if spec.etcd_min_members < HARD_ETCD_MIN_MEMBERS:
        problems.add("etcd_min_members", f"an etcd quorum needs at least {HARD_ETCD_MIN_MEMBERS} members")
    for key in ("entry_point_tasks", "tunnel_endpoint_tasks", "stateful_tasks"):
        for i, task in enumerate(getattr(spec, key)):
            if task not in known.KNOWN_TASKS:
                problems.add(f"{key}[{i}]", f"unknown task {shown(task)}")
            elif key != "stateful_tasks" and task in known.DATA_TASKS:
                problems.add(f"{key}[{i}]", f"{task} holds data: data servers are never open to the internet")
    for i, site in enumerate(spec.tunnel_endpoint_sites):
        if site not in KNOWN_SITES:
            problems.add(f"tunnel_endpoint_sites[{i}]", f"unknown site {shown(site)}")
    missing = sorted(known.STATEFUL_TASKS - set(spec.stateful_tasks))
    if missing:
        problems.add("stateful_tasks", f"may add tasks, never drop one that holds state: {', '.join(missing)} must stay")
    for i, exception in enumerate(spec.exceptions):
        if exception.task not in known.KNOWN_TASKS:
            problems.add(f"exceptions[{i}].task", f"unknown task {shown(exception.task)}")
    rules = {rule.name: rule for rule in RULES}
    for name, level in spec.enforcement.items():
        rule = rules.get(name)
        if rule is None:
            problems.add(join_path("enforcement", name), f"unknown rule (known: {', '.join(sorted(rules))})")
        elif rule.enforcement == MANDATORY and level != MANDATORY:
            problems.add(join_path("enforcement", name), f"a mandatory rule stays mandatory (got {level}): it may not be loosened")


@dataclass(frozen=True)
class Context:
    stack: str
    inventory: Inventory
    config: PolicyConfig
    admin_cidrs: tuple[str, ...]
    # The stack config's importIds: the record of every server this stack adopted.
    import_ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    policy: str
    enforcement: str
    urn: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"policy": self.policy, "enforcement": self.enforcement, "urn": self.urn, "message": self.message}


RuleFunction = Callable[[list[ResourceView], Context], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    enforcement: str
    check: RuleFunction


# --------------------------------------------------------------------------------------------
# Helpers over the view


def servers(resources: list[ResourceView]) -> list[ResourceView]:
    return [r for r in resources if r.type == SERVER_TYPE]


def server_name(resource: ResourceView) -> str:
    return str(resource.inputs.get("name") or resource.name)


def bootstrapped_hosts(resources: list[ResourceView]) -> list[tuple[str, ResourceView]]:
    """Existing hosts: the bootstrap command of each (see components/hosts.py)."""
    found = [(bootstrapped_server(r.type, r.name), r) for r in resources]
    return [(name, r) for name, r in found if name is not None]


def labels(resource: ResourceView) -> Mapping[str, str]:
    return resource.inputs.get("labels") or {}


def has_public_ipv4(resource: ResourceView) -> bool:
    nets = resource.inputs.get("publicNets") or [{}]
    return any(net.get("ipv4Enabled", True) for net in nets)


# --------------------------------------------------------------------------------------------
# Mandatory rules


def local_server_size(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    types = ctx.inventory.server_types
    for r in servers(resources):
        if labels(r).get("site") != LOCAL:
            continue
        kind = str(r.inputs.get("serverType"))
        spec = types.get(kind)
        if spec is None:
            yield r.urn, f"{server_name(r)}: unknown server type {kind!r}, its size cannot be checked"
            continue
        over = size_over_limit(spec.vcpu, spec.ram_gb, ctx.config.local_limit)
        if over:
            yield r.urn, f"{server_name(r)}: type {kind} ({spec.vcpu} vCPU / {spec.ram_gb:g} GB) is {over}"
    for name, r in bootstrapped_hosts(resources):
        server = ctx.inventory.servers.get(name)
        if server is None:
            yield r.urn, f"{name}: existing host not in the topology, its size is unknown"
            continue
        over = size_over_limit(server.vcpu, server.ram_gb, ctx.config.local_limit)
        if over:
            yield r.urn, f"{name}: declared {server.vcpu} vCPU / {server.ram_gb:g} GB is {over}"


def one_server_one_task(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    known = set(ctx.inventory.tasks)
    for r in servers(resources):
        task = labels(r).get("task", "")
        if not task:
            yield r.urn, f"{server_name(r)}: no task label; every server has exactly one task"
        elif task not in known:
            yield r.urn, f"{server_name(r)}: task label {task!r} is not one known task (merged tasks?)"
    allowed = {(e.host, e.task) for e in ctx.config.exceptions}
    by_name = {server_name(r): r for r in servers(resources)}
    for host, extra in colocated_tasks(ctx.inventory).items():
        if host not in by_name:
            continue  # built by the other stack
        for task in extra:
            if (host, task) not in allowed:
                yield by_name[host].urn, (
                    f"{host}: runs {task} beside its own task {ctx.inventory.servers[host].task}; "
                    "list it under exceptions in config/policy.yaml with a reason, or give it a server"
                )


def no_public_ipv4_on_data_servers(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    data_tasks = {name for name, task in ctx.inventory.tasks.items() if task.data}
    for r in servers(resources):
        task = labels(r).get("task")
        explicitly_public = ctx.inventory.servers.get(server_name(r))
        if task in data_tasks and has_public_ipv4(r):
            if explicitly_public is not None and explicitly_public.public_address is not None:
                continue  # an existing data server the topology declares public, on purpose
            yield r.urn, f"{server_name(r)}: data server ({task}) with a public IPv4 address"


def public_ingress(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    wireguard = wireguard_port_range(ctx.inventory)
    kept = _kept_inbound_rules(resources, ctx)
    for r in resources:
        if r.type != FIREWALL:
            continue
        for i, rule in enumerate(r.inputs.get("rules") or []):
            if (r.urn, i) in kept:
                continue
            sources = set(rule.get("sourceIps") or [])
            if rule.get("direction", "in") != "in" or not sources & set(ANYWHERE):
                continue
            proto, port = rule.get("protocol"), rule.get("port")
            if proto == "icmp":
                continue
            if proto == "tcp" and port in (str(HTTPS_PORT), str(HTTP_PORT)):
                continue
            if (proto, port) == ("udp", wireguard):
                continue
            yield r.urn, f"{r.inputs.get('name', r.name)}: {proto} {port or 'any'} open to the internet"
    attached = _attachments(resources)
    data_servers = {s.name for s in ctx.inventory.servers.values() if s.data}
    for firewall, names in attached.values():
        for rule in firewall.inputs.get("rules") or []:
            if rule.get("direction", "in") == "in" and rule.get("protocol") != "icmp" and set(rule.get("sourceIps") or []) & set(ANYWHERE):
                for name in sorted(names & data_servers):
                    yield firewall.urn, (
                        f"{name} holds data and is open to the internet ({rule.get('protocol')} {rule.get('port') or 'any'}): "
                        "data servers are never public"
                    )
    cfg = ctx.config
    entry = {s.name for s in ctx.inventory.servers.values() if s.task in cfg.entry_point_tasks}
    endpoints = {
        s.name
        for s in ctx.inventory.servers.values()
        if s.task in cfg.tunnel_endpoint_tasks or s.site in cfg.tunnel_endpoint_sites
    }
    for firewall, names in attached.values():
        for i, rule in enumerate(firewall.inputs.get("rules") or []):
            if (firewall.urn, i) in kept or not set(rule.get("sourceIps") or []) & set(ANYWHERE):
                continue
            port = (rule.get("protocol"), rule.get("port"))
            if port in (("tcp", str(HTTPS_PORT)), ("tcp", str(HTTP_PORT))):
                label = "HTTPS" if port[1] == str(HTTPS_PORT) else "HTTP (ACME)"
                for name in sorted(names - entry):
                    yield firewall.urn, f"{label} open on {name}, which is not an entry point"
            if port == ("udp", wireguard):
                for name in sorted(names - endpoints):
                    yield firewall.urn, f"WireGuard open on {name}, which is not a tunnel endpoint"


def _plan_rule(rule: Mapping[str, Any]) -> FirewallRule:
    return FirewallRule(str(rule.get("protocol")), rule.get("port"), tuple(rule.get("sourceIps") or ()),
                        str(rule.get("description") or ""))


def _kept_inbound_rules(resources: list[ResourceView], ctx: Context) -> set[tuple[str, int]]:
    """(firewall urn, rule index) of the rules that keep open no more than what every server they
    are attached to declares it serves today (servers.<name>.inbound, not closed)."""
    kept = set()
    for firewall, names in _attachments(resources).values():
        declared = [ctx.inventory.servers[n].inbound if n in ctx.inventory.servers else () for n in names]
        for i, rule in enumerate(firewall.inputs.get("rules") or []):
            wanted = _plan_rule(rule)
            if names and all(any(not e.close and covers(as_rule(e), wanted) for e in entries) for entries in declared):
                kept.add((firewall.urn, i))
    return kept


def no_surprise_blocking(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    """What a server that runs today serves publicly (servers.<name>.inbound) and the firewalls
    attached to it no longer allow: only where the topology acknowledges it with `close`."""
    rules_by_server: dict[str, list[FirewallRule]] = {}
    for firewall, names in _attachments(resources).values():
        rules = [_plan_rule(r) for r in firewall.inputs.get("rules") or [] if r.get("direction", "in") == "in"]
        for name in names:
            rules_by_server.setdefault(name, []).extend(rules)
    for r in servers(resources):
        name = server_name(r)
        server = ctx.inventory.servers.get(name)
        if server is None or not server.existing or name not in rules_by_server:
            continue  # no firewall attached: hcloud filters nothing, so nothing is blocked
        for i, entry in enumerate(server.inbound):
            if not entry.close and not allows(rules_by_server[name], entry):
                yield r.urn, (f"{name}: serves {entry.describe()} today ({entry.reason}) and the new firewalls "
                              f"block it; acknowledge with close: true at servers.{name}.inbound.{i}, or keep it "
                              "(SSH is kept only from the admin CIDRs)")


def _attachments(resources: list[ResourceView]) -> dict[str, tuple[ResourceView, set[str]]]:
    """Firewall -> names of the servers it is attached to. An attachment depends on its firewall
    and on its servers (their ids are its inputs), which works in a preview too, where the ids of
    resources to create are not known yet."""
    by_urn = {r.urn: r for r in resources}
    result: dict[str, tuple[ResourceView, set[str]]] = {}
    for r in resources:
        if r.type != "hcloud:index/firewallAttachment:FirewallAttachment":
            continue
        deps = [by_urn[d] for d in r.dependencies if d in by_urn]
        for firewall in (d for d in deps if d.type == FIREWALL):
            _, names = result.setdefault(firewall.urn, (firewall, set()))
            names.update(server_name(d) for d in deps if d.type == SERVER_TYPE)
    return result


def ssh_from_admin_cidrs_only(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    admin = [ip_network(c) for c in ctx.admin_cidrs]
    for r in resources:
        if r.type != FIREWALL:
            continue
        for rule in r.inputs.get("rules") or []:
            if rule.get("protocol") != "tcp" or not _port_covers(rule.get("port"), SSH_PORT):
                continue
            for source in rule.get("sourceIps") or []:
                net = ip_network(source, strict=False)
                name = r.inputs.get("name", r.name)
                widest = ctx.config.ssh_max_prefix if net.version == 4 else ctx.config.ssh_max_prefix6
                if net.prefixlen < widest:
                    yield r.urn, f"{name}: SSH open to {source}, wider than /{widest}: that is the internet"
                elif not any(net.version == a.version and net.subnet_of(a) for a in admin):  # type: ignore[arg-type]
                    yield r.urn, f"{name}: SSH open to {source}, outside the admin CIDRs"


def _port_covers(port: str | None, wanted: int) -> bool:
    if port in (None, "any"):
        return True
    low, _, high = str(port).partition("-")
    return int(low) <= wanted <= int(high or low)


def stateful_servers_protected(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    for r in servers(resources):
        server = ctx.inventory.servers.get(server_name(r))
        if server is None:
            continue
        guarded = server.existing or labels(r).get("task") in ctx.config.stateful_tasks
        if guarded:
            if not r.protect:
                yield r.urn, f"{server.name}: stateful or adopted server without protect"
            if not (r.inputs.get("deleteProtection") and r.inputs.get("rebuildProtection")):
                yield r.urn, f"{server.name}: stateful or adopted server without hcloud delete and rebuild protection"
        missing = [f for f in REPLACE_FORCING_FIELDS if f not in r.ignore_changes]
        if guarded and missing:
            yield r.urn, f"{server.name}: a change to {', '.join(missing)} would replace it; add to ignoreChanges"


def no_secret_in_user_data(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    secrets = _secret_values(resources)
    for r in resources:
        if r.type == SERVER_TYPE:
            text, field_name = r.inputs.get("userData"), "userData"
        elif bootstrapped_server(r.type, r.name) is not None:
            text, field_name = r.inputs.get("stdin"), "stdin"
        else:
            continue
        if not isinstance(text, str):
            continue
        if field_name in r.secret_inputs:
            yield r.urn, f"{r.name}: user data is built from a secret value"
            continue
        for marker in SECRET_MARKERS:
            if marker in text:
                yield r.urn, f"{r.name}: user data contains {marker!r}"
        for value in secrets:
            if value in text:
                yield r.urn, f"{r.name}: user data contains the value of a secret"
                break


def _secret_values(resources: list[ResourceView]) -> set[str]:
    """Every secret value the stack hands to a resource (a delivered key file, a provider's
    password): long enough that finding one inside user data cannot be a coincidence."""
    values: set[str] = set()
    for r in resources:
        for key in r.secret_inputs:
            value = r.inputs.get(key)
            if isinstance(value, str):
                values.update(line.partition("=")[2] or line for line in value.splitlines() if len(line) >= 16)
    return {v.strip() for v in values if len(v.strip()) >= 16}


def every_shard_has_a_replica(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    by_shard: dict[str, dict[str, ResourceView]] = {}
    primaries: dict[str, str] = {}
    for r in servers(resources):
        lab = labels(r)
        if lab.get("task") in ("shard", "shard-replica") and "shard" in lab:
            by_shard.setdefault(lab["shard"], {})[lab["task"]] = r
    for name, host in bootstrapped_hosts(resources):
        server = ctx.inventory.servers.get(name)
        if server is not None and server.task == "shard":
            primaries[str(server.shard)] = name
            by_shard.setdefault(str(server.shard), {}).setdefault("shard", host)
    for shard, members in sorted(by_shard.items()):
        primary, replica = members.get("shard"), members.get("shard-replica")
        if primary is None:
            continue
        if replica is None:
            yield primary.urn, f"shard {shard}: no replica in the stack"
            continue
        primary_site = labels(primary).get("site", LOCAL)
        if labels(replica).get("site") == primary_site:
            yield replica.urn, f"shard {shard}: the replica is in the same site ({primary_site}) as its primary"


def adopted_servers_kept(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    """The stack config's importIds record every server the stack adopted. One that is no longer
    a server of the stack in the topology (or no longer `existing`) would make Pulumi delete or
    replace a running server, unless the topology retires it on purpose."""
    urn = next((r.urn for r in resources if r.type.startswith("unde:")), "")
    stack = {s.name: s for s in ctx.inventory.stack_servers(ctx.stack)}
    for name, import_id in sorted(ctx.import_ids.items()):
        if name in ctx.inventory.retired:
            continue
        server = stack.get(name)
        if server is None:
            yield urn, (
                f"{name} was adopted (importIds.{name}: {import_id}) and is no longer a server of the {ctx.stack} "
                f"stack in the topology: Pulumi would delete it. Put it back, or retire it on purpose with "
                f"`retired: {{{name}: <reason>}}` in the topology (then `pulumi state delete` keeps the machine)"
            )
        elif not server.existing:
            yield urn, (
                f"{name} was adopted (importIds.{name}: {import_id}) but the topology no longer says existing: true; "
                "it would lose the protection of an adopted server"
            )


def etcd_quorum_size(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    members = len(ctx.inventory.etcd)
    if members < ctx.config.etcd_min_members:
        urn = next((r.urn for r in resources if r.type.startswith("unde:")), "")
        yield urn, f"etcd placement {ctx.inventory.etcd_placement} has {members} members; policy.yaml asks for {ctx.config.etcd_min_members}"


# --------------------------------------------------------------------------------------------
# Advisory rule


def etcd_quorum_survives_site_loss(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    members = ctx.inventory.etcd
    if not members:
        return
    majority = len(members) // 2 + 1
    urn = next((r.urn for r in resources if r.type.startswith("unde:")), "")
    for site in ("local", "helsinki"):
        left = [m.member for m in members if m.site != site]
        if len(left) < majority:
            yield urn, (
                f"etcd placement {ctx.inventory.etcd_placement}: losing {site} leaves {len(left)} of {len(members)} "
                f"members ({', '.join(left) or 'none'}), no quorum: primaries stop taking writes"
            )


# --------------------------------------------------------------------------------------------
# Stack rules


def _is_file_sd_delivery(resource: ResourceView, monitoring: str) -> bool:
    file = delivered_file(resource.name)
    return resource.type == REMOTE_COMMAND_TYPE and file is not None and file[0] == monitoring and "/file_sd/" in file[1]


def every_server_is_a_monitoring_target(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    monitoring = ctx.inventory.only(MONITORING)
    delivered = [r for r in resources if _is_file_sd_delivery(r, monitoring.name)]
    if stack_of(monitoring) != ctx.stack:
        return
    if not delivered:
        yield "", "the monitoring server receives no file_sd target files"
        return
    targets: set[str] = set()
    for r in delivered:
        try:
            for group in json.loads(str(r.inputs.get("stdin", "[]"))):
                targets.update(t.rsplit(":", 1)[0] for t in group.get("targets", []))
        except json.JSONDecodeError:
            yield r.urn, f"{r.name}: not valid file_sd JSON"
    for server in ctx.inventory.servers.values():
        if str(server.ip) not in targets:
            yield delivered[0].urn, f"{server.name} ({server.ip}) is not a monitoring target"


def every_local_server_has_a_tunnel(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    if ctx.stack != LOCAL:
        return
    peers = {r.name for r in resources if r.type == WIREGUARD_PEER}
    local_hosts = {server_name(r): r for r in servers(resources) if labels(r).get("site") == LOCAL}
    local_hosts.update({name: r for name, r in bootstrapped_hosts(resources)})
    for name, r in sorted(local_hosts.items()):
        server = ctx.inventory.servers.get(name)
        if server is None or server.tunnel is None or f"{name}-{server.tunnel.interface}" not in peers:
            yield r.urn, f"{name}: local server without its own WireGuard tunnel"


RULES: tuple[Rule, ...] = (
    Rule("local-server-size", "Local servers have at most 16 vCPU / 32 GB", MANDATORY, local_server_size),
    Rule("one-server-one-task", "Every server has exactly one task; co-location only by listed exception", MANDATORY, one_server_one_task),
    Rule("no-public-ipv4-on-data-servers", "Data servers have no public IPv4", MANDATORY, no_public_ipv4_on_data_servers),
    Rule("public-ingress", "Only HTTPS (and HTTP for ACME) on entry points and WireGuard on tunnel endpoints are open to the internet", MANDATORY, public_ingress),
    Rule("ssh-from-admin-cidrs", "SSH only from the admin CIDRs", MANDATORY, ssh_from_admin_cidrs_only),
    Rule("stateful-protected", "Stateful and adopted servers are protected and never replaced", MANDATORY, stateful_servers_protected),
    Rule("no-secret-in-user-data", "User data carries no secret", MANDATORY, no_secret_in_user_data),
    Rule("shard-has-replica", "Every shard has a replica in the other site", MANDATORY, every_shard_has_a_replica),
    Rule("adopted-servers-kept", "An adopted server leaves the topology only when it is retired", MANDATORY, adopted_servers_kept),
    Rule("etcd-quorum-size", "etcd has at least as many members as policy.yaml asks (never fewer than 3)", MANDATORY, etcd_quorum_size),
    Rule("etcd-quorum-survives-site-loss", "The etcd quorum survives the loss of either site", ADVISORY, etcd_quorum_survives_site_loss),
    Rule("monitoring-targets", "Every server is a monitoring target", MANDATORY, every_server_is_a_monitoring_target),
    Rule("local-server-tunnel", "Every local server has its own tunnel", MANDATORY, every_local_server_has_a_tunnel),
    Rule("no-surprise-blocking", "Traffic a running server serves today stays open unless the topology closes it",
         MANDATORY, no_surprise_blocking),
)


def enforcement_of(rule: Rule, config: PolicyConfig) -> str:
    return config.enforcement.get(rule.name, rule.enforcement)


def evaluate(resources: list[ResourceView], ctx: Context) -> list[Violation]:
    violations = []
    for rule in RULES:
        level = enforcement_of(rule, ctx.config)
        if level == DISABLED:
            continue
        for urn, message in rule.check(resources, ctx):
            violations.append(Violation(rule.name, level, urn, message))
    return violations
