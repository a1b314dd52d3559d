"""Load `config/topology.yaml`, check it whole, and derive the inventory both stacks build from.

The inventory is plain data (frozen dataclasses): every server of every site with its address,
size, task and tunnel; the shards with their primary and replica; the etcd members of the
chosen placement. Nothing here touches Pulumi, so all of it is tested without the SDK.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from . import ipplan, known
from .config_files import add_validation_problems, join_path, read_config
from .errors import Problems, shown
from .limits import size_over_limit
from .pricing import DEFAULT_PRICING, load_pricing
from .schema import (
    FREE_TEXT,
    HCLOUD_TYPE,
    MAPPING_SECTIONS,
    RETIRED_SECTION,
    SECTIONS,
    EtcdSpec,
    NetworkSpec,
    ObjectStorageSpec,
    ServerSpec,
    ServerTypesFile,
    ServerTypeSpec,
    ShardsSpec,
    SiteSpec,
    Size,
    TaskSpec,
)
from .sizing import not_sold_message
from .validators import server_name

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = ROOT / "config" / "topology.yaml"
DEFAULT_SERVER_TYPES = ROOT / "config" / "server_types.yaml"

HELSINKI, LOCAL, WITNESS = "helsinki", "local", "witness"
# The sites the program builds: helsinki and local are required, witness is optional.
KNOWN_SITES = (HELSINKI, LOCAL, WITNESS)
SHARD_REPLICA_TASK, SHARD_TASK = known.SHARD_REPLICA, known.SHARD
# SPEC scenario 2's warm standby in Helsinki: the entry point DNS fails over to, its orchestrator.
STANDBY_ENTRY_TASK, STANDBY_ORCHESTRATOR_TASK = known.STANDBY_API, known.STANDBY_ORCHESTRATOR
# SPEC's monitoring server in Helsinki, and the second alert path on the local site that keeps
# alerting while Helsinki is down (SPEC scenario 3).
MONITORING_TASK, SECOND_MONITORING_TASK = known.MONITORING, known.MONITORING_LOCAL
STACKS = (HELSINKI, LOCAL)
MIN_ETCD_MEMBERS = 3  # a quorum that survives the loss of one member


def stack_of(server: Server) -> str:
    """Which stack builds a server. The witness site is a second Hetzner location in Helsinki's
    network zone, so the helsinki stack builds it; a shard's replica is built by the local stack
    together with its primary (one ShardPair), so that scaling shards touches one stack."""
    if server.site == LOCAL or server.task == SHARD_REPLICA_TASK:
        return LOCAL
    return HELSINKI


@dataclass(frozen=True)
class Tunnel:
    """One local server's own WireGuard tunnel to helsinki-gw."""

    interface: str
    index: int
    local_ip: IPv4Address
    helsinki_ip: IPv4Address


@dataclass(frozen=True)
class Inbound:
    """Public traffic a server serves today (servers.<name>.inbound)."""

    protocol: str  # tcp | udp | icmp
    port: str | None  # "443" or "8000-8100"; None for icmp
    sources: tuple[str, ...]
    reason: str
    close: bool = False  # acknowledged: the new firewalls stop it on purpose

    def describe(self) -> str:
        where = f" {self.port}" if self.port else ""
        return f"{self.protocol}{where} from {', '.join(self.sources)}"


# Operating systems, named as the hcloud images are. A server the program creates gets
# CREATED_OS; an adopted server keeps what it runs (never re-imaged), ADOPTED_OS unless the
# topology says otherwise; so does a host of the `existing` provider (its stack's hosts.<name>.os).
CREATED_OS = "debian-13"
ADOPTED_OS = "debian-12"
OS_CODENAMES = {"debian-12": "bookworm", "debian-13": "trixie"}


@dataclass(frozen=True)
class Server:
    name: str
    site: str
    task: str
    ip: IPv4Address
    vcpu: int
    ram_gb: float
    existing: bool
    stateful: bool
    data: bool
    entry_point: bool
    services: tuple[str, ...]
    public_ipv4: bool
    hcloud_type: str | None = None  # fixed type (Helsinki, witness, replicas); local types are chosen per stack
    dedicated: str | None = None  # a Robot server reached through the vSwitch subnet
    public_address: IPv4Address | None = None  # known address of an existing server
    subnet: str | None = None  # hcloud subnet name, for servers on the Helsinki network
    shard: int | None = None
    instance: int = 1
    tunnel: Tunnel | None = None
    resize: bool = False  # an existing server may change type (servers.<name>.resize)
    inbound: tuple[Inbound, ...] = ()  # what it serves publicly today (servers.<name>.inbound)
    # Whether the topology says what it serves publicly (an empty list says "nothing").
    inbound_declared: bool = False
    # The operating system it runs, as the hcloud image name (docs/architecture.md, "Operating system and where
    # packages come from"): a server the program creates runs CREATED_OS; an adopted one keeps
    # its own (servers.<name>.os, ADOPTED_OS unless the topology says otherwise).
    os: str = "debian-13"

    @property
    def labels(self) -> dict[str, str]:
        labels = {"site": self.site, "task": self.task, "managed-by": "unde-infra"}
        if self.shard is not None:
            labels["shard"] = str(self.shard)
        return labels

    @property
    def public_ipv6(self) -> bool:
        """Servers with a public IPv4 have IPv6 too. A local server without IPv4 (a shard) keeps
        IPv6 alone, to reach helsinki-gw's tunnel endpoint; private Helsinki servers have none."""
        return self.public_ipv4 or self.site == LOCAL

    @property
    def has_public_interface(self) -> bool:
        return self.public_ipv4 or self.public_ipv6

    @property
    def is_hcloud_site_server(self) -> bool:
        return self.dedicated is None


