"""The local site's size limit (SPEC: at most 16 vCPU / 32 GB per local server).

One place for the rule: the topology model rejects an oversized local server and the policy pack
rejects an oversized local resource, both through `size_over_limit`."""

from __future__ import annotations

from typing import Protocol


class SizeLike(Protocol):
    @property
    def vcpu(self) -> int: ...

    @property
    def ram_gb(self) -> float: ...


def size_over_limit(vcpu: int, ram_gb: float, limit: SizeLike) -> str | None:
    """A message when the size exceeds the limit, None when it fits."""
    over = []
    if vcpu > limit.vcpu:
        over.append(f"{vcpu} vCPU > {limit.vcpu}")
    if ram_gb > limit.ram_gb:
        over.append(f"{ram_gb:g} GB RAM > {limit.ram_gb:g} GB")
    if not over:
        return None
    return f"over the local limit of {limit.vcpu} vCPU / {limit.ram_gb:g} GB per server ({', '.join(over)})"
