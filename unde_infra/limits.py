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


# SSH connections the delivery may have open to one host (a jump host included) at the same
# time. `pulumi up` starts every resource whose dependencies are done at once, and each remote
# command is one SSH connection (two through a jump host). OpenSSH's sshd drops new
# unauthenticated connections beyond MaxStartups (default 10:30:100: from the 11th connection
# still authenticating, 30 % are refused, rising to all at 100), and from OpenSSH 9.8
# PerSourcePenalties then blocks the source address for a while: a deploy would fail half-way
# and lock the runner out. The delivery never loosens sshd; it waits instead
# (components/remote_command.DeliveryQueues): 8 leaves 2 of the 10 for operators and
# monitoring. The deploy jobs of .gitlab-ci.yml run one stack at a time (resource_group
# unde-infra-production), so the stacks never add up.
SSHD_MAX_STARTUPS = 10
SSH_CONNECTION_BUDGET = 8