@dataclass(frozen=True)
class Shard:
    index: int
    primary: Server
    replica: Server
    durability: str = "async"

    @property
    def synchronous(self) -> bool:
        return self.durability == "sync"

    @property
    def scope(self) -> str:
        """Patroni scope and pgBackRest stanza of this shard (SPEC: `--stanza=shard0`)."""
        return f"shard{self.index}"


@dataclass(frozen=True)
class EtcdMember:
    member: str
    host: Server

    @property
    def site(self) -> str:
        return self.host.site


@dataclass(frozen=True)
class Inventory:
    source: str
    plan_version: str
    sites: dict[str, SiteSpec]
    network: NetworkSpec
    shards_spec: ShardsSpec
    tasks: dict[str, TaskSpec]
    server_types: dict[str, ServerTypeSpec]
    object_storage: ObjectStorageSpec
    etcd_placement: str
    servers: dict[str, Server]
    shards: tuple[Shard, ...]
    etcd: tuple[EtcdMember, ...]
    notes: tuple[str, ...] = field(default=())
    # Servers removed from the topology on purpose (name -> reason): an adopted server that
    # leaves the topology without an entry here is a mandatory policy violation.
    retired: dict[str, str] = field(default_factory=dict)

    def site_servers(self, *sites: str) -> list[Server]:
        return [s for s in self.servers.values() if s.site in sites]

    def stack_servers(self, stack: str) -> list[Server]:
        return [s for s in self.servers.values() if stack_of(s) == stack]

    def server(self, name: str) -> Server:
        return self.servers[name]

    @property
    def gateway(self) -> Server:
        return self.only(known.GATEWAY)

    def only(self, task: str) -> Server:
        """The one server of a task the model requires exactly once (known.REQUIRED_SERVERS)."""
        (server,) = (s for s in self.servers.values() if s.task == task)
        return server

    @property
    def local_limit(self) -> Size | None:
        return self.sites[LOCAL].max_size

    def tunnels(self) -> list[tuple[Server, Tunnel]]:
        return [(s, s.tunnel) for s in self.servers.values() if s.tunnel is not None]

    def etcd_hosts(self) -> list[Server]:
        return [m.host for m in self.etcd]

    @property
    def standby_entry(self) -> Server | None:
        """The Helsinki entry point the public record fails over to (scenario 2), if there is one."""
        return next((s for s in self.servers.values() if s.task == STANDBY_ENTRY_TASK), None)


# --------------------------------------------------------------------------------------------
# Loading


def load_server_types(path: Path = DEFAULT_SERVER_TYPES, pricing: Path = DEFAULT_PRICING) -> dict[str, ServerTypeSpec]:
    """The server types' specs, each with its price from config/pricing.yaml (the one place for
    prices): a type without a price, or a price for no known type, is an error of pricing.yaml,
    reported once server_types.yaml itself is sound."""
    problems = Problems()
    data = read_config(path, problems)
    problems.raise_if_any(str(path))
    prices = load_pricing(pricing).servers.eur_month
    types = data.get("types") if isinstance(data, dict) else None
    unpriced = set()
    if isinstance(types, dict):
        for name, spec in types.items():
            if name not in prices:
                unpriced.add(name)
            elif isinstance(spec, dict):
                types[name] = {**spec, "eur_month": prices[name]}
    try:
        validated = ServerTypesFile.model_validate(data).types
    except ValidationError as exc:
        # A type without a price lacks eur_month: pricing.yaml's problem, reported below.
        add_validation_problems(problems, "", exc, skip=lambda err: err["type"] == "missing"
                                and err["loc"][-1] == "eur_month" and err["loc"][-2] in unpriced)
        validated = {}
    for name in types or {}:
        if not ipplan.matches(HCLOUD_TYPE, str(name)):
            problems.add(join_path("types", name), "an hcloud server type name: lowercase letters and digits (cx23)")
    problems.raise_if_any(str(path))
    for name in sorted(unpriced):
        problems.add(f"servers.eur_month.{name}", f"server type {name} (config/server_types.yaml) has no price")
    for name in prices:
        if name not in (types or {}):
            problems.add(f"servers.eur_month.{name}", f"a price for {name}, which config/server_types.yaml does not know")
    problems.raise_if_any(str(pricing))
    return validated


InventoryLoader = TypeVar("InventoryLoader", bound=Callable[..., "Inventory"])
KEPT_INVENTORIES = 16


