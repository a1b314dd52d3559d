"""The delivery as a plan: every SSH command a stack runs, where it connects and what it waits for.

Built from an offline run (offline.StackRun): one `PlannedCommand` per `command:remote:Command`
(and per `command:remote:CopyToRemote`, the RouterOS upload, which dials SSH too), with the
commands it must wait for under `pulumi up` (`after`), found by following the recorded
dependencies through resources that are no command and through components (a dependency on a
component is one on all its descendants). The plan carries the offline placeholder secrets, so it
is never written by the preview; a converge lab reads it (`to_json`/`from_json`) to run the
delivery over real SSH as `pulumi up` would.

`peak_connections` answers the question the delivery is designed around (docs/architecture.md, "Delivery and
sshd's MaxStartups"): how many of these commands can be dialling one SSH endpoint at the same
time when `pulumi up` runs everything whose dependencies are done at once, whatever each command
takes.

    python -m unde_infra.delivery_plan --shards 16     # endpoint, commands, peak per stack
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .naming import REMOTE_COMMAND_TYPE, REMOTE_COPY_TYPE, bootstrapped_server

if TYPE_CHECKING:
    from .offline import Record, StackRun

SSH_TYPES = (REMOTE_COMMAND_TYPE, REMOTE_COPY_TYPE)


@dataclass(frozen=True)
class PlannedCommand:
    """One SSH command of the delivery. `stdin` and `create` carry offline placeholder secrets."""

    name: str
    urn: str
    server: str  # the server it runs on: the part of the name before the first ':', or the bootstrapped one
    host: str  # connection.host: the address SSH dials (through `jump` when there is one)
    user: str
    port: int
    jump: str | None  # connection.proxy.host
    create: str | None  # None for an upload (command:remote:CopyToRemote)
    stdin: str | None  # an upload's source text
    triggers: list[Any]
    # The URNs of the commands it waits for (sorted, not transitively reduced). URNs, not names:
    # names repeat under components of different types (local-shard-0:apply is the shard's
    # setup and its tunnel's).
    after: list[str]
    type: str = REMOTE_COMMAND_TYPE

    def endpoints(self) -> tuple[str, ...]:
        """The SSH endpoints it dials: its host, and its jump host first when it has one."""
        return (self.host,) if self.jump is None else (self.jump, self.host)


@dataclass
class DeliveryPlan:
    stack: str
    commands: list[PlannedCommand] = field(default_factory=list)  # sorted by name, then URN

    def by_urn(self) -> dict[str, PlannedCommand]:
        return {c.urn: c for c in self.commands}

    def to_json(self) -> str:
        return json.dumps({"stack": self.stack, "commands": [asdict(c) for c in self.commands]}, indent=1,
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeliveryPlan:
        data = json.loads(text)
        return cls(data["stack"], [PlannedCommand(**c) for c in data["commands"]])


def _server_of(record: Record) -> str:
    return bootstrapped_server(record.type, record.name) or record.name.partition(":")[0]


def plan_from_run(run: StackRun) -> DeliveryPlan:
    """The plan of what `run` registered."""
    from .offline import unwrap_secrets

    by_urn = {r.urn: r for r in run.records}
    children: dict[str, list[str]] = {}
    for record in run.records:
        if record.parent is not None:
            children.setdefault(record.parent, []).append(record.urn)
    waits: dict[str, frozenset[str]] = {}

    def waited_for(urn: str, visiting: frozenset[str]) -> frozenset[str]:
        """The commands (URNs) that are done once `urn` is done (itself, when it is one)."""
        if urn in waits:
            return waits[urn]
        record = by_urn.get(urn)
        if record is None or urn in visiting:  # the stack itself, a provider, or a loop
            return frozenset()
        visiting = visiting | {urn}
        if record.type in SSH_TYPES:
            result = frozenset({record.urn})
        elif not record.custom:  # a component: done when all its descendants are
            result = frozenset().union(*(waited_for(c, visiting) for c in children.get(urn, [])))
        else:
            result = frozenset().union(*(waited_for(d, visiting) for d in _needs(record, by_urn)))
        waits[urn] = result
        return result

    commands = []
    for record in run.records:
        if record.type not in SSH_TYPES:
            continue
        inputs = unwrap_secrets(record.inputs)
        connection = inputs.get("connection") or {}
        proxy = connection.get("proxy") or None
        after = set().union(*(waited_for(d, frozenset({record.urn})) for d in _needs(record, by_urn)))
        after.discard(record.urn)
        source = inputs.get("source")
        commands.append(PlannedCommand(
            name=record.name,
            urn=record.urn,
            server=_server_of(record),
            host=str(connection.get("host", "")),
            user=str(connection.get("user", "root")),
            port=int(connection.get("port", 22)),
            jump=str(proxy["host"]) if proxy and proxy.get("host") else None,
            create=inputs.get("create"),
            stdin=inputs.get("stdin", getattr(source, "text", None)),
            triggers=list(inputs.get("triggers") or []),
            after=sorted(after),
            type=record.type,
        ))
    return DeliveryPlan(run.stack, sorted(commands, key=lambda c: (c.name, c.urn)))


def _needs(record: Record, by_urn: dict[str, Record]) -> list[str]:
    """What the engine waits for before it creates `record`: its dependencies, and its parent
    when that is a custom resource (a component parent is registered at once)."""
    needs = list(record.dependencies)
    parent = by_urn.get(record.parent or "")
    if parent is not None and parent.custom:
        needs.append(parent.urn)
    return needs


def predecessors(plan: DeliveryPlan) -> dict[int, int]:
    """For each command (by its index in `plan.commands`), the bitset of the commands that must
    be done before it starts: the transitive closure of `after`."""
    index = {c.urn: i for i, c in enumerate(plan.commands)}
    closure: dict[int, int] = {}

    def reach(i: int, visiting: set[int]) -> int:
        if i in closure:
            return closure[i]
        if i in visiting:
            raise ValueError(f"the plan has a cycle through {plan.commands[i].name}")
        visiting.add(i)
        bits = 0
        for urn in plan.commands[i].after:
            j = index[urn]
            bits |= (1 << j) | reach(j, visiting)
        visiting.discard(i)
        closure[i] = bits
        return bits

    # Iteratively deep chains (one per host) would exceed Python's recursion limit: close in
    # an order where every command's `after` is closed first.
    for i in _topological(plan, index):
        reach(i, set())
    return {i: closure[i] for i in range(len(plan.commands))}


def _topological(plan: DeliveryPlan, index: dict[str, int]) -> list[int]:
    pending = {i: len(c.after) for i, c in enumerate(plan.commands)}
    users: dict[int, list[int]] = {}
    for i, c in enumerate(plan.commands):
        for urn in c.after:
            users.setdefault(index[urn], []).append(i)
    ready = [i for i, n in pending.items() if n == 0]
    order = []
    while ready:
        i = ready.pop()
        order.append(i)
        for k in users.get(i, []):
            pending[k] -= 1
            if pending[k] == 0:
                ready.append(k)
    if len(order) != len(plan.commands):
        raise ValueError("the plan has a cycle")
    return order


def width(members: Sequence[int], before: dict[int, int]) -> int:
    """The largest antichain of the partial order `before` (i precedes j when bit i of
    before[j] is set; transitively closed) restricted to `members`: exactly, by Dilworth's
    theorem (width = n - a maximum matching of the bipartite comparability graph, the size of a
    minimum chain cover), the matching by Hopcroft-Karp."""
    n = len(members)
    if n == 0:
        return 0
    position = {m: k for k, m in enumerate(members)}
    mask = 0
    for m in members:
        mask |= 1 << m
    # successors[k]: the members that come after member k (k -> l is an edge of the bipartite graph).
    successors: list[list[int]] = [[] for _ in range(n)]
    for m in members:
        earlier = before[m] & mask
        while earlier:
            low = earlier & -earlier
            successors[position[low.bit_length() - 1]].append(position[m])
            earlier ^= low
    return n - _maximum_matching(successors, n)


def _maximum_matching(adjacency: list[list[int]], right_size: int) -> int:
    """Hopcroft-Karp on a bipartite graph: left vertex u joins the right vertices adjacency[u]."""
    infinity = len(adjacency) + 1
    match_left = [-1] * len(adjacency)
    match_right = [-1] * right_size
    distance = [0] * len(adjacency)
    next_edge = [0] * len(adjacency)

    def bfs() -> bool:
        queue = []
        for u in range(len(adjacency)):
            if match_left[u] == -1:
                distance[u] = 0
                queue.append(u)
            else:
                distance[u] = infinity
        found = False
        head = 0
        while head < len(queue):
            u = queue[head]
            head += 1
            for v in adjacency[u]:
                w = match_right[v]
                if w == -1:
                    found = True
                elif distance[w] == infinity:
                    distance[w] = distance[u] + 1
                    queue.append(w)
        return found

    def augment(root: int) -> bool:
        # Iterative, so that long augmenting paths do not hit the recursion limit: lefts[k]
        # reached rights[k - 1]'s partner; next_edge persists through a phase, as in the paper.
        lefts, rights = [root], []
        while lefts:
            u = lefts[-1]
            edges = adjacency[u]
            advanced = False
            while next_edge[u] < len(edges):
                v = edges[next_edge[u]]
                next_edge[u] += 1
                w = match_right[v]
                if w == -1:
                    rights.append(v)
                    for left, right in zip(lefts, rights, strict=True):
                        match_left[left] = right
                        match_right[right] = left
                    return True
                if distance[w] == distance[u] + 1:
                    rights.append(v)
                    lefts.append(w)
                    advanced = True
                    break
            if not advanced:
                distance[u] = infinity
                lefts.pop()
                if rights:
                    rights.pop()
        return False

    matched = 0
    while bfs():
        next_edge = [0] * len(adjacency)
        for u in range(len(adjacency)):
            if match_left[u] == -1 and augment(u):
                matched += 1
    return matched


def endpoint_members(plan: DeliveryPlan) -> dict[str, list[int]]:
    """For every SSH endpoint (a target address, a jump host's address), the commands that
    dial it (by index in `plan.commands`)."""
    members: dict[str, list[int]] = {}
    for i, c in enumerate(plan.commands):
        for endpoint in c.endpoints():
            members.setdefault(endpoint, []).append(i)
    return members


def peak_connections(plan: DeliveryPlan) -> dict[str, int]:
    """For every SSH endpoint, the largest number of the plan's commands that can be dialling it
    at the same time under unbounded parallelism, whatever each command takes: the width of the
    order `after` (transitively closed) restricted to the commands that touch the endpoint (a
    command touches its target and its jump host). Exact (Dilworth and Hopcroft-Karp), not a
    bound."""
    before = predecessors(plan)
    return {endpoint: width(members, before) for endpoint, members in sorted(endpoint_members(plan).items())}


def endpoint_names(plan: DeliveryPlan) -> dict[str, str]:
    """A readable name for each endpoint: the server(s) reached at that address directly."""
    names: dict[str, set[str]] = {}
    for c in plan.commands:
        names.setdefault(c.host, set()).add(c.server)
    return {endpoint: "/".join(sorted(servers)) for endpoint, servers in names.items()}


def table(plan: DeliveryPlan) -> list[tuple[str, str, int, int]]:
    """(endpoint, its server, commands that dial it, peak), the busiest first."""
    peaks = peak_connections(plan)
    members = endpoint_members(plan)
    names = endpoint_names(plan)
    rows = [(endpoint, names.get(endpoint, "?"), len(members[endpoint]), peak) for endpoint, peak in peaks.items()]
    return sorted(rows, key=lambda r: (-r[3], -r[2], r[1]))


def plan_for(stack: str, shards: int | None = None, **overrides: Any) -> DeliveryPlan:
    """Run `stack`'s program offline (as `unde-infra preview` does, with stack-config
    `overrides`) and return its delivery plan."""
    from .gc_settings import quiet_gc
    from .preview import prepare, run_stacks

    with quiet_gc():
        (result,) = run_stacks(prepare([stack], None, shards, config_overrides=overrides or None))
    return plan_from_run(result.run)


def format_table(plan: DeliveryPlan) -> str:
    rows = table(plan)
    lines = [f"{plan.stack}: {len(plan.commands)} SSH commands", f"  {'endpoint':<18} {'server':<28} commands  peak"]
    lines += [f"  {endpoint:<18} {server:<28} {count:>8}  {peak:>4}" for endpoint, server, count, peak in rows]
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unde_infra.delivery_plan",
                                     description="Per SSH endpoint: the commands that dial it and their peak.")
    parser.add_argument("--stack", choices=["helsinki", "local", "all"], default="all")
    parser.add_argument("--shards", type=int, default=None)
    args = parser.parse_args(list(argv) if argv is not None else None)
    import asyncio

    stacks = ["helsinki", "local"] if args.stack == "all" else [args.stack]
    for stack in stacks:
        asyncio.set_event_loop(asyncio.new_event_loop())
        print(format_table(plan_for(stack, args.shards)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
