"""The shape of `config/topology.yaml` and `config/server_types.yaml`, as pydantic models.

These models check each section on its own; `unde_infra.model` then cross-checks the sections
and derives the inventory. Every model forbids unknown keys, so a typo is an error, not a
silently ignored setting.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SERVER_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"
SERVICE = Literal["postgres", "patroni", "pgbouncer", "redis", "etcd"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Size(Strict):
    vcpu: int = Field(gt=0)
    ram_gb: float = Field(gt=0)


class ServerTypeSpec(Strict):
    vcpu: int = Field(gt=0)
    ram_gb: float = Field(gt=0)
    disk_gb: int = Field(gt=0)
    cpu: Literal["shared", "dedicated"]
    eur_month: float = Field(gt=0)
    locations: list[str]


class ServerTypesFile(Strict):
    model_config = ConfigDict(extra="ignore", frozen=True)  # YAML anchors live beside `types`
    types: dict[str, ServerTypeSpec]


class TunnelSpec(Strict):
    interface: str = Field(pattern=r"^[a-z][a-z0-9-]{0,14}$", max_length=15)
    index: int = Field(ge=0, le=255)


INBOUND_PROTOCOL = Literal["tcp", "udp", "icmp"]
ANYWHERE_SOURCES = ("0.0.0.0/0", "::/0")


class InboundSpec(Strict):
    """Public traffic a server that runs today serves: what its current hcloud firewall allows,
    or what `ss -tlnp` shows listening on its public address when it has no firewall."""

    protocol: INBOUND_PROTOCOL = "tcp"
    port: int | str | None = None  # 443 or "8000-8100"; icmp has none
    sources: list[str] = Field(default_factory=lambda: list(ANYWHERE_SOURCES), min_length=1)
    reason: str = Field(min_length=1)
    # The acknowledgement: the first run stops serving this on purpose (the new firewalls do
    # not allow it). Without it, traffic the new firewalls would block is a policy violation.
    close: bool = False

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
    site: str
    # A list is accepted by the parser only so that "two tasks" can be reported as such.
    task: str | list[str] | None = None
    type: str | None = None
    dedicated: str | None = None
    size: Size | None = None
    ip: IPv4Address
    public_ipv4: bool | IPv4Address | None = None
    existing: bool = False
    tunnel: TunnelSpec | None = None
    etcd_placement: str | None = None
    # Stateless scale-out: instances of this server's task (local-app-2, ...).
    instances: int = Field(default=1, ge=1, le=8)
    # An existing server keeps the type it runs with, whatever `type` says, unless this opts in
    # to a resize (hcloud powers the server off for it).
    resize: bool = False
    # What the server serves publicly today; the firewalls keep it open unless `close` says so.
    inbound: list[InboundSpec] = []


class SiteSpec(Strict):
    provider: Literal["hcloud"] | None = None
    location: str | None = None
    network_zone: str | None = None
    range: IPv4Network
    max_size: Size | None = None


class SubnetSpec(Strict):
    type: Literal["cloud", "vswitch"]
    ip_range: IPv4Network


class WireGuardSpec(Strict):
    # linux: Debian on helsinki-gw terminates the tunnels (wg-quick + nftables).
    # routeros: a RouterOS v7 router terminates them (script applied over SSH).
    mode: Literal["linux", "routeros"] = "linux"
    listen_port_base: int = Field(default=51820, ge=1024, le=65535 - 255)
    mtu: int = Field(default=1420, ge=1280, le=1450)
    keepalive_seconds: int = Field(default=25, ge=0, le=120)


class NetworkSpec(Strict):
    ip_range: IPv4Network
    gateway: IPv4Address
    subnets: dict[str, SubnetSpec]
    tunnel_range: IPv4Network
    scale_out_pool: IPv4Network
    wireguard: WireGuardSpec = WireGuardSpec()


class ShardLocalSpec(Strict):
    size: Size
    first_address: IPv4Address
    first_tunnel: int = Field(ge=0, le=255)
    pool: IPv4Network


class ShardReplicaSpec(Strict):
    subnet: str
    first_host: int = Field(ge=2)
    type: str
    large_type: str
    large_from_count: int = Field(ge=1)


DURABILITY = Literal["async", "sync"]


class ShardsSpec(Strict):
    count: int = Field(ge=1)
    local: ShardLocalSpec
    replica: ShardReplicaSpec
    # async: a commit returns once the local primary has it (SPEC: synchronous_commit = local).
    # sync: once the Helsinki replica has it too (Patroni's synchronous_mode, not strict).
    durability: DURABILITY = "async"
    # Shard index -> durability, for the shards that differ from `durability`.
    durability_overrides: dict[int, DURABILITY] = {}


class EtcdMemberSpec(Strict):
    member: str
    host: str


class EtcdSpec(Strict):
    placement: str
    placements: dict[str, list[EtcdMemberSpec]]


class TaskSpec(Strict):
    description: str
    stateful: bool = False
    data: bool = False
    entry_point: bool = False
    services: list[SERVICE] = []


class BucketSpec(Strict):
    purpose: str


class ObjectStorageSpec(Strict):
    endpoint: str
    region: str
    buckets: dict[str, BucketSpec]


SECTIONS: dict[str, type[Strict]] = {
    "sites": SiteSpec,
    "network": NetworkSpec,
    "shards": ShardsSpec,
    "etcd": EtcdSpec,
    "tasks": TaskSpec,
    "servers": ServerSpec,
    "object_storage": ObjectStorageSpec,
}
