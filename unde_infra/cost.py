"""`unde-infra cost`: what the topology costs per month, per server, per stack and in total, from
`config/pricing.yaml`, and how that compares with the plan's figures at each stage.

Two views of the same bill: `topology_cost` prices the inventory as the stacks would build it
(each hcloud server at its location, the local site's types chosen for the stack's location,
existing hosts priced from their stack config), and `resources_cost` prices what a preview
registered (`resources.json`), for the diff of two previews. Both price through `Pricing`, so a
figure lives in one place. What runs today (adopted servers, the Robot server, existing hosts) is
already paid for; the rest is new spend. Every figure is in EUR; the plan's figures in another
currency are compared only through an exchange rate configured in config/pricing.yaml."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .availability import Placement, not_sold_problems, placement
from .errors import Problems
from .model import DEFAULT_TOPOLOGY, HELSINKI, LOCAL, STACKS, Inventory, Server, load_topology, stack_of
from .naming import BUCKET_RESOURCE_TYPE, LOAD_BALANCER_RESOURCE_TYPE, LOAD_BALANCER_TYPE, SERVER_TYPE
from .pricing import ExchangeRate, PlanFigure, Pricing, ServerPrice, load_pricing
from .render.entry import needs_load_balancer
from .settings import StackSettings, stack_settings

FORMATS = ("text", "markdown", "json")
STAND_IN_MARK = "*"


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
    location: str | None = None  # where hcloud bills it; None for a Robot server or an existing host
    # It runs today (an adopted server, the Robot server, a host of provider existing): its bill
    # is already paid. Everything else is new spend.
    runs_today: bool = False
    # Why the figure is not the location's own price ("" when it is): the list price stands in.
    stand_in: str = ""
    # Why it cannot be ordered as priced ("" when it can): a type its location does not sell.
    not_sold: str = ""

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

    def total(self, stack: str | None = None, site: str | None = None, runs_today: bool | None = None) -> float:
        """EUR per month of the lines of `stack` and `site`; `runs_today`: only what is already
        paid (True) or only new spend (False)."""
        return round(sum((line.eur for line in self.lines
                          if (stack is None or line.stack == stack) and (site is None or line.site == site)
                          and (runs_today is None or line.runs_today == runs_today)), 0.0), 2)

    def stand_in_total(self, stacks: list[str] | None = None, sites: list[str] | None = None) -> float:
        """EUR per month priced at list prices that stand in for a location's own (higher) ones."""
        return round(sum((line.eur for line in self.lines if line.stand_in and (stacks is None or line.stack in stacks)
                          and (sites is None or line.site in sites)), 0.0), 2)

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
            "already_paid": {**{stack: self.total(stack=stack, runs_today=True) for stack in stacks},
                             "total": self.total(runs_today=True)},
            "new_spend": {**{stack: self.total(stack=stack, runs_today=False) for stack in stacks},
                          "total": self.total(runs_today=False)},
            "at_list_price_standing_in": self.stand_in_total(),
            "unpriced": self.unpriced,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# Pricing the topology


def topology_cost(inventory: Inventory, local: StackSettings, pricing: Pricing | None = None) -> CostReport:
    """The monthly bill of every server of the inventory, as the stacks build it. `local`: the
    local stack's settings (the helsinki stack's servers are placed by the topology alone)."""
    pricing = pricing or load_pricing()
    servers = sorted(inventory.servers.values(), key=lambda s: (STACKS.index(stack_of(s)), s.site, s.name))
    placed = {server.name: placement(server, inventory, local) for server in servers}
    lines = [_server_line(server, local, pricing, placed[server.name]) for server in servers]
    notes = []
    if needs_load_balancer(inventory):
        if local.provider == "hcloud":
            lines.append(CostLine("local-app-lb", LOCAL, LOCAL, "load-balancer", LOAD_BALANCER_TYPE,
                                  pricing.other.load_balancer_types.get(LOAD_BALANCER_TYPE), location=local.location,
                                  stand_in=pricing.list_price_stand_in(local.location)))
        else:
            notes.append("the API instances share the entry host's nginx (provider existing): no load balancer")
    storage = inventory.object_storage
    if storage.buckets:
        lines.append(CostLine("object storage", HELSINKI, HELSINKI, "object-storage", "base",
                              pricing.other.object_storage_base, stand_in=pricing.list_price_stand_in(storage.region),
                              note=f"{len(storage.buckets)} buckets; 1 TB included"))
    unpriced = [line.name for line in lines if line.base_eur is None]
    if unpriced:
        notes.append(f"no price for {', '.join(unpriced)}: give hosts.<name>.eurMonth in Pulumi.local.yaml "
                     "(or the product in config/pricing.yaml)")
    problems = not_sold_problems([p for p in placed.values() if p is not None], inventory.server_types)
    notes += [f"cannot be ordered: {path}: {message}" for path, message in problems]
    return CostReport(lines, pricing.taken, shards=len(inventory.shards), notes=notes)


