"""`unde-infra diagram`: the topology as a picture. One graph (sites, servers grouped by task, the
tunnels to helsinki-gw, each shard's replication to its replica, the etcd quorum, the public
entry points) written as Mermaid (GitLab renders it in merge requests; docs/architecture.md embeds it) and
as Graphviz DOT, which `dot` renders to SVG."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .model import DEFAULT_TOPOLOGY, HELSINKI, LOCAL, WITNESS, Inventory, Server, load_topology
from .out_dir import require_out_dir, writing_to
from .render.entry import api_instances, needs_load_balancer
from .render.wireguard import WITNESS_INTERFACE

# Beyond this many shards, shards 1..N-1 are drawn as one node (and their replicas as another),
# so the picture stays readable at 16 or 64 shards.
SHARDS_DRAWN_ONE_BY_ONE = 4
SITE_TITLES = {HELSINKI: "Helsinki (Hetzner Cloud hel1)", WITNESS: "Witness site (Hetzner fsn1)", LOCAL: "Local site (near the users)"}


@dataclass(frozen=True)
class Node:
    id: str
    label: tuple[str, ...]
    group: str
    kind: str = "server"  # server, data, gateway, etcd, entry, external, balancer


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    kind: str  # public, tunnel, replication, quorum


@dataclass
class Graph:
    groups: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> (title, parent)
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def category(server: Server) -> str:
    """The task group a server is drawn in."""
    if server.task in ("gateway", "etcd", "api"):
        return {"gateway": "gateway", "etcd": "etcd quorum", "api": "entry point"}[server.task]
    if server.task == "shard":
        return "shards (primaries)"
    if server.task == "shard-replica":
        return "shard replicas"
    if server.task in ("monitoring", "monitoring-local", "posthog"):
        return "monitoring and analytics"
    if server.task in ("standby-api", "standby-orchestrator"):
        return "warm standby"
    if server.data:
        return "databases"
    if server.stateful:
        return "caches and queues"
    return "agents" if server.site == LOCAL else "batch and catalog"


def node_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _size(server: Server, local_type: dict[str, str]) -> str:
    if server.dedicated:
        return f"{server.dedicated} dedicated"
    kind = server.hcloud_type or local_type.get(server.name)
    size = f"{server.vcpu} vCPU / {server.ram_gb:g} GB"
    return f"{kind} · {size}" if kind else size


def build_graph(inventory: Inventory, local_type: dict[str, str] | None = None) -> Graph:
    local_type = local_type or {}
    graph = Graph()
    graph.groups["internet"] = ("Internet", None)
    graph.nodes.append(Node("users", ("users",), "internet", "external"))
    shard_count = len(inventory.shards)
    folded = shard_count > SHARDS_DRAWN_ONE_BY_ONE
    for site in (LOCAL, HELSINKI, WITNESS):
        if any(s.site == site for s in inventory.servers.values()):
            graph.groups[site] = (SITE_TITLES[site], None)
    for server in sorted(inventory.servers.values(), key=lambda s: (s.site, category(s), s.shard or 0, s.name)):
        if folded and server.shard not in (None, 0):
            continue
        group = f"{server.site}:{category(server)}"
        graph.groups.setdefault(group, (category(server), server.site))
        kind = ("gateway" if server.task == "gateway" else "etcd" if server.task == "etcd" else
                "entry" if server.entry_point else "data" if server.data else "server")
        extra = " · existing" if server.existing else ""
        graph.nodes.append(Node(node_id(server.name), (server.name, f"{server.task}{extra}", _size(server, local_type)),
                                group, kind))
    if folded:
        last = shard_count - 1
        for role, site, prefix in (("shard", LOCAL, "local-shard"), ("shard-replica", HELSINKI, "shard-replica")):
            sample = next(s for s in inventory.servers.values() if s.task == role and s.shard == 1)
            group = f"{site}:{category(sample)}"
            graph.nodes.append(Node(node_id(f"{prefix}-1-{last}"),
                                    (f"{prefix}-1 … {prefix}-{last}", f"{last} × {role}", _size(sample, local_type)),
                                    group, "data"))
    gateway = node_id(inventory.gateway.name)
    entries = api_instances(inventory)
    if needs_load_balancer(inventory):
        graph.nodes.append(Node("load_balancer", ("load balancer", "HTTPS 443"), f"{LOCAL}:entry point", "balancer"))
        graph.edges.append(Edge("users", "load_balancer", "HTTPS 443", "public"))
        graph.edges += [Edge("load_balancer", node_id(s.name), "", "public") for s in entries]
    else:
        graph.edges += [Edge("users", node_id(s.name), "HTTPS 443", "public") for s in entries]
    for server, tunnel in inventory.tunnels():
        if folded and server.shard not in (None, 0):
            continue
        graph.edges.append(Edge(node_id(server.name), gateway, tunnel.interface, "tunnel"))
    if folded:
        graph.edges.append(Edge(node_id(f"local-shard-1-{shard_count - 1}"), gateway,
                                f"{shard_count - 1} tunnels wg-shard1 … wg-shard{shard_count - 1}", "tunnel"))
    for shard in inventory.shards[: 1 if folded else None]:
        graph.edges.append(Edge(node_id(shard.primary.name), node_id(shard.replica.name),
                                f"streaming replication ({shard.durability})", "replication"))
    if folded:
        graph.edges.append(Edge(node_id(f"local-shard-1-{shard_count - 1}"), node_id(f"shard-replica-1-{shard_count - 1}"),
                                "streaming replication, one replica each", "replication"))
    witness = next((m.host for m in inventory.etcd if m.site == WITNESS), None)
    local_member = next((m.host for m in inventory.etcd if m.site == LOCAL), None)
    if witness is not None and local_member is not None:
        graph.edges.append(Edge(node_id(local_member.name), node_id(witness.name),
                                f"{WITNESS_INTERFACE} (direct, not through Helsinki)", "tunnel"))
    members = inventory.etcd
    for i, member in enumerate(members):
        other = members[(i + 1) % len(members)]
        if len(members) > 1 and (len(members) > 2 or i == 0):
            graph.edges.append(Edge(node_id(member.host.name), node_id(other.host.name),
                                    f"etcd {member.member} ↔ {other.member}", "quorum"))
    return graph


# --------------------------------------------------------------------------------------------
# Mermaid


MERMAID_SHAPES = {"external": ('(["', '"])'), "entry": ('[/"', '"\\]'), "data": ('[("', '")]'),
                  "gateway": ('{{"', '"}}'), "etcd": ('(("', '"))'), "balancer": ('>"', '"]'), "server": ('["', '"]')}
MERMAID_ARROWS = {"public": "==>", "tunnel": "-.-", "replication": "==>", "quorum": "---"}


def to_mermaid(graph: Graph) -> str:
    lines = ["flowchart LR"]

    def emit(parent: str | None, depth: int) -> None:
        for group, (title, group_parent) in graph.groups.items():
            if group_parent != parent:
                continue
            pad = "  " * depth
            lines.append(f'{pad}subgraph {node_id(group)}["{_mermaid_text(title)}"]')
            for node in graph.nodes:
                if node.group == group:
                    opening, closing = MERMAID_SHAPES[node.kind]
                    lines.append(f"{pad}  {node.id}{opening}{'<br/>'.join(_mermaid_text(t) for t in node.label)}{closing}")
            emit(group, depth + 1)
            lines.append(f"{pad}end")

    emit(None, 1)
    for edge in graph.edges:
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"  {edge.source} {MERMAID_ARROWS[edge.kind]}{label} {edge.target}")
    styles = {"entry": "fill:#e8f5e9,stroke:#2e7d32", "gateway": "fill:#e3f2fd,stroke:#1565c0",
              "etcd": "fill:#fff3e0,stroke:#e65100", "data": "fill:#f3e5f5,stroke:#6a1b9a"}
    for kind, style in styles.items():
        ids = [n.id for n in graph.nodes if n.kind == kind]
        if ids:
            lines.append(f"  classDef {kind} {style}")
            lines.append(f"  class {','.join(ids)} {kind}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


# --------------------------------------------------------------------------------------------
# Graphviz


DOT_NODE = {"external": 'shape=oval, style=filled, fillcolor="#ffffff"',
            "entry": 'shape=box, style="rounded,filled", fillcolor="#e8f5e9", color="#2e7d32", penwidth=2',
            "balancer": 'shape=box, style="rounded,filled", fillcolor="#e8f5e9", color="#2e7d32"',
            "data": 'shape=cylinder, style=filled, fillcolor="#f3e5f5", color="#6a1b9a"',
            "gateway": 'shape=hexagon, style=filled, fillcolor="#e3f2fd", color="#1565c0", penwidth=2',
            "etcd": 'shape=box, style="rounded,filled", fillcolor="#fff3e0", color="#e65100"',
            "server": 'shape=box, style="rounded,filled", fillcolor="#fafafa"'}
DOT_EDGE = {"public": 'color="#2e7d32", penwidth=2.5, fontcolor="#2e7d32"',
            "tunnel": 'style=dashed, color="#1565c0", fontcolor="#1565c0", arrowhead=none',
            "replication": 'color="#6a1b9a", penwidth=2, fontcolor="#6a1b9a"',
            "quorum": 'style=dotted, color="#e65100", penwidth=2, fontcolor="#e65100", arrowhead=none'}


def to_dot(graph: Graph, title: str) -> str:
    lines = ["digraph unde {", '  graph [rankdir=LR, fontname="Helvetica", fontsize=12, nodesep=0.25, ranksep=1.1, '
             f'newrank=true, label="{_dot_text(title)}", labelloc=t];',
             '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=9];']

    def emit(parent: str | None, depth: int) -> None:
        for group, (group_title, group_parent) in graph.groups.items():
            if group_parent != parent:
                continue
            pad = "  " * depth
            lines.append(f"{pad}subgraph cluster_{node_id(group)} {{")
            lines.append(f'{pad}  label="{_dot_text(group_title)}"; style="rounded"; color="#90a4ae";')
            for node in graph.nodes:
                if node.group == group:
                    label = "\\n".join(_dot_text(t) for t in node.label)
                    lines.append(f'{pad}  {node.id} [label="{label}", {DOT_NODE[node.kind]}];')
            emit(group, depth + 1)
            lines.append(f"{pad}}}")

    emit(None, 1)
    for edge in graph.edges:
        lines.append(f'  {edge.source} -> {edge.target} [label="{_dot_text(edge.label)}", {DOT_EDGE[edge.kind]}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_svg(dot_text: str, svg: Path) -> None:
    """Graphviz's `dot` renders the SVG (Debian package graphviz)."""
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError("`dot` is not installed (Debian package graphviz; `make test` installs it)")
    subprocess.run([dot, "-Tsvg", "-o", str(svg)], input=dot_text, text=True, check=True, timeout=120)


