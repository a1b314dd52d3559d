"""The shape of `config/topology.yaml` and `config/server_types.yaml`, as pydantic models.

These models check each section on its own; `unde_infra.model` then cross-checks the sections
and derives the inventory. Every model forbids unknown keys, so a typo is an error, not a
silently ignored setting. They are strict: a count is a whole number, never `true` (YAML's
`yes`) or text; a float is finite; every address, name and key is checked by its kind
(`unde_infra.validators`), so what reaches a renderer is what the model validated.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .validators import (
    BucketName,
    DnsLabel,
    Endpoint,
    InterfaceName,
    Kind,
    PrivateIPv4,
    PrivateIPv4Network,
    PublicIPv4OrFlag,
    ServerName,
)

SERVICE = Literal["postgres", "patroni", "pgbouncer", "redis", "etcd"]
# hcloud server type names (cx23, ccx33) and Robot products (AX41).
HCLOUD_TYPE = r"^[a-z][a-z0-9]{1,15}$"
ROBOT_PRODUCT = r"^[A-Za-z][A-Za-z0-9-]{0,31}$"
Location = Literal["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]
NetworkZone = Literal["eu-central", "us-east", "us-west", "ap-southeast"]
FREE_TEXT = 200  # descriptions and reasons: one line
# A field's `json_schema_extra={DEFAULT_NOTE: "..."}` says its default in words, for the generated
# reference, where the model's own default is not what the program takes (a cross-check requires
# the key, or another file gives it).
DEFAULT_NOTE = "default_note"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Size(Strict):
    vcpu: int = Field(gt=0, le=1024, description="Virtual CPUs.")
    ram_gb: float = Field(gt=0, le=16384, description="Memory in GB.")


class ServerTypeSpec(Strict):
    vcpu: int = Field(gt=0, le=1024, description="The type's published vCPUs.")
    ram_gb: float = Field(gt=0, le=16384, description="The type's published memory, GB.")
    disk_gb: int = Field(gt=0, le=1_000_000, description="The type's published local disk, GB.")
    cpu: Literal["shared", "dedicated"] = Field(description="Shared or dedicated vCPUs.")
    eur_month: float = Field(
        gt=0, le=100_000, json_schema_extra={DEFAULT_NOTE: "not set here: config/pricing.yaml's"},
        description="Not read from this file: prices live in config/pricing.yaml (`servers.eur_month`), the one "
                    "place for them, and are merged in when the types are loaded.")
    locations: list[Location] = Field(
        min_length=1,
        description="Where the type can be ordered. A server of a site in another location is refused "
                    "(`NOT SOLD` in `unde-infra cost`); the local site's type is the cheapest one that fits "
                    "among those its location sells.")


class ServerTypesFile(Strict):
    # YAML anchors (lists of locations) live beside `types`.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)
    types: dict[str, ServerTypeSpec] = Field(
        min_length=1,
        description="Hetzner Cloud server types the program may choose or adopt, by name (cx23, ccx33). Other "
                    "top-level keys are ignored: they hold YAML anchors (lists of locations).")


class TunnelSpec(Strict):
    interface: InterfaceName = Field(
        description="The tunnel's WireGuard interface, on the local server and on helsinki-gw (wg-quick names "
                    "the interface after its file).")
    index: int = Field(
        ge=0, le=255,
        description="The tunnel's number: its addresses are 10.3.<index>.1 (the local server) and "
                    "10.3.<index>.100 (helsinki-gw) in `network.tunnel_range`, and helsinki-gw listens on UDP "
                    "`network.wireguard.listen_port_base` + index.")


INBOUND_PROTOCOL = Literal["tcp", "udp", "icmp"]
ANYWHERE_SOURCES = ("0.0.0.0/0", "::/0")


class InboundSpec(Strict):
    """Public traffic a server that runs today serves: what its current hcloud firewall allows,
    or what `ss -tlnp` shows listening on its public address when it has no firewall."""

    protocol: INBOUND_PROTOCOL = Field(default="tcp", description="The protocol served.")
    port: int | str | None = Field(
        default=None,
        description="A port (443) or a range (\"8000-8100\"), 1-65535; required for tcp and udp, none for icmp.")
    sources: list[str] = Field(
        default_factory=lambda: list(ANYWHERE_SOURCES), min_length=1,
        description="Where the traffic may come from: networks in CIDR form (IPv4 or IPv6).")
    reason: str = Field(min_length=1, max_length=FREE_TEXT, description="What is served there, for the reviewer.")
    close: bool = Field(
        default=False,
        description="The acknowledgement that the first run stops serving this on purpose (the new firewalls do "
                    "not allow it). Without it, traffic the new firewalls would block fails the preview (policy "
                    "`no-surprise-blocking`). Only on a server that runs today (`existing: true`).")

    @field_validator("port")
    @classmethod
    def _port_range(cls, value: int | str | None) -> str | None:
        if value is None:
            return None
        low, sep, high = str(value).partition("-")
        if not (low.isdigit() and (not sep or high.isdigit())):
            raise ValueError("a port (443) or a range (8000-8100)")
        first, last = int(low), int(high or low)
        if not 1 <= first <= last <= 65535:
            raise ValueError("ports are 1-65535, a range low-high")
        return f"{first}-{last}" if sep and first != last else str(first)

    @field_validator("sources")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for source in value:
            try:
                ip_network(source, strict=True)
            except ValueError as exc:
                raise ValueError(f"{source!r} is not a network in CIDR form ({exc})") from None
        return value

    @model_validator(mode="after")
    def _port_fits_protocol(self) -> InboundSpec:
        if self.protocol == "icmp" and self.port is not None:
            raise ValueError("icmp has no port")
        if self.protocol != "icmp" and self.port is None:
            raise ValueError(f"{self.protocol} needs a port")
        return self


class ServerSpec(Strict):
    site: DnsLabel = Field(description="The site the server is at (a key of `sites`); its stack follows from it.")
    # A list is accepted by the parser only so that "two tasks" can be reported as such.
    task: str | list[str] | None = Field(
        default=None, json_schema_extra={DEFAULT_NOTE: "required"},
        description="Its one task, a key of `tasks` (required; one server, one task: a second task is allowed only "
                    "as an exception in config/policy.yaml).")
    type: str | None = Field(
        default=None, pattern=HCLOUD_TYPE, json_schema_extra={DEFAULT_NOTE: "required at an hcloud site"},
        description="The hcloud server type (a key of config/server_types.yaml). Required at an hcloud site; at the "
                    "local site the stack chooses the cheapest type of its location that fits `size`. An existing "
                    "server keeps the type it runs with, whatever this says, unless `resize` is true.")
    dedicated: str | None = Field(
        default=None, pattern=ROBOT_PRODUCT,
        description="The Robot product of a dedicated server (AX41): reached through the vSwitch subnet, never "
                    "created or changed by Pulumi, still in the inventory for firewalls, monitoring and backups. "
                    "It declares `size` and has no `type`.")
    size: Size | None = Field(
        default=None, json_schema_extra={DEFAULT_NOTE: "the type's; required at the local site and for a dedicated server"},
        description="vCPUs and memory. Required at the local site (the type is chosen per location, within "
                    "`sites.local.max_size`) and for a dedicated server; where `type` is given it must match "
                    "the type's specs.")
    ip: PrivateIPv4 = Field(
        description="Its private address: inside its site's `range`, in a subnet of `network.subnets` of the "
                    "right kind (cloud, or vswitch for a dedicated server) at an hcloud site, unique.")
    public_ipv4: PublicIPv4OrFlag = Field(
        default=None, json_schema_extra={DEFAULT_NOTE: "true unless the task holds data"},
        description="Whether it has a public IPv4 (true/false), or, for an existing server, the address it has "
                    "(globally routable; a new server gets one from hcloud). Default: a public IPv4 unless its "
                    "task holds data (`tasks.<task>.data`).")
    existing: bool = Field(
        default=False,
        description="It runs already: adopted through its import id (the stack config's `importIds`), protected, "
                    "never created a second time, re-imaged or replaced.")
    tunnel: TunnelSpec | None = Field(
        default=None, json_schema_extra={DEFAULT_NOTE: "none; required at the local site"},
        description="Its own WireGuard tunnel to helsinki-gw: required for every server of the local site, "
                    "refused elsewhere.")
    etcd_placement: DnsLabel | None = Field(
        default=None,
        description="The server exists only under this etcd placement (a key of `etcd.placements`): the witness "
                    "server is built only when `etcd.placement` is three-sites.")
    instances: int = Field(
        default=1, ge=1, le=8,
        description="Stateless scale-out: instances of this server's task (instance k is <name>-k, at an address "
                    "of `network.scale_out_pool`). Only for a stateless task of a local server with a tunnel.")
    resize: bool = Field(
        default=False,
        description="Lets a changed `type` resize an existing server (hcloud powers it off for a minute or two). "
                    "Only for an existing server: a new one is created with its type.")
    os: Literal["debian-12", "debian-13"] | None = Field(
        default=None, json_schema_extra={DEFAULT_NOTE: "debian-12 if existing, else debian-13"},
        description="The operating system an existing server runs (it is never re-imaged; what its setup "
                    "installs depends on it). Default: debian-12 for an existing server. A server the program "
                    "creates runs debian-13, its image; another value is refused.")
    inbound: list[InboundSpec] | None = Field(
        default=None,
        description="What a running server serves publicly today; the firewalls keep each entry open (in a "
                    "firewall of its own, `unde-<server>-inbound`) unless `close` says so, except SSH, which only "
                    "the admin CIDRs reach. Not given: not known yet (a real run of a running server with a "
                    "public interface waits for it); `[]` says \"nothing\". Only on a server with a public "
                    "interface behind an hcloud firewall.")


class SiteSpec(Strict):
    provider: Literal["hcloud"] | None = Field(
        default=None,
        description="hcloud for a Hetzner Cloud site. Not given for the local site: its stack config chooses "
                    "(`provider`: hcloud or existing hosts), because the provider follows where the users are.")
    location: Location | None = Field(
        default=None,
        description="The hcloud location of an hcloud site. Not given for the local site: its stack config's "
                    "`location`.")
    network_zone: NetworkZone | None = Field(default=None, description="The hcloud network zone of the location.")
    range: PrivateIPv4Network = Field(description="The site's private range: every server of the site has its `ip` in it.")
    max_size: Size | None = Field(
        default=None,
        description="The largest server the site may have (SPEC: 16 vCPU / 32 GB at the local site); "
                    "config/policy.yaml's `local_limit` enforces the same on what is registered.")


class SubnetSpec(Strict):
    type: Literal["cloud", "vswitch"] = Field(
        description="cloud: hcloud servers take addresses in it; vswitch: a Robot vSwitch joins it (dedicated "
                    "servers), where cloud servers cannot take addresses.")
    ip_range: PrivateIPv4Network = Field(description="The subnet's range, inside `network.ip_range`.")


class WireGuardSpec(Strict):
    mode: Literal["linux", "routeros"] = Field(
        default="linux",
        description="Who terminates the tunnels on helsinki-gw: linux (Debian, wg-quick and nftables) or "
                    "routeros (a RouterOS v7 router that runs natively, configured by one script over SSH; the "
                    "stack config's `routerosUser` and `routerosPrivateInterface`). CHR cannot run as a KVM guest "
                    "inside an hcloud server, which has no nested virtualisation (docs/architecture.md).")
    listen_port_base: int = Field(
        default=51820, ge=1024, le=65535 - 255,
        description="Tunnel index X listens on UDP listen_port_base + X on helsinki-gw.")
    mtu: int = Field(
        default=1420, ge=1280, le=1450,
        description="The tunnels' MTU: inner packets cross Hetzner's private network (MTU 1450) after the "
                    "gateway, and the outer packet (inner + 80 bytes of IPv6/UDP/WireGuard overhead) crosses the "
                    "internet (1500).")
    keepalive_seconds: int = Field(
        default=25, ge=0, le=120,
        description="PersistentKeepalive, sent from the local side, so that the tunnels stay open through NAT "
                    "and firewalls.")


class NetworkSpec(Strict):
    ip_range: PrivateIPv4Network = Field(
        description="The hcloud network of Helsinki. hcloud requires it to contain every route destination: the "
                    "routes send the local range and the tunnel range to helsinki-gw, so it spans them (10.0.0.0/14).")
    gateway: PrivateIPv4 = Field(
        description="The first address of `ip_range`, where Hetzner answers: private-only servers send their "
                    "default route there, and the network routes 0.0.0.0/0 on to helsinki-gw (NAT).")
    subnets: dict[DnsLabel, SubnetSpec] = Field(
        min_length=1,
        description="The network's subnets by name. A running network's existing subnets are imported "
                    "(the stack config's `networkImport.subnets`); the others are created.")
    tunnel_range: PrivateIPv4Network = Field(
        description="The tunnels' addresses: each local server's tunnel gets a /24 of it (see `tunnel.index`).")
    scale_out_pool: PrivateIPv4Network = Field(
        description="Addresses of scale-out instances: instance k >= 2 of the server whose tunnel index is i gets "
                    "the pool's address 8i + k - 1, up to 8 instances; derived servers use the last octet of their "
                    "address as tunnel index.")
    wireguard: WireGuardSpec = Field(default=WireGuardSpec(), description="The tunnels to helsinki-gw.")


class ShardLocalSpec(Strict):
    size: Size = Field(description="Each local primary's size (its hcloud type is chosen per location).")
    first_address: PrivateIPv4 = Field(description="Shard 0's primary address (the plan's 10.2.0.10).")
    first_tunnel: int = Field(ge=0, le=255, description="Shard 0's tunnel index.")
    pool: PrivateIPv4Network = Field(
        description="Where shards 1 and up get their primary's address: shard N takes the pool's address N, and "
                    "the last octet as tunnel index, so adding shards never moves an existing one. Its size "
                    "bounds the shard count (`unde-infra plan` says what would have to change).")


class ShardReplicaSpec(Strict):
    subnet: DnsLabel = Field(description="The subnet of `network.subnets` the replicas are in.")
    first_host: int = Field(ge=2, le=65534, description="Shard N's replica is host first_host + N of that subnet.")
    type: str = Field(pattern=HCLOUD_TYPE, description="The replicas' hcloud type below `large_from_count` shards.")
    large_type: str = Field(pattern=HCLOUD_TYPE, description="The replicas' type from `large_from_count` shards on.")
    large_from_count: int = Field(
        ge=1, le=1024,
        description="The shard count from which every replica takes `large_type` (a change resizes the existing "
                    "replicas). The plan says CCX23 up to 4 shards, CCX33 from 8, and nothing for 5-7.")


DURABILITY = Literal["async", "sync"]


class ShardsSpec(Strict):
    count: int = Field(
        ge=1, le=1024,
        description="The shard count. `--shards N` overrides it for one command; the stack config's `shards` for "
                    "one stack.")
    local: ShardLocalSpec = Field(description="The shards' primaries at the local site.")
    replica: ShardReplicaSpec = Field(description="Each shard's hot standby in Helsinki.")
    durability: DURABILITY = Field(
        default="async",
        description="How a commit is acknowledged, for every shard unless overridden. async: once the local "
                    "primary has it (SPEC: synchronous_commit = local); a failover may lose what the primary "
                    "acknowledged in the loss window `unde-infra scenarios` states. sync: once the Helsinki "
                    "replica has it too (Patroni's synchronous_mode, not strict): one ~120 ms round trip per "
                    "commit, no acknowledged commit lost (docs/durability.md).")
    durability_overrides: dict[int, DURABILITY] = Field(
        default={}, description="Shard index -> durability, for the shards that differ from `durability`.")


class EtcdMemberSpec(Strict):
    member: DnsLabel = Field(description="etcd's member name (it goes into initial-cluster, `name=url,...`).")
    host: ServerName = Field(description="The server (a key of `servers`) the member runs on.")


class EtcdSpec(Strict):
    placement: DnsLabel = Field(
        description="The placement in use, a key of `placements`. three-sites (default): one vote local, one in "
                    "Helsinki, one at the witness site, so either site can be lost. plan: SPEC's own placement, "
                    "where losing Helsinki stops writes on the local primaries (reported by `unde-infra "
                    "scenarios` and the policy report).")
    placements: dict[DnsLabel, list[EtcdMemberSpec]] = Field(
        min_length=1,
        description="Each placement's members (at least 3, an odd number, one a server); `scenarios --placement` "
                    "evaluates another without editing this file.")


class TaskSpec(Strict):
    description: str = Field(min_length=1, max_length=FREE_TEXT, description="What the task is, one line.")
    stateful: bool = Field(
        default=False,
        description="Its servers hold state: protected in Pulumi and by hcloud, never replaced, and a resize is "
                    "warned about. The stateful tasks of unde_infra/known.py stay stateful.")
    data: bool = Field(
        default=False,
        description="Its servers hold user or catalog data: no public IPv4 by default, never an entry point. The "
                    "data tasks of unde_infra/known.py stay data tasks.")
    entry_point: bool = Field(default=False, description="Its servers take the users' HTTPS from the internet.")
    services: list[SERVICE] = Field(
        default=[], description="What runs there, for the exporters, the firewalls and monitoring.")


class BucketSpec(Strict):
    purpose: str = Field(min_length=1, max_length=FREE_TEXT, description="What the bucket holds, one line.")


class ObjectStorageSpec(Strict):
    endpoint: Endpoint = Field(description="The S3 endpoint of Hetzner Object Storage (hel1.your-objectstorage.com).")
    region: DnsLabel = Field(description="The region requests are signed for (hel1).")
    buckets: dict[BucketName, BucketSpec] = Field(
        min_length=1,
        description="The buckets the helsinki stack creates, by name (unique per location across all customers, "
                    "hence the project prefix). unde-backups must be one: pgBackRest's repository.")


RETIRED_SECTION = "retired"


class TopologyFile(Strict):
    """config/topology.yaml: its sections, and what each holds. `unde_infra.model` reads it
    section by section, and a mapping section entry by entry, so that one bad server does not
    hide another's problems; the sections and their models are the ones named here."""

    plan_version: Annotated[str | int | float, Kind("text (\"7.2\") or a number")] = Field(
        description="The plan version this topology implements (\"7.2\"), 1-16 characters.")
    sites: dict[str, SiteSpec] = Field(
        description="The sites by name: helsinki and local (required) and witness (the third failure domain of "
                    "one etcd member, optional).")
    network: NetworkSpec = Field(description="The Helsinki network, its subnets, and the address plan of the tunnels.")
    shards: ShardsSpec = Field(
        description="The user-data shards: each a local primary and its hot standby in Helsinki, with the addresses "
                    "derived from the pools below.")
    etcd: EtcdSpec = Field(description="The etcd quorum Patroni uses, and where its members run.")
    tasks: dict[str, TaskSpec] = Field(
        description="What each task is, by name. The names are the closed set of unde_infra/known.py: a new task "
                    "needs code that builds it first.")
    servers: dict[ServerName, ServerSpec] = Field(
        description="Every server of both sites by name (shards and scale-out instances are derived). The "
                    "program needs exactly one gateway, one monitoring and one PostHog server in Helsinki and at "
                    "least one api server at the local site; it finds them by task, so they may be renamed.")
    object_storage: ObjectStorageSpec = Field(description="Hetzner Object Storage (S3-compatible) and its buckets.")
    retired: dict[ServerName, str] = Field(
        default={},
        description="Servers removed from the topology on purpose, name -> reason (one line): an adopted server "
                    "that leaves the topology without an entry here is a mandatory policy violation "
                    "(`adopted-servers-kept`; docs/operations.md).")


def _section_model(annotation: object) -> type[Strict]:
    """The model of a section, or of each entry of a mapping section."""
    model = get_args(annotation)[-1] if get_origin(annotation) is dict else annotation
    assert isinstance(model, type) and issubclass(model, Strict), annotation
    return model


_NOT_MODELLED = ("plan_version", RETIRED_SECTION)  # checked by hand in unde_infra.model
SECTIONS: dict[str, type[Strict]] = {
    name: _section_model(field.annotation)
    for name, field in TopologyFile.model_fields.items() if name not in _NOT_MODELLED
}
# Sections that map names to entries (each entry checked on its own).
MAPPING_SECTIONS = frozenset(
    name for name in SECTIONS if get_origin(TopologyFile.model_fields[name].annotation) is dict
)