def _file_stamp(path: Path) -> tuple[str, str] | None:
    """The file's real path and a digest of its bytes (a file rewritten within one tick of the
    file system's clock, at the same size, still differs)."""
    try:
        return str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _kept_while_unchanged(load: InventoryLoader) -> InventoryLoader:
    """The inventory of a topology read before, as long as neither the file nor the server types
    changed (the same bytes at the same path) and the arguments are the same: a process that
    runs both stacks, or many tests, derives each topology once. Inventories are frozen."""
    kept: OrderedDict[tuple[Any, ...], Inventory] = OrderedDict()

    @functools.wraps(load)
    def cached(path: Path | str = DEFAULT_TOPOLOGY, **options: Any) -> Inventory:
        stamps = (_file_stamp(Path(path)), _file_stamp(DEFAULT_SERVER_TYPES))
        if options.get("server_types") is not None or None in stamps:
            return load(path, **options)
        key = (str(path), *stamps, tuple(sorted(options.items())))
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
        inventory = load(path, **options)
        kept[key] = inventory
        while len(kept) > KEPT_INVENTORIES:
            kept.popitem(last=False)
        return inventory

    return cached  # type: ignore[return-value]


@_kept_while_unchanged
def load_topology(
    path: Path | str = DEFAULT_TOPOLOGY,
    *,
    shards: int | None = None,
    placement: str | None = None,
    server_types: dict[str, ServerTypeSpec] | None = None,
) -> Inventory:
    """Read, check and derive. Raises TopologyError listing every problem found."""
    path = Path(path)
    problems = Problems()
    data = read_config(path, problems)
    problems.raise_if_any(str(path))
    if not isinstance(data, dict):
        problems.add("", f"the file must hold a mapping of sections, not {type(data).__name__}")
        problems.raise_if_any(str(path))
    if shards is not None:
        data.setdefault("shards", {})
        if isinstance(data["shards"], dict):
            data["shards"] = {**data["shards"], "count": shards}
    if placement is not None and isinstance(data.get("etcd"), dict):
        data["etcd"] = {**data["etcd"], "placement": placement}
    return build_inventory(data, source=str(path), server_types=server_types or load_server_types())


def build_inventory(
    data: dict[str, Any], *, source: str, server_types: dict[str, ServerTypeSpec]
) -> Inventory:
    problems = Problems()
    sections = _parse_sections(data, problems)
    # Cross-checks need these sections; a broken one has been reported already. A broken shards
    # or etcd section only skips the checks that depend on it, so the servers are still checked.
    if any(name not in sections for name in ("sites", "network", "tasks", "servers")):
        problems.raise_if_any(source)
    inventory = _derive(data, sections, server_types, problems, source)
    problems.raise_if_any(source)
    return inventory


