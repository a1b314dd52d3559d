"""The shape of `config/topology.yaml` and `config/server_types.yaml`, as pydantic models.

These models check each section on its own; `unde_infra.model` then cross-checks the sections
and derives the inventory. Every model forbids unknown keys, so a typo is an error, not a
silently ignored setting. They are strict: a count is a whole number, never `true` (YAML's
`yes`) or text; a float is finite; every address, name and key is checked by its kind
(`unde_infra.validators`), so what reaches a renderer is what the model validated.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .validators import (
    BucketName,
    DnsLabel,
    Endpoint,
    InterfaceName,
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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Size(Strict):
    vcpu: int = Field(gt=0, le=1024)
    ram_gb: float = Field(gt=0, le=16384)


class ServerTypeSpec(Strict):
    vcpu: int = Field(gt=0, le=1024)
    ram_gb: float = Field(gt=0, le=16384)
    disk_gb: int = Field(gt=0, le=1_000_000)
    cpu: Literal["shared", "dedicated"]
    eur_month: float = Field(gt=0, le=100_000)
    locations: list[Location] = Field(min_length=1)


class ServerTypesFile(Strict):
    # YAML anchors (lists of locations) live beside `types`.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)
    types: dict[str, ServerTypeSpec] = Field(min_length=1)


class TunnelSpec(Strict):
    interface: InterfaceName
    index: int = Field(ge=0, le=255)


INBOUND_PROTOCOL = Literal["tcp", "udp", "icmp"]
ANYWHERE_SOURCES = ("0.0.0.0/0", "::/0")


class InboundSpec(Strict):
    """Public traffic a server that runs today serves: what its current hcloud firewall allows,
    or what `ss -tlnp` shows listening on its public address when it has no firewall."""

    protocol: INBOUND_PROTOCOL = "tcp"
    port: int | str | None = None  # 443 or "8000-8100"; icmp has none
    sources: list[str] = Field(default_factory=lambda: list(ANYWHERE_SOURCES), min_length=1)
    reason: str = Field(min_length=1, max_length=FREE_TEXT)
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
    site: DnsLabel
    # A list is accepted by the parser only so that "two tasks" can be reported as such.
    task: str | list[str] | None = None
    type: str | None = Field(default=None, pattern=HCLOUD_TYPE)
    dedicated: str | None = Field(default=None, pattern=ROBOT_PRODUCT)
    size: Size | None = None
    ip: PrivateIPv4
    # true/false, or the known public address of an existing server (globally routable).
    public_ipv4: PublicIPv4OrFlag = None
    existing: bool = False
    tunnel: TunnelSpec | None = None
    etcd_placement: DnsLabel | None = None
    # Stateless scale-out: instances of this server's task (local-app-2, ...).
    instances: int = Field(default=1, ge=1, le=8)
    # An existing server keeps the type it runs with, whatever `type` says, unless this opts in
    # to a resize (hcloud powers the server off for it).
    resize: bool = False
    # The operating system an existing server runs (it is never re-imaged); a server the program
    # creates runs CREATED_OS (model.py). Default for an existing server: debian-12.
    os: Literal["debian-12", "debian-13"] | None = None
    # What the server serves publicly today; the firewalls keep it open unless `close` says so.
    # Not given: not known yet (a real run of a running server waits for it); [] says "nothing".
    inbound: list[InboundSpec] | None = None


class SiteSpec(Strict):
    provider: Literal["hcloud"] | None = None
    location: Location | None = None
    network_zone: NetworkZone | None = None
    range: PrivateIPv4Network
    max_size: Size | None = None


class SubnetSpec(Strict):
    type: Literal["cloud", "vswitch"]
    ip_range: PrivateIPv4Network


class WireGuardSpec(Strict):
    # linux: Debian on helsinki-gw terminates the tunnels (wg-quick + nftables).
    # routeros: a RouterOS v7 router terminates them (script applied over SSH).
    mode: Literal["linux", "routeros"] = "linux"
    listen_port_base: int = Field(default=51820, ge=1024, le=65535 - 255)
    mtu: int = Field(default=1420, ge=1280, le=1450)
    keepalive_seconds: int = Field(default=25, ge=0, le=120)


class NetworkSpec(Strict):
    ip_range: PrivateIPv4Network
    gateway: PrivateIPv4
    subnets: dict[DnsLabel, SubnetSpec] = Field(min_length=1)
    tunnel_range: PrivateIPv4Network
    scale_out_pool: PrivateIPv4Network
    wireguard: WireGuardSpec = WireGuardSpec()


class ShardLocalSpec(Strict):
    size: Size
    first_address: PrivateIPv4
    first_tunnel: int = Field(ge=0, le=255)
    pool: PrivateIPv4Network


class ShardReplicaSpec(Strict):
    subnet: DnsLabel
    first_host: int = Field(ge=2, le=65534)
    type: str = Field(pattern=HCLOUD_TYPE)
    large_type: str = Field(pattern=HCLOUD_TYPE)
    large_from_count: int = Field(ge=1, le=1024)


DURABILITY = Literal["async", "sync"]


class ShardsSpec(Strict):
    count: int = Field(ge=1, le=1024)
    local: ShardLocalSpec
    replica: ShardReplicaSpec
    # async: a commit returns once the local primary has it (SPEC: synchronous_commit = local).
    # sync: once the Helsinki replica has it too (Patroni's synchronous_mode, not strict).
    durability: DURABILITY = "async"
    # Shard index -> durability, for the shards that differ from `durability`.
    durability_overrides: dict[int, DURABILITY] = {}


class EtcdMemberSpec(Strict):
    # etcd's member name: it goes into initial-cluster (`name=url,...`), so a DNS label.
    member: DnsLabel
    host: ServerName


class EtcdSpec(Strict):
    placement: DnsLabel
    placements: dict[DnsLabel, list[EtcdMemberSpec]] = Field(min_length=1)


class TaskSpec(Strict):
    description: str = Field(min_length=1, max_length=FREE_TEXT)
    stateful: bool = False
    data: bool = False
    entry_point: bool = False
    services: list[SERVICE] = []


class BucketSpec(Strict):
    purpose: str = Field(min_length=1, max_length=FREE_TEXT)


class ObjectStorageSpec(Strict):
    endpoint: Endpoint
    region: DnsLabel
    buckets: dict[BucketName, BucketSpec] = Field(min_length=1)


SECTIONS: dict[str, type[Strict]] = {
    "sites": SiteSpec,
    "network": NetworkSpec,
    "shards": ShardsSpec,
    "etcd": EtcdSpec,
    "tasks": TaskSpec,
    "servers": ServerSpec,
    "object_storage": ObjectStorageSpec,
}
# Optional: servers removed from the topology on purpose, name -> reason (see README, "Retiring
# an adopted server").
RETIRED_SECTION = "retired"
