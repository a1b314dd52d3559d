"""`unde-infra cost`: what the topology costs per month, per server, per stack and in total, from
`config/pricing.yaml`, and how that compares with the plan's figures at each stage.

Two views of the same bill: `topology_cost` prices the inventory as the stacks would build it
(the local site's hcloud types chosen for the stack's location, existing hosts priced from their
stack config), and `resources_cost` prices what a preview registered (`resources.json`), for the
diff of two previews. Both price through `Pricing`, so a figure lives in one place."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import Problems
from .model import DEFAULT_TOPOLOGY, HELSINKI, LOCAL, STACKS, Inventory, Server, load_topology, stack_of
from .naming import BUCKET_RESOURCE_TYPE, LOAD_BALANCER_RESOURCE_TYPE, LOAD_BALANCER_TYPE, SERVER_TYPE
from .pricing import PlanFigure, Pricing, load_pricing
from .render.entry import needs_load_balancer
from .settings import StackSettings, stack_settings
from .sizing import cheapest_type

FORMATS = ("text", "markdown", "json")


@dataclass(frozen=True)
class CostLine:
    """One billable thing: a server (with its public IPv4), a load balancer, the object storage."""

    name: str
    stack: str
    site: str
    kind: str  # hcloud, dedicated, existing, load-balancer, object-storage
    product: str | None  # cx23, AX41, lb11, ...
    base_eur: float | None  # None: no price known (an existing host without eurMonth)
    ipv4_eur: float = 0.0
    task: str = ""
    note: str = ""

    @property
    def eur(self) -> float:
        return (self.base_eur or 0.0) + self.ipv4_eur


@dataclass
class CostReport:
    lines: list[CostLine]
    taken: str
    shards: int | None = None
    notes: list[str] = field(default_factory=list)

    def stack_lines(self, stack: str) -> list[CostLine]:
        return [line for line in self.lines if line.stack == stack]

    def total(self, stack: str | None = None, site: str | None = None) -> float:
        return round(sum(line.eur for line in self.lines
                         if (stack is None or line.stack == stack) and (site is None or line.site == site)), 2)

    @property
    def unpriced(self) -> list[str]:
        return [line.name for line in self.lines if line.base_eur is None]

    def as_json(self) -> dict[str, Any]:
        stacks = sorted({line.stack for line in self.lines}, key=STACKS.index)
        return {
            "prices_taken": self.taken,
            "shards": self.shards,
            "lines": [{**asdict(line), "eur": round(line.eur, 2)} for line in self.lines],
            "stacks": {stack: self.total(stack=stack) for stack in stacks},
            "sites": {site: self.total(site=site) for site in sorted({line.site for line in self.lines})},
            "total": self.total(),
            "unpriced": self.unpriced,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# Pricing the topology


def topology_cost(inventory: Inventory, local: StackSettings, pricing: Pricing | None = None) -> CostReport:
    """The monthly bill of every server of the inventory, as the stacks build it."""
    pricing = pricing or load_pricing()
    lines = [_server_line(server, inventory, local, pricing) for server in
             sorted(inventory.servers.values(), key=lambda s: (STACKS.index(stack_of(s)), s.site, s.name))]
    notes = []
    if needs_load_balancer(inventory):
        if local.provider == "hcloud":
            lines.append(CostLine("local-app-lb", LOCAL, LOCAL, "load-balancer", LOAD_BALANCER_TYPE,
                                  pricing.other.load_balancer_types.get(LOAD_BALANCER_TYPE)))
        else:
            notes.append("the API instances share the entry host's nginx (provider existing): no load balancer")
    if inventory.object_storage.buckets:
        lines.append(CostLine("object storage", HELSINKI, HELSINKI, "object-storage", "base",
                              pricing.other.object_storage_base,
                              note=f"{len(inventory.object_storage.buckets)} buckets; 1 TB included"))
    unpriced = [line.name for line in lines if line.base_eur is None]
    if unpriced:
        notes.append(f"no price for {', '.join(unpriced)}: give hosts.<name>.eurMonth in Pulumi.local.yaml "
                     "(or the product in config/pricing.yaml)")
    if local.provider == "hcloud" and local.location not in ("fsn1", "nbg1", "hel1"):
        notes.append(f"the local site's hcloud types are priced at EU list prices; Hetzner charges more in {local.location}")
    return CostReport(lines, pricing.taken, shards=len(inventory.shards), notes=notes)


def _server_line(server: Server, inventory: Inventory, local: StackSettings, pricing: Pricing) -> CostLine:
    stack = stack_of(server)
    common: dict[str, Any] = {"name": server.name, "stack": stack, "site": server.site, "task": server.task,
                              "note": "existing" if server.existing else ""}
    if server.dedicated is not None:
        return CostLine(kind="dedicated", product=server.dedicated,
                        base_eur=pricing.other.dedicated.get(server.dedicated), **common)
    if server.site == LOCAL and local.provider == "existing":
        host = local.hosts.get(server.name)
        price = host.eur_month if host is not None else None
        return CostLine(kind="existing", product=None, base_eur=price, **common)
    product = server.hcloud_type or cheapest_type(
        server.vcpu, server.ram_gb, local.location, inventory.server_types, inventory.local_limit
    )
    price = pricing.server_type(product) if product else None
    ipv4 = pricing.other.primary_ipv4 if server.public_ipv4 else 0.0
    return CostLine(kind="hcloud", product=product, base_eur=price, ipv4_eur=ipv4, **common)


# --------------------------------------------------------------------------------------------
# Pricing a preview (what the program registered)


def resources_cost(stack: str, resources: list[dict[str, Any]], pricing: Pricing | None = None) -> CostReport:
    """The Hetzner Cloud bill of one stack's `resources.json`: servers (type and public IPv4),
    load balancers and object storage. A Robot server and an existing host are not in it (their
    price does not come from a resource)."""
    pricing = pricing or load_pricing()
    lines: list[CostLine] = []
    buckets = 0
    for resource in resources:
        inputs = resource.get("inputs") or {}
        name = str(inputs.get("name") or resource["urn"].rsplit("::", 1)[-1])
        if resource["type"] == SERVER_TYPE:
            product = inputs.get("serverType")
            labels = inputs.get("labels") or {}
            ipv4 = any(net.get("ipv4Enabled") for net in inputs.get("publicNets") or [])
            lines.append(CostLine(name, stack, str(labels.get("site", stack)), "hcloud", product,
                                  pricing.server_type(product) if isinstance(product, str) else None,
                                  pricing.other.primary_ipv4 if ipv4 else 0.0, task=str(labels.get("task", ""))))
        elif resource["type"] == LOAD_BALANCER_RESOURCE_TYPE:
            product = inputs.get("loadBalancerType")
            lines.append(CostLine(name, stack, LOCAL if stack == LOCAL else HELSINKI, "load-balancer", product,
                                  pricing.other.load_balancer_types.get(str(product))))
        elif resource["type"] == BUCKET_RESOURCE_TYPE:
            buckets += 1
    if buckets:
        lines.append(CostLine("object storage", stack, HELSINKI, "object-storage", "base",
                              pricing.other.object_storage_base, note=f"{buckets} buckets"))
    return CostReport(sorted(lines, key=lambda line: line.name), pricing.taken)


# --------------------------------------------------------------------------------------------
# The plan's figures


@dataclass(frozen=True)
class StageComparison:
    stage: str
    mau: str
    shards: int
    part: str  # local, helsinki, total
    plan: PlanFigure | None
    ours: float

    @property
    def verdict(self) -> str:
        if self.plan is None:
            return "the plan gives no figure"
        currency = "" if self.plan.currency == "EUR" else f" (the plan's figure is in {self.plan.currency}, not converted)"
        if self.ours < self.plan.low:
            return f"{self.plan.low - self.ours:,.0f} below the plan{currency}"
        if self.ours > self.plan.high:
            return f"{self.ours - self.plan.high:,.0f} above the plan{currency}"
        return f"within the plan's range{currency}"


def compare_with_plan(topology: Path, local: StackSettings, pricing: Pricing | None = None) -> list[StageComparison]:
    """Our bill at each stage's shard count, by site, against SPEC.md's "Costs in the plan".
    The plan counts the replicas under Helsinki, where they run, so the comparison is by site
    (the replicas belong to the local stack)."""
    pricing = pricing or load_pricing()
    rows = []
    for name, stage in pricing.plan_stages.items():
        report = topology_cost(load_topology(topology, shards=stage.shards), local, pricing)
        for part, figure in (("local", stage.local), ("helsinki", stage.helsinki), ("total", stage.total)):
            ours = report.total() if part == "total" else report.total(site=LOCAL) if part == "local" else \
                round(report.total() - report.total(site=LOCAL), 2)
            rows.append(StageComparison(name, stage.mau, stage.shards, part, figure, ours))
    return rows


# --------------------------------------------------------------------------------------------
# Output


def render(report: CostReport, stacks: list[str], comparison: list[StageComparison], fmt: str) -> str:
    if fmt == "json":
        data = report.as_json()
        data["lines"] = [line for line in data["lines"] if line["stack"] in stacks]
        data["plan_comparison"] = [
            {"stage": r.stage, "mau": r.mau, "shards": r.shards, "part": r.part, "ours_eur": r.ours,
             "plan": r.plan.model_dump() if r.plan else None, "verdict": r.verdict} for r in comparison
        ]
        return json.dumps(data, indent=2)
    markdown = fmt == "markdown"
    out = [f"{'## ' if markdown else ''}Monthly cost at {report.shards} shard{'' if report.shards == 1 else 's'} "
           f"(EUR excl. VAT; config/pricing.yaml, prices taken {report.taken}; indicative list prices)", ""]
    for stack in stacks:
        lines = report.stack_lines(stack)
        out += [f"{'### ' if markdown else ''}stack {stack}: EUR {report.total(stack=stack):,.2f} ({len(lines)} items)", ""]
        out += _table(["item", "site", "task", "product", "EUR", "IPv4", "total", "note"], [
            [line.name, line.site, line.task or "-", line.product or "-", _eur(line.base_eur), _eur(line.ipv4_eur),
             _eur(line.eur if line.base_eur is not None else None), line.note] for line in lines
        ], markdown)
        out.append("")
    if len(stacks) > 1:
        out.append(f"{'**' if markdown else ''}total: EUR {report.total():,.2f} per month{'**' if markdown else ''}"
                   f" (helsinki site EUR {report.total() - report.total(site=LOCAL):,.2f}, "
                   f"local site EUR {report.total(site=LOCAL):,.2f})")
        out.append("")
    out += [f"note: {note}" for note in report.notes]
    if comparison:
        out += ["", f"{'### ' if markdown else ''}Against the plan (SPEC.md, \"Costs in the plan\"; by site, "
                "the replicas counted in Helsinki as the plan does)", ""]
        out += _table(["stage", "MAU", "shards", "part", "plan", "ours (EUR)", "verdict"], [
            [r.stage, r.mau, str(r.shards), r.part, r.plan.shown() if r.plan else "-", f"{r.ours:,.2f}",
             r.verdict + (f"; plan: {r.plan.note}" if r.plan and r.plan.note else "")] for r in comparison
        ], markdown)
    return "\n".join(out).rstrip() + "\n"


def _eur(value: float | None) -> str:
    return "?" if value is None else f"{value:,.2f}"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
        ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
            for row in [header, *rows]]


def cmd_cost(args: argparse.Namespace) -> int:
    if args.shards is not None and args.shards < 1:
        problems = Problems()
        problems.add("--shards", f"at least 1 shard (got {args.shards})")
        problems.raise_if_any("unde-infra cost")
    local = stack_settings(LOCAL)
    inventory = load_topology(args.topology, shards=args.shards)
    report = topology_cost(inventory, local)
    stacks = list(STACKS) if args.stack == "all" else [args.stack]
    comparison = compare_with_plan(args.topology, local) if args.stack == "all" and not args.no_plan else []
    print(render(report, stacks, comparison, args.format), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("cost", help="monthly cost per server, per stack and in total; against the plan's figures")
    parser.add_argument("--stack", choices=["helsinki", "local", "all"], default="all")
    parser.add_argument("--shards", type=int, default=None, help="price the topology at N shards")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--no-plan", action="store_true", help="leave out the comparison with the plan's stages")
    parser.set_defaults(func=cmd_cost)