def _parse_sections(data: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """Validate each section (each entry of the mapping sections) on its own, so that one bad
    server does not hide the problems of another."""
    names = set(SECTIONS) | {"plan_version", RETIRED_SECTION}
    for key in data:
        if key not in names:
            problems.add(join_path("", key), f"unknown section (known: {', '.join(sorted(names))})")
    version = data.get("plan_version")
    if isinstance(version, bool) or not isinstance(version, (str, int, float)) or not 0 < len(str(version)) <= 16:
        problems.add("plan_version", "required: the plan version this topology implements, like \"7.2\"")
    parsed: dict[str, Any] = {RETIRED_SECTION: _parse_retired(data.get(RETIRED_SECTION), problems)}
    for name, model in SECTIONS.items():
        raw = data.get(name)
        if raw is None:
            problems.add(name, "required section is missing")
            continue
        if name in MAPPING_SECTIONS:
            entries = _parse_entries(name, raw, model, problems)
            if entries is not None:
                parsed[name] = entries
            continue
        try:
            parsed[name] = model.model_validate(raw)
        except ValidationError as exc:
            add_validation_problems(problems, name, exc)
    return parsed


ENTRY_NAMES = {
    "sites": (set(KNOWN_SITES), "the program builds these sites"),
    "tasks": (set(known.KNOWN_TASKS), "the program knows how to build these tasks; a new task needs code that builds it"),
}


def _parse_entries(name: str, raw: Any, model: type[BaseModel], problems: Problems) -> Any:
    if not isinstance(raw, dict) or not raw:
        problems.add(name, f"must be a mapping of name to settings, got {shown(raw, 40)}")
        return None
    result: dict[str, Any] = {}
    for key, entry in raw.items():
        path = join_path(name, key)
        if not isinstance(key, str):
            problems.add(path, f"a name is text, not {shown(key)}")
            continue
        allowed = ENTRY_NAMES.get(name)
        if allowed is not None and key not in allowed[0]:
            problems.add(path, f"unknown {name[:-1]} {shown(key)}: {allowed[1]} ({', '.join(sorted(allowed[0]))})")
            continue
        try:
            result[key] = model.model_validate(entry)
        except ValidationError as exc:
            add_validation_problems(problems, path, exc)
    return result


def _parse_retired(raw: Any, problems: Problems) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(RETIRED_SECTION, "a mapping of server name to the reason it was retired")
        return {}
    retired = {}
    for name, reason in raw.items():
        path = join_path(RETIRED_SECTION, name)
        try:
            server_name(name)
        except ValueError as exc:
            problems.add(path, str(exc))
            continue
        if not isinstance(reason, str) or not 0 < len(reason) <= FREE_TEXT:
            problems.add(path, f"give the reason it was retired, one line of text (got {shown(reason, 40)})")
            continue
        retired[name] = reason
    return retired


# --------------------------------------------------------------------------------------------
# Deriving the inventory


def _derive(
    data: dict[str, Any],
    sections: dict[str, Any],
    server_types: dict[str, ServerTypeSpec],
    problems: Problems,
    source: str,
) -> Inventory:
    sites: dict[str, SiteSpec] = sections["sites"]
    network: NetworkSpec = sections["network"]
    shards_spec: ShardsSpec | None = sections.get("shards")
    etcd_spec: EtcdSpec | None = sections.get("etcd")
    tasks: dict[str, TaskSpec] = sections["tasks"]
    specs: dict[str, ServerSpec] = sections["servers"]

    for site in (HELSINKI, LOCAL):
        if site not in sites:
            problems.add(f"sites.{site}", "required site is missing")
    if any(site not in sites for site in (HELSINKI, LOCAL)):
        problems.raise_if_any(source)  # everything below places servers in these two sites
    _check_task_traits(tasks, problems)
    _check_network_plan(sites, network, shards_spec, problems)
    if etcd_spec is not None and etcd_spec.placement not in etcd_spec.placements:
        problems.add(
            "etcd.placement",
            f"unknown placement {etcd_spec.placement!r} (known: {', '.join(etcd_spec.placements)})",
        )

    servers: dict[str, Server] = {}
    for name, spec in specs.items():
        server = _server_from_spec(name, spec, sites, network, tasks, server_types, etcd_spec, problems)
        if server is not None:
            servers[name] = server
            for instance in range(2, spec.instances + 1):
                extra = _scale_out_instance(server, instance, network, problems, f"servers.{name}.instances")
                if extra is None:
                    continue
                if extra.name in specs or extra.name in servers:
                    problems.add(
                        f"servers.{extra.name}",
                        f"collides with instance {instance} of {name} (servers.{name}.instances: {spec.instances}); "
                        "rename the server or lower instances",
                    )
                    continue
                servers[extra.name] = extra

    shards: list[Shard] = []
    if shards_spec is not None:
        limit = sites[LOCAL].max_size if LOCAL in sites else None
        over = size_over_limit(shards_spec.local.size.vcpu, shards_spec.local.size.ram_gb, limit) if limit else None
        if over:
            problems.add("shards.local.size", over)
        shards = _derive_shards(shards_spec, network, tasks, server_types, specs, problems)
    for shard in shards:
        for server in (shard.primary, shard.replica):
            if server.name in servers:
                problems.add(f"servers.{server.name}", "this name is derived from shards.count; rename the server")
            servers[server.name] = server

    _check_unique_addresses(servers, sites, network, problems)
    _check_tunnels(servers, network, problems)
    etcd = _derive_etcd(etcd_spec, servers, problems) if etcd_spec is not None else []
    _check_required_servers(servers, specs, problems)
    storage: ObjectStorageSpec | None = sections.get("object_storage")
    if storage is not None and known.BACKUP_BUCKET not in storage.buckets:
        problems.add(
            "object_storage.buckets",
            f"the bucket {known.BACKUP_BUCKET} is required: it holds the pgBackRest repositories of every shard",
        )
    retired: dict[str, str] = sections[RETIRED_SECTION]
    for name in retired:
        if name in servers:
            problems.add(join_path(RETIRED_SECTION, name), f"{name} is still a server of the topology; retire it or keep it")

    problems.raise_if_any(source)
    assert shards_spec is not None and etcd_spec is not None  # a missing section is a problem above
    notes = [
        f"{s.name} has resize: true: a changed type in the topology resizes it (hcloud powers it off)"
        for s in servers.values() if s.existing and s.resize
    ]
    if etcd_spec.placement == "plan":
        notes.append(
            "etcd placement 'plan': Helsinki holds 2 of 3 etcd votes, so losing Helsinki stops "
            "writes on every local primary (SPEC contradiction 3); see `unde-infra scenarios`."
        )
    return Inventory(
        source=source,
        plan_version=str(data.get("plan_version")),
        sites=sites,
        network=network,
        shards_spec=shards_spec,
        tasks=tasks,
        server_types=server_types,
        object_storage=sections["object_storage"],
        etcd_placement=etcd_spec.placement,
        servers=servers,
        shards=tuple(shards),
        etcd=tuple(etcd),
        notes=tuple(notes),
        retired=retired,
    )


def _check_task_traits(tasks: dict[str, TaskSpec], problems: Problems) -> None:
    """The traits the program relies on: a topology may give them to more tasks, never take them
    away from the tasks that have them (known.DATA_TASKS, known.STATEFUL_TASKS)."""
    for name, task in tasks.items():
        if name in known.DATA_TASKS and not task.data:
            problems.add(f"tasks.{name}.data", f"{name} holds data: it stays data: true (data servers are never public)")
        if name in known.STATEFUL_TASKS and not task.stateful:
            problems.add(f"tasks.{name}.stateful", f"{name} holds state: it stays stateful: true (never replaced)")
        if task.data and task.entry_point:
            problems.add(f"tasks.{name}.entry_point", f"{name} holds data: a data server is never an entry point")


def _check_required_servers(servers: dict[str, Server], specs: dict[str, ServerSpec], problems: Problems) -> None:
    """The servers the components look up by task: present, once where once is what they need,
    in their site. A renamed server is fine (they are found by task); a missing one is not."""
    for task, site, how_many, why in known.REQUIRED_SERVERS:
        found = [s for s in servers.values() if s.task == task and s.instance == 1]
        declared = [name for name, spec in specs.items() if spec.task == task and name not in servers]
        if not found and declared:
            continue  # its entry has problems of its own, reported already
        if how_many == "one" and len(found) != 1:
            names = ", ".join(s.name for s in found) or "none"
            problems.add("servers", f"exactly one server must have task {task} ({why}); found {names}")
        elif how_many == "some" and not found:
            problems.add("servers", f"at least one server must have task {task} ({why}); found none")
        for server in found:
            if server.site != site:
                problems.add(f"servers.{server.name}.site", f"a server of task {task} belongs to site {site}")


def _check_network_plan(
    sites: dict[str, SiteSpec], network: NetworkSpec, shards: ShardsSpec | None, problems: Problems
) -> None:
    net = network.ip_range
    for name, subnet in network.subnets.items():
        if not ipplan.contains(net, subnet.ip_range):
            problems.add(f"network.subnets.{name}.ip_range", f"{subnet.ip_range} is outside network.ip_range {net}")
    for a, b in ipplan.overlapping_pairs({n: s.ip_range for n, s in network.subnets.items()}):
        problems.add(f"network.subnets.{b}.ip_range", f"overlaps subnet {a}")
    routed = {"sites.local.range": sites[LOCAL].range if LOCAL in sites else None, "network.tunnel_range": network.tunnel_range}
    for path, dest in routed.items():
        if dest is not None and not ipplan.contains(net, dest):
            problems.add(path, f"{dest} is routed through helsinki-gw, so network.ip_range {net} must contain it")
    if network.gateway not in net:
        problems.add("network.gateway", f"{network.gateway} is outside network.ip_range {net}")
    if LOCAL in sites:
        local = sites[LOCAL].range
        pools = {"network.scale_out_pool": network.scale_out_pool}
        if shards is not None:
            pools["shards.local.pool"] = shards.local.pool
        for path, pool in pools.items():
            if not ipplan.contains(local, pool):
                problems.add(path, f"{pool} is outside sites.local.range {local}")
        if shards is not None and network.scale_out_pool.overlaps(shards.local.pool):
            problems.add("shards.local.pool", f"overlaps network.scale_out_pool {network.scale_out_pool}")
    if shards is None:
        return
    if shards.replica.subnet not in network.subnets:
        problems.add("shards.replica.subnet", f"unknown subnet {shards.replica.subnet!r}")
    elif network.subnets[shards.replica.subnet].type != "cloud":
        problems.add("shards.replica.subnet", "replicas are cloud servers and need a subnet of type cloud")


def _task_of(name: str, spec: ServerSpec, tasks: dict[str, TaskSpec], problems: Problems) -> str | None:
    path = f"servers.{name}.task"
    given = spec.task
    if isinstance(given, list):
        distinct = [t for t in given if t]
        if len(distinct) == 1:
            given = distinct[0]
        elif not distinct:
            given = None
        else:
            problems.add(path, f"has {len(distinct)} tasks ({', '.join(distinct)}); one server, one task")
            return None
    if not given:
        problems.add(path, "has no task; every server has exactly one")
        return None
    if given not in tasks:
        problems.add(path, f"unknown task {given!r} (known: {', '.join(sorted(tasks))})")
        return None
    return given


def _task_traits(task: TaskSpec) -> dict[str, Any]:
    """What a server inherits from its task."""
    return {
        "stateful": task.stateful,
        "data": task.data,
        "entry_point": task.entry_point,
        "services": tuple(task.services),
    }


def _server_from_spec(
    name: str,
    spec: ServerSpec,
    sites: dict[str, SiteSpec],
    network: NetworkSpec,
    tasks: dict[str, TaskSpec],
    server_types: dict[str, ServerTypeSpec],
    etcd: EtcdSpec | None,
    problems: Problems,
) -> Server | None:
    path = f"servers.{name}"
    ok = True
    if spec.os is not None and spec.os != CREATED_OS and not spec.existing:
        problems.add(f"{path}.os", f"a server the program creates runs {CREATED_OS} (its image); "
                                   "only an existing server may run another system")
    if spec.resize and not spec.existing:
        problems.add(f"{path}.resize", "only an existing server needs resize: a new one is created with its type")
        ok = False
    try:
        server_name(name)
    except ValueError as exc:
        problems.add(path, str(exc))
        ok = False
    if isinstance(spec.public_ipv4, IPv4Address) and not spec.existing:
        problems.add(
            f"{path}.public_ipv4",
            "a known public address is for an existing server; a new server gets one from hcloud (public_ipv4: true)",
        )
        ok = False
    task = _task_of(name, spec, tasks, problems)
    site = sites.get(spec.site)
    if site is None:
        problems.add(f"{path}.site", f"unknown site {spec.site!r} (known: {', '.join(sites)})")
        return None
    if etcd is not None and spec.etcd_placement is not None:
        if spec.etcd_placement not in etcd.placements:
            problems.add(f"{path}.etcd_placement", f"unknown placement {spec.etcd_placement!r}")
        if spec.etcd_placement != etcd.placement:
            return None  # this server exists only under another etcd placement

    size, hcloud_type = _size_of(name, spec, site, server_types, problems)
    if task is None or size is None:
        return None
    if spec.site == LOCAL:
        if spec.tunnel is None:
            problems.add(f"{path}.tunnel", "every local server has its own WireGuard tunnel; give interface and index")
        limit = site.max_size
        over = size_over_limit(size.vcpu, size.ram_gb, limit) if limit else None
        if over:
            problems.add(f"{path}.size", f"{over}; split the task or scale out")
    elif spec.tunnel is not None:
        problems.add(f"{path}.tunnel", "only local servers have tunnels to helsinki-gw")
    task_spec = tasks[task]
    if spec.instances > 1 and task_spec.stateful:
        problems.add(f"{path}.instances", f"task {task} is stateful; only stateless tasks scale out by instances")
    public = spec.public_ipv4
    public_address = public if isinstance(public, IPv4Address) else None
    has_public = bool(public) if public is not None else not task_spec.data
    subnet = _subnet_of(name, spec, site, network, problems) if site.provider == "hcloud" else None
    tunnel = (
        Tunnel(spec.tunnel.interface, spec.tunnel.index, *ipplan.tunnel_pair(network.tunnel_range, spec.tunnel.index))
        if spec.tunnel is not None and spec.site == LOCAL
        else None
    )
    inbound = _inbound_of(path, spec, has_public or spec.site == LOCAL, problems)  # as Server.has_public_interface
    if not ok or inbound is None:
        return None
    return Server(
        name=name,
        site=spec.site,
        task=task,
        ip=spec.ip,
        vcpu=size.vcpu,
        ram_gb=size.ram_gb,
        existing=spec.existing,
        **_task_traits(task_spec),
        public_ipv4=has_public,
        hcloud_type=hcloud_type,
        dedicated=spec.dedicated,
        public_address=public_address,
        subnet=subnet,
        tunnel=tunnel,
        resize=spec.resize,
        inbound=inbound,
        inbound_declared=spec.inbound is not None,
        os=spec.os or (ADOPTED_OS if spec.existing else CREATED_OS),
    )


def _inbound_of(path: str, spec: ServerSpec, public_interface: bool, problems: Problems) -> tuple[Inbound, ...] | None:
    """servers.<name>.inbound: only where there is a public interface to serve it on, and
    `close` only where something runs today to stop."""
    if not spec.inbound:
        return ()
    ok = True
    if not public_interface or spec.dedicated is not None:
        problems.add(f"{path}.inbound", "the server has no public interface behind an hcloud firewall")
        ok = False
    for i, entry in enumerate(spec.inbound):
        if entry.close and not spec.existing:
            problems.add(f"{path}.inbound.{i}.close", "only a server that runs today (existing: true) has traffic to close")
            ok = False
    if not ok:
        return None
    return tuple(Inbound(e.protocol, e.port if e.port is None else str(e.port), tuple(e.sources), e.reason, e.close)
                 for e in spec.inbound)


def _size_of(
    name: str, spec: ServerSpec, site: SiteSpec, server_types: dict[str, ServerTypeSpec], problems: Problems
) -> tuple[Size | None, str | None]:
    path = f"servers.{name}"
    if spec.dedicated is not None:
        if spec.size is None:
            problems.add(f"{path}.size", "a dedicated server declares its size (vcpu, ram_gb)")
        if spec.type is not None:
            problems.add(f"{path}.type", "a dedicated server has no hcloud type")
        return spec.size, None
    if spec.type is None:
        if site.provider == "hcloud":
            problems.add(f"{path}.type", "a server of an hcloud site needs an hcloud server type")
            return None, None
        if spec.size is None:
            problems.add(f"{path}.size", "required: vcpu and ram_gb (the hcloud type is chosen per location)")
        return spec.size, None
    if spec.type not in server_types:
        problems.add(f"{path}.type", f"unknown server type {spec.type!r} (known: {', '.join(server_types)})")
        return None, None
    known = server_types[spec.type]
    if site.location and site.location not in known.locations:
        problems.add(f"{path}.type", not_sold_message(spec.type, site.location, server_types))
    if spec.size is not None and (spec.size.vcpu, spec.size.ram_gb) != (known.vcpu, known.ram_gb):
        problems.add(f"{path}.size", f"contradicts type {spec.type} ({known.vcpu} vCPU / {known.ram_gb:g} GB); give one")
    return Size(vcpu=known.vcpu, ram_gb=known.ram_gb), spec.type


def _subnet_of(name: str, spec: ServerSpec, site: SiteSpec, network: NetworkSpec, problems: Problems) -> str | None:
    path = f"servers.{name}.ip"
    wanted = "vswitch" if spec.dedicated else "cloud"
    for subnet_name, subnet in network.subnets.items():
        if spec.ip in subnet.ip_range:
            if subnet.type != wanted:
                kind = "a dedicated server" if spec.dedicated else "a cloud server"
                problems.add(path, f"{spec.ip} is in {subnet.type} subnet {subnet_name}; {kind} needs a {wanted} subnet")
                return None
            return subnet_name
    problems.add(path, f"{spec.ip} is in no subnet of network.subnets")
    return None


def _scale_out_instance(
    base: Server, instance: int, network: NetworkSpec, problems: Problems, path: str
) -> Server | None:
    if base.site != LOCAL or base.tunnel is None:
        problems.add(path, "only local servers with a tunnel scale out by instances")
        return None
    ip = ipplan.scale_out_address(network.scale_out_pool, base.tunnel.index, instance)
    if ip is None:
        problems.add(path, f"no room in network.scale_out_pool {network.scale_out_pool} for tunnel index {base.tunnel.index}")
        return None
    index = ipplan.last_octet(ip)
    suffix = f"-{instance}"
    try:
        server_name(f"{base.name}{suffix}")
    except ValueError as exc:
        problems.add(path, f"instance {instance}: {exc}")
        return None
    return Server(
        **{
            **base.__dict__,
            "name": f"{base.name}{suffix}",
            "ip": ip,
            "instance": instance,
            "tunnel": Tunnel(
                f"{base.tunnel.interface[: 15 - len(suffix)]}{suffix}",
                index,
                *ipplan.tunnel_pair(network.tunnel_range, index),
            ),
        }
    )


def replica_type_for(spec: ShardsSpec, count: int) -> str:
    return spec.replica.large_type if count >= spec.replica.large_from_count else spec.replica.type


@dataclass(frozen=True)
class ShardRoom:
    """A range of the address plan that every shard takes an address in, and how many shards it
    places: the local pool (shard 0 has shards.local.first_address, shard N >= 1 the pool's host
    N) and the replicas' subnet (replica N takes host shards.replica.first_host + N)."""

    path: str
    network: IPv4Network
    holds: int


def shard_rooms(spec: ShardsSpec, network: NetworkSpec) -> list[ShardRoom]:
    rooms = [ShardRoom("shards.local.pool", spec.local.pool, spec.local.pool.num_addresses - 2 + 1)]
    subnet = network.subnets.get(spec.replica.subnet)
    if subnet is not None:
        rooms.append(ShardRoom(f"network.subnets.{spec.replica.subnet}", subnet.ip_range,
                               subnet.ip_range.num_addresses - 1 - spec.replica.first_host))
    return rooms


def shard_capacity(spec: ShardsSpec, network: NetworkSpec) -> int:
    """The most shards the address plan places."""
    return min(room.holds for room in shard_rooms(spec, network))


def _derive_shards(
    spec: ShardsSpec,
    network: NetworkSpec,
    tasks: dict[str, TaskSpec],
    server_types: dict[str, ServerTypeSpec],
    named: dict[str, ServerSpec],
    problems: Problems,
) -> list[Shard]:
    if SHARD_TASK not in tasks or SHARD_REPLICA_TASK not in tasks:
        problems.add("tasks", f"tasks {SHARD_TASK} and {SHARD_REPLICA_TASK} are required for shards")
        return []
    capacity = shard_capacity(spec, network)
    subnet = network.subnets.get(spec.replica.subnet)
    if spec.count > capacity:
        problems.add("shards.count", f"{spec.count} shards do not fit the address plan (at most {capacity})")
        return []
    replica_type = replica_type_for(spec, spec.count)
    for key in ("type", "large_type"):
        if getattr(spec.replica, key) not in server_types:
            problems.add(f"shards.replica.{key}", f"unknown server type {getattr(spec.replica, key)!r}")
    if replica_type not in server_types or subnet is None:
        return []
    rtype = server_types[replica_type]
    shard_task, replica_task = tasks[SHARD_TASK], tasks[SHARD_REPLICA_TASK]
    shards = []
    for n in range(spec.count):
        if n == 0:
            local_ip, tunnel_index = spec.local.first_address, spec.local.first_tunnel
        else:
            local_ip = spec.local.pool.network_address + n
            tunnel_index = ipplan.last_octet(local_ip)
        primary = Server(
            name=f"local-shard-{n}",
            site=LOCAL,
            task=SHARD_TASK,
            ip=local_ip,
            vcpu=spec.local.size.vcpu,
            ram_gb=spec.local.size.ram_gb,
            existing=False,
            **_task_traits(shard_task),
            public_ipv4=False,
            shard=n,
            tunnel=Tunnel(f"wg-shard{n}", tunnel_index, *ipplan.tunnel_pair(network.tunnel_range, tunnel_index)),
        )
        replica = Server(
            name=f"shard-replica-{n}",
            site=HELSINKI,
            task=SHARD_REPLICA_TASK,
            ip=subnet.ip_range.network_address + spec.replica.first_host + n,
            vcpu=rtype.vcpu,
            ram_gb=rtype.ram_gb,
            existing=False,
            **_task_traits(replica_task),
            public_ipv4=False,
            hcloud_type=replica_type,
            subnet=spec.replica.subnet,
            shard=n,
        )
        shards.append(Shard(n, primary, replica, spec.durability_overrides.get(n, spec.durability)))
    for index in sorted(spec.durability_overrides):
        if not 0 <= index < spec.count:
            problems.add(f"shards.durability_overrides.{index}", f"there is no shard {index} (count is {spec.count})")
    return shards


def _check_unique_addresses(
    servers: dict[str, Server], sites: dict[str, SiteSpec], network: NetworkSpec, problems: Problems
) -> None:
    by_ip: dict[IPv4Address, list[str]] = {}
    for server in servers.values():
        by_ip.setdefault(server.ip, []).append(server.name)
        path = f"servers.{server.name}.ip"
        site_range = sites[server.site].range
        if server.ip not in site_range:
            problems.add(path, f"{server.ip} is outside site {server.site}'s range {site_range}")
            continue
        subnet_range = (
            network.subnets[server.subnet].ip_range if server.subnet and server.subnet in network.subnets else site_range
        )
        reason = ipplan.reserved_reason(server.ip, subnet_range, network.gateway)
        if reason:
            problems.add(path, f"{server.ip} is reserved ({reason})")
    for ip, names in by_ip.items():
        if len(names) > 1:
            for name in names[1:]:
                problems.add(f"servers.{name}.ip", f"{ip} is already used by {names[0]}")
    public: dict[IPv4Address, str] = {}
    for server in servers.values():
        if server.public_address is None:
            continue
        if server.public_address in public:
            problems.add(f"servers.{server.name}.public_ipv4", f"{server.public_address} is already used by {public[server.public_address]}")
        public[server.public_address] = server.name


def _check_tunnels(servers: dict[str, Server], network: NetworkSpec, problems: Problems) -> None:
    tunnels = [(s.name, s.tunnel) for s in servers.values() if s.tunnel is not None]
    for attr, label in (("index", "tunnel index"), ("interface", "interface")):
        owners: dict[Any, str] = {}
        for name, tunnel in tunnels:
            key = getattr(tunnel, attr)
            if key in owners:
                problems.add(f"servers.{name}.tunnel.{attr}", f"{label} {key} is already used by {owners[key]}")
            else:
                owners[key] = name
    for name, tunnel in tunnels:
        if tunnel.local_ip not in network.tunnel_range:
            problems.add(f"servers.{name}.tunnel.index", f"{tunnel.index} does not fit network.tunnel_range")


def _derive_etcd(spec: EtcdSpec, servers: dict[str, Server], problems: Problems) -> list[EtcdMember]:
    members = spec.placements.get(spec.placement)
    if members is None:
        return []
    path = f"etcd.placements.{spec.placement}"
    names = Counter(m.member for m in members)
    for name, count in names.items():
        if count > 1:
            problems.add(path, f"member {name} is listed {count} times")
    if len(members) < MIN_ETCD_MEMBERS:
        problems.add(
            path,
            f"{len(members)} member{'s' if len(members) != 1 else ''}: etcd needs at least {MIN_ETCD_MEMBERS}, "
            "so that losing one keeps a quorum",
        )
    elif len(members) % 2 == 0:
        problems.add(path, f"{len(members)} members: an etcd quorum needs an odd number of members")
    result = []
    hosts: dict[str, str] = {}
    for i, m in enumerate(members):
        host = servers.get(m.host)
        if host is None:
            problems.add(f"{path}[{i}].host", f"unknown server {m.host!r}")
            continue
        if m.host in hosts:
            problems.add(f"{path}[{i}].host", f"{m.host} already carries member {hosts[m.host]}: one member a server")
            continue
        hosts[m.host] = m.member
        result.append(EtcdMember(m.member, host))
    return result


def colocated_tasks(inventory: Inventory) -> dict[str, list[str]]:
    """Tasks that run on a server beside its own (an etcd member on a replica, say)."""
    extra: dict[str, list[str]] = {}
    for member in inventory.etcd:
        if member.host.task != "etcd":
            extra.setdefault(member.host.name, []).append("etcd")
    return extra


def replace_count(inventory: Inventory, shards: int) -> Inventory:
    """The same topology at another shard count (used by benchmarks and scale tests)."""
    return load_topology(inventory.source, shards=shards, server_types=inventory.server_types)

