"""Choosing an hcloud server type for a size: the cheapest type sold in the location that has
at least the size's vCPUs and RAM and stays within the site's limit."""

from __future__ import annotations

from .limits import SizeLike, size_over_limit
from .schema import ServerTypeSpec


def cheapest_type(
    vcpu: int, ram_gb: float, location: str, types: dict[str, ServerTypeSpec], limit: SizeLike | None = None
) -> str | None:
    fits = [
        (spec.eur_month, name)
        for name, spec in types.items()
        if location in spec.locations
        and spec.vcpu >= vcpu
        and spec.ram_gb >= ram_gb
        and (limit is None or size_over_limit(spec.vcpu, spec.ram_gb, limit) is None)
    ]
    return min(fits)[1] if fits else None



def not_sold_message(type_name: str, location: str, types: dict[str, ServerTypeSpec]) -> str:
    """Why `type_name` cannot be ordered in `location`, with where it is sold, what `location`
    sells (cheapest first) and the cheapest type there at least as large."""
    spec = types.get(type_name)
    where = ", ".join(sorted(spec.locations)) if spec else "nowhere: not in config/server_types.yaml"
    there = sorted((other.eur_month, name) for name, other in types.items() if location in other.locations)
    message = (f"{type_name} is not sold in {location} (sold in: {where}; "
               f"in {location}: {', '.join(name for _, name in there) or 'no type'})")
    larger = cheapest_type(spec.vcpu, spec.ram_gb, location, types) if spec else None
    if spec and larger:
        message += f"; the cheapest there with at least its {spec.vcpu} vCPU / {spec.ram_gb:g} GB: {larger}"
    return message

# Hetzner Cloud network zones by location: a private network spans the locations of one zone.
HCLOUD_NETWORK_ZONES = {
    "fsn1": "eu-central",
    "nbg1": "eu-central",
    "hel1": "eu-central",
    "ash": "us-east",
    "hil": "us-west",
    "sin": "ap-southeast",
}
