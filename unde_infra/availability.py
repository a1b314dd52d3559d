"""Where each server is ordered and as which hcloud type, and whether Hetzner sells that type
there (config/server_types.yaml, `locations`). hcloud refuses a type a location does not sell
only when `pulumi up` orders the server, so this is checked before, from the topology and the
stack's settings alone.

A server's location: a Helsinki-stack server's is its site's (`sites.<site>.location`); a local
server's is the local stack's `location`; a shard replica's is the local stack's replica
location (the replicas are built by the local stack, in Helsinki). Its type: the topology's
(`servers.<name>.type`, `shards.replica.type` / `large_type`), or for a local server without one
the cheapest type of its location that fits (settings.local_type, sold there by construction)."""

from __future__ import annotations

from dataclasses import dataclass

from .model import LOCAL, SHARD_REPLICA_TASK, Inventory, Server, replica_type_for
from .schema import ServerTypeSpec
from .settings import StackSettings, local_type
from .sizing import not_sold_message

# A Helsinki-stack site without a location of its own is built in Helsinki (components/sites.py).
DEFAULT_SITE_LOCATION = "hel1"


def site_location(inventory: Inventory, site: str) -> str:
    """The hcloud location of a site the helsinki stack builds."""
    return inventory.sites[site].location or DEFAULT_SITE_LOCATION


@dataclass(frozen=True)
class Placement:
    """The hcloud server a topology server becomes: its type, where it is ordered, and the
    setting that names the type (for the report of a type not sold there)."""

    server: Server
    hcloud_type: str | None  # None: no type of the location fits (settings.check_against_inventory says so)
    location: str
    type_path: str  # servers.<name>.type, shards.replica.type, ... or `location` for a chosen type
    # An adopted server keeps the type it runs (serverType is ignored) unless it opts in to a
    # resize: only then, or for a new server, is a type ordered.
    ordered: bool
    sold: bool


def placement(server: Server, inventory: Inventory, settings: StackSettings) -> Placement | None:
    """`server` as an hcloud server, or None when it is none: a Robot server, or a host of the
    local stack's `provider: existing`. `settings`: those of the stack that builds the server
    (only the local stack's settings place a server; the helsinki stack's come from the topology)."""
    if server.dedicated is not None:
        return None
    hcloud_type: str | None
    if server.site == LOCAL:
        if settings.provider != "hcloud":
            return None
        location = settings.location
        if server.hcloud_type is not None:
            hcloud_type, path = server.hcloud_type, f"servers.{server.name}.type"
        else:
            hcloud_type, path = local_type(server, settings, inventory), "location"
    elif server.task == SHARD_REPLICA_TASK:
        location = settings.replica_location
        spec = inventory.shards_spec
        hcloud_type = server.hcloud_type
        large = replica_type_for(spec, len(inventory.shards)) == spec.replica.large_type
        path = "shards.replica.large_type" if large else "shards.replica.type"
    else:
        location = site_location(inventory, server.site)
        hcloud_type, path = server.hcloud_type, f"servers.{server.name}.type"
    spec_of_type = inventory.server_types.get(hcloud_type) if hcloud_type else None
    sold = spec_of_type is not None and location in spec_of_type.locations
    ordered = not server.existing or server.resize
    return Placement(server, hcloud_type, location, path, ordered, sold)


def type_location_problems(inventory: Inventory, settings: StackSettings) -> list[tuple[str, str]]:
    """(path, message) for every server of the stack that `settings` build whose hcloud type is
    ordered in a location that does not sell it."""
    servers = sorted(inventory.stack_servers(settings.site), key=lambda s: (-1 if s.shard is None else s.shard, s.name))
    placed = [placement(server, inventory, settings) for server in servers]
    return not_sold_problems([p for p in placed if p is not None], inventory.server_types)


def not_sold_problems(placements: list[Placement], types: dict[str, ServerTypeSpec]) -> list[tuple[str, str]]:
    """(path, message) of each type `placements` order where it is not sold: one per setting
    and location (the replicas share theirs, and are named)."""
    found: dict[tuple[str, str], list[Placement]] = {}
    for placed in placements:
        if placed.hcloud_type is not None and placed.ordered and not placed.sold:
            found.setdefault((placed.type_path, placed.location), []).append(placed)
    problems = []
    for (path, location), group in found.items():
        message = not_sold_message(group[0].hcloud_type or "", location, types)
        if not path.startswith("servers."):
            message += f"; for {_names([p.server.name for p in group])}"
        problems.append((path, message))
    return problems


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]} ({len(names)} servers)"