def local_types(inventory: Inventory) -> dict[str, str]:
    """The hcloud type the local stack would choose for each local server (provider hcloud)."""
    from .cost import topology_cost
    from .settings import stack_settings

    settings = stack_settings(LOCAL)
    if settings.provider != "hcloud":
        return {}
    return {line.name: line.product for line in topology_cost(inventory, settings).lines
            if line.site == LOCAL and line.product and line.kind == "hcloud"}


DIAGRAM_FILES = ("topology.mmd", "topology.md", "topology.dot", "topology.svg")


def cmd_diagram(args: argparse.Namespace) -> int:
    require_out_dir(args.out, files=DIAGRAM_FILES)
    inventory = load_topology(args.topology, shards=args.shards)
    graph = build_graph(inventory, local_types(inventory))
    shards = len(inventory.shards)
    title = f"UNDE topology: {len(inventory.servers)} servers, {shards} shard{'' if shards == 1 else 's'}, etcd {inventory.etcd_placement}"
    mermaid = to_mermaid(graph)
    dot_text = to_dot(graph, title)
    mmd, md, dot, svg = (args.out / name for name in DIAGRAM_FILES)
    with writing_to(args.out):
        args.out.mkdir(parents=True, exist_ok=True)
        mmd.write_text(mermaid, encoding="utf-8")
        md.write_text(f"# {title}\n\n```mermaid\n{mermaid}```\n", encoding="utf-8")
        dot.write_text(dot_text, encoding="utf-8")
        render_svg(dot_text, svg)
    print(f"written: {', '.join(str(path) for path in (mmd, md, dot, svg))}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("diagram", help="the topology as Mermaid and as SVG (Graphviz)")
    parser.add_argument("--out", type=Path, default=Path("build/diagram"))
    parser.add_argument("--shards", type=int, default=None, help="draw the topology at N shards")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.set_defaults(func=cmd_diagram)