def _server_line(server: Server, local: StackSettings, pricing: Pricing, placed: Placement | None) -> CostLine:
    common: dict[str, Any] = {"name": server.name, "stack": stack_of(server), "site": server.site, "task": server.task,
                              "runs_today": server.existing}
    if server.dedicated is not None:
        return CostLine(kind="dedicated", product=server.dedicated,
                        base_eur=pricing.other.dedicated.get(server.dedicated), **common)
    if placed is None:  # a host of the local stack's provider existing: it runs, under its own contract
        host = local.hosts.get(server.name)
        return CostLine(kind="existing", product=None, base_eur=host.eur_month if host is not None else None,
                        **{**common, "runs_today": True})
    product = placed.hcloud_type
    price = pricing.server_price(product, placed.location) if product else ServerPrice(None)
    not_sold = f"{product} is not sold in {placed.location}" if product and placed.ordered and not placed.sold else ""
    note = f"resized to {product}: the rise over today's type is new spend" if server.existing and server.resize else ""
    return CostLine(kind="hcloud", product=product, base_eur=price.eur,
                    ipv4_eur=pricing.other.primary_ipv4 if server.public_ipv4 else 0.0, location=placed.location,
                    stand_in=price.stand_in, not_sold=not_sold, note=note, **common)


# --------------------------------------------------------------------------------------------
# Pricing a preview (what the program registered)


def resources_cost(stack: str, resources: list[dict[str, Any]], pricing: Pricing | None = None) -> CostReport:
    """The Hetzner Cloud bill of one stack's `resources.json`: servers (type, location and public
    IPv4), load balancers and object storage. A Robot server and an existing host are not in it
    (their price does not come from a resource)."""
    pricing = pricing or load_pricing()
    lines: list[CostLine] = []
    buckets = 0
    for resource in resources:
        inputs = resource.get("inputs") or {}
        name = str(inputs.get("name") or resource["urn"].rsplit("::", 1)[-1])
        location = inputs.get("location") if isinstance(inputs.get("location"), str) else None
        if resource["type"] == SERVER_TYPE:
            product = inputs.get("serverType")
            labels = inputs.get("labels") or {}
            ipv4 = any(net.get("ipv4Enabled") for net in inputs.get("publicNets") or [])
            price = pricing.server_price(product, location) if isinstance(product, str) else ServerPrice(None)
            lines.append(CostLine(name, stack, str(labels.get("site", stack)), "hcloud", product, price.eur,
                                  pricing.other.primary_ipv4 if ipv4 else 0.0, task=str(labels.get("task", "")),
                                  location=location, runs_today=bool(resource.get("importId")), stand_in=price.stand_in))
        elif resource["type"] == LOAD_BALANCER_RESOURCE_TYPE:
            product = inputs.get("loadBalancerType")
            lines.append(CostLine(name, stack, LOCAL if stack == LOCAL else HELSINKI, "load-balancer", product,
                                  pricing.other.load_balancer_types.get(str(product)), location=location,
                                  stand_in=pricing.list_price_stand_in(location)))
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
    ours: float  # EUR
    # The configured rate of the plan's currency, when that is not EUR (None: none configured).
    rate: ExchangeRate | None = None
    # EUR of `ours` at list prices standing in for a location's own (higher) prices.
    ours_at_list_price: float = 0.0

    @property
    def plan_eur(self) -> tuple[float, float] | None:
        """The plan's range in EUR: as written, or converted at the configured rate; None when
        it is in another currency and no rate is configured (then it is not compared)."""
        if self.plan is None:
            return None
        if self.plan.currency == "EUR":
            return self.plan.low, self.plan.high
        if self.rate is None:
            return None
        return round(self.plan.low * self.rate.eur, 2), round(self.plan.high * self.rate.eur, 2)

    @property
    def verdict(self) -> str:
        if self.plan is None:
            return "the plan gives no figure"
        span = self.plan_eur
        currency = self.plan.currency
        if span is None:
            return (f"not compared: the plan's figure is in {currency} and ours in EUR; config/pricing.yaml "
                    f"has no exchange rate for {currency} (exchange_rates.{currency})")
        low, high = span
        converted = "" if self.rate is None else             f" (the plan's {self.plan.shown()} is EUR {low:,.0f}-{high:,.0f} at {self.rate.shown(currency)})"
        if self.ours < low:
            return f"{low - self.ours:,.0f} below the plan{converted}"
        if self.ours > high:
            return f"{self.ours - high:,.0f} above the plan{converted}"
        return f"within the plan's range{converted}"

    @property
    def ours_shown(self) -> str:
        return f"{self.ours:,.2f}" + (STAND_IN_MARK if self.ours_at_list_price else "")


def compare_with_plan(topology: Path, local: StackSettings, pricing: Pricing | None = None) -> list[StageComparison]:
    """Our bill at each stage's shard count, by site, against SPEC.md's "Costs in the plan".
    The plan counts the replicas under Helsinki, where they run, so the comparison is by site
    (the replicas belong to the local stack)."""
    pricing = pricing or load_pricing()
    rows = []
    for name, stage in pricing.plan_stages.items():
        report = topology_cost(load_topology(topology, shards=stage.shards), local, pricing)
        every_site = sorted({line.site for line in report.lines})
        for part, figure in (("local", stage.local), ("helsinki", stage.helsinki), ("total", stage.total)):
            sites = every_site if part == "total" else [LOCAL] if part == "local" else \
                [site for site in every_site if site != LOCAL]
            ours = round(sum(report.total(site=site) for site in sites), 2)
            rate = pricing.exchange_rate(figure.currency) if figure is not None and figure.currency != "EUR" else None
            rows.append(StageComparison(name, stage.mau, stage.shards, part, figure, ours, rate,
                                        report.stand_in_total(sites=sites)))
    return rows


# --------------------------------------------------------------------------------------------
# Output


def render(report: CostReport, stacks: list[str], comparison: list[StageComparison], fmt: str) -> str:
    if fmt == "json":
        data = report.as_json()
        data["lines"] = [line for line in data["lines"] if line["stack"] in stacks]
        data["plan_comparison"] = [
            {"stage": r.stage, "mau": r.mau, "shards": r.shards, "part": r.part, "ours_eur": r.ours,
             "plan": r.plan.model_dump() if r.plan else None,
             "ours_eur_at_list_price": r.ours_at_list_price, "plan_eur": list(r.plan_eur) if r.plan_eur is not None else None,
             "exchange_rate": r.rate.model_dump(mode="json") if r.rate else None, "verdict": r.verdict}
            for r in comparison
        ]
        return json.dumps(data, indent=2)
    markdown = fmt == "markdown"
    bold = "**" if markdown else ""
    out = [f"{'## ' if markdown else ''}Monthly cost at {report.shards} shard{'' if report.shards == 1 else 's'} "
           f"(EUR excl. VAT; config/pricing.yaml, prices taken {report.taken}; indicative list prices)", ""]
    for stack in stacks:
        lines = report.stack_lines(stack)
        out += [f"{'### ' if markdown else ''}stack {stack}: EUR {report.total(stack=stack):,.2f} per month "
                f"({len(lines)} items): {_split(report, stack)}", ""]
        out += text_table(["item", "site", "location", "task", "product", "EUR", "IPv4", "total", "spend", "note"], [
            [line.name, line.site, line.location or "-", line.task or "-", line.product or "-",
             _eur(line.base_eur) + (STAND_IN_MARK if line.stand_in else ""), _eur(line.ipv4_eur),
             _eur(line.eur if line.base_eur is not None else None), "already paid" if line.runs_today else "new",
             "; ".join(note for note in (f"NOT SOLD in {line.location}" if line.not_sold else "", line.note) if note)]
            for line in lines
        ], markdown)
        out.append("")
    if len(stacks) > 1:
        out.append(f"{bold}total: EUR {report.total():,.2f} per month{bold}: {_split(report, None)} "
                   f"(helsinki site EUR {report.total() - report.total(site=LOCAL):,.2f}, "
                   f"local site EUR {report.total(site=LOCAL):,.2f})")
        out.append("")
    standing_in = sorted({line.stand_in for line in report.lines if line.stand_in and line.stack in stacks})
    if standing_in:
        out += [f"{stand_in_mark(markdown)} {reason}: EUR {report.stand_in_total(stacks):,.2f} of the figures above is priced so, "
                "and the real bill is higher" for reason in standing_in]
        out.append("")
    out += [f"note: {note}" for note in report.notes]
    if comparison:
        if out[-1]:
            out.append("")
        out += [f"{'### ' if markdown else ''}Against the plan (SPEC.md, \"Costs in the plan\"; by site, "
                "the replicas counted in Helsinki as the plan does; stage labels are SPEC's names, the MAU "
                "column its users)", ""]
        out += text_table(["stage", "MAU", "shards", "part", "plan", "ours (EUR)", "verdict"], [
            [r.stage, r.mau, str(r.shards), r.part, r.plan.shown() if r.plan else "-", r.ours_shown,
             r.verdict + (f"; plan: {r.plan.note}" if r.plan and r.plan.note else "")] for r in comparison
        ], markdown)
        if any(r.ours_at_list_price for r in comparison):
            out += ["", f"{stand_in_mark(markdown)} ours includes list prices standing in for a location's own, higher "
                    "ones (see above): the real figure is higher"]
    return "\n".join(out).rstrip() + "\n"


def _split(report: CostReport, stack: str | None) -> str:
    """Already paid (what runs today) and new spend."""
    lines = report.lines if stack is None else report.stack_lines(stack)
    running = sum(1 for line in lines if line.runs_today)
    return (f"EUR {report.total(stack=stack, runs_today=True):,.2f} already paid ({running} running today), "
            f"EUR {report.total(stack=stack, runs_today=False):,.2f} new spend")


def stand_in_mark(markdown: bool) -> str:
    return "\\" + STAND_IN_MARK if markdown else STAND_IN_MARK


def _eur(value: float | None) -> str:
    return "?" if value is None else f"{value:,.2f}"


def text_table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(cell.replace("|", "\\|").replace("*", "\\*") for cell in row) + " |" for row in rows
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
