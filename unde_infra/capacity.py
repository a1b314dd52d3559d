"""`unde-infra plan --mau N` (or `--stage LABEL`): how many shards N monthly active users need,
from the plan's capacity figures (`config/capacity.yaml`), the topology change that gets there,
the servers it adds and the cost change against the topology now. Beyond what the address plan
places, the answer says so, with what would have to change (an answer, not an error).

SPEC's stage labels (5K, 50K, ...) are names, not MAU figures (stage 50K is up to 20,000 MAU):
a stage is always shown with the MAU it covers."""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config_files import add_validation_problems, read_config
from .cost import STAND_IN_MARK, CostReport, stand_in_mark, text_table, topology_cost
from .errors import Problems, shown
from .model import (
    DEFAULT_TOPOLOGY,
    LOCAL,
    ROOT,
    STACKS,
    Inventory,
    build_inventory,
    load_server_types,
    load_topology,
    replica_type_for,
    shard_capacity,
    shard_rooms,
)
from .settings import StackSettings, stack_settings

DEFAULT_CAPACITY = ROOT / "config" / "capacity.yaml"
Basis = Literal["stages", "users-per-shard"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageRow(_Strict):
    stage: str = Field(description="SPEC's stage label (start, 5K, ...): a name, not a MAU figure.")
    mau_up_to: int = Field(gt=0, description="The upper end of the stage's MAU column.")
    shards: int = Field(ge=1, description="The stage's shards.")


class UsersPerShard(_Strict):
    low: int = Field(gt=0, description="The low end of the comfortable capacity, users per shard.")
    high: int = Field(gt=0, description="The high end (what the planner divides by).")


class StatelessStep(_Strict):
    server: str = Field(description="The local server that scales out (its `instances` in the topology).")
    trigger: str = Field(description="The metric that calls for it (SPEC's wording).")
    adds: str = Field(description="What the step adds.")


class NotModelled(_Strict):
    from_mau: int = Field(description="From how many MAU the plan asks for it.")
    what: str = Field(description="What the plan asks for that the topology cannot express yet.")


class Capacity(_Strict):
    basis: Basis = Field(
        description="Which figure decides: the scale-out table (stages) or the comfortable capacity "
                    "(users-per-shard); `--basis` chooses for one run, and both are printed when they disagree.")
    stages: list[StageRow] = Field(
        min_length=1,
        description="SPEC's shard scale-out table, each row more MAU and at least as many shards as the one "
                    "before. Beyond its last row the planner doubles the shards each time the MAU doubles.")
    users_per_shard: UsersPerShard = Field(
        description="SPEC's comfortable capacity per 32 GB shard with a year of data: users whose data is on the "
                    "shard, not this month's actives.")
    stateless_from_mau: int = Field(description="From how many MAU the stateless scale-out steps apply.")
    stateless: list[StatelessStep] = Field(description="SPEC's stateless scale-out: what to add when its metric says so.")
    not_modelled: list[NotModelled] = Field(
        default=[], description="What the plan asks for at a size that is not a topology field yet (printed as a hint).")


def load_capacity(path: Path = DEFAULT_CAPACITY) -> Capacity:
    problems = Problems()
    data = read_config(path, problems)
    problems.raise_if_any(str(path))
    try:
        capacity = Capacity.model_validate(data)
    except ValidationError as exc:
        add_validation_problems(problems, "", exc)
        problems.raise_if_any(str(path))
        raise  # unreachable: raise_if_any raised
    rows = capacity.stages
    for before, after in zip(rows, rows[1:], strict=False):
        if after.mau_up_to <= before.mau_up_to or after.shards < before.shards:
            problems.add(f"stages.{after.stage}", "each row needs more MAU and at least as many shards as the one before")
    problems.raise_if_any(str(path))
    return capacity


def stage_span(capacity: Capacity, row: StageRow) -> str:
    """The MAU a stage covers, as the planner reads the table: above the previous stage's upper
    end, up to its own (SPEC.md writes the ranges approximately: "~800-2,000")."""
    index = capacity.stages.index(row)
    low = 0 if index == 0 else capacity.stages[index - 1].mau_up_to + 1
    return f"{low:,}-{row.mau_up_to:,} MAU"


def stage_text(capacity: Capacity, row: StageRow) -> str:
    """A stage as the output names it: its label is a name, so the MAU it covers comes with it."""
    return f"stage {row.stage}: {stage_span(capacity, row)}, {row.shards} shard{'s' if row.shards != 1 else ''}"


def find_stage(capacity: Capacity, label: str) -> StageRow | None:
    return next((row for row in capacity.stages if row.stage.lower() == label.strip().lower()), None)


def label_as_users(label: str) -> int | None:
    """What a stage label reads as if taken for a number of users ("50K" -> 50,000), or None."""
    match = re.fullmatch(r"(\d+)\s*[kK]", label.strip())
    return int(match.group(1)) * 1000 if match else None


def label_confusion(mau: int, capacity: Capacity) -> str | None:
    """A note when `mau` is what a stage's label reads as, but not that stage's MAU."""
    for row in capacity.stages:
        if label_as_users(row.stage) == mau and by_stages(mau, capacity).stage != row:
            return (f"{mau:,} MAU is not stage {row.stage}: SPEC's stage labels are names, not MAU figures "
                    f"({stage_text(capacity, row)}); `--stage {row.stage}` plans that stage")
    return None


@dataclass(frozen=True)
class Estimate:
    basis: Basis
    shards: int
    how: str
    stage: StageRow | None = None  # the stage of the table it falls in (stages basis, within the table)


def by_stages(mau: int, capacity: Capacity) -> Estimate:
    for row in capacity.stages:
        if mau <= row.mau_up_to:
            return Estimate("stages", row.shards, f"SPEC's scale-out table, {stage_text(capacity, row)}", row)
    last = capacity.stages[-1]
    doublings = math.ceil(math.log2(mau / last.mau_up_to))
    shards = last.shards * 2**doublings
    return Estimate("stages", shards, f"beyond SPEC's scale-out table, whose last row is {stage_text(capacity, last)}; "
                                      f"doubled {doublings} time{'s' if doublings != 1 else ''}, as the table does")


def by_users_per_shard(mau: int, capacity: Capacity) -> Estimate:
    low, high = capacity.users_per_shard.low, capacity.users_per_shard.high
    shards = max(1, math.ceil(mau / high))
    return Estimate("users-per-shard", shards,
                    f"{mau:,} users at {high} users per shard (the comfortable capacity's upper end; "
                    f"{max(1, math.ceil(mau / low)):,} shards at its lower end, {low})")


@dataclass(frozen=True)
class Bill:
    """EUR per month by stack at a shard count; `estimated` says how, when not itemised."""

    shards: int
    by_stack: dict[str, float]
    estimated: str = ""
    # Stack -> EUR of its figure at list prices standing in for a location's own, higher ones.
    at_list_price: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return round(sum(self.by_stack.values()), 2)

    def shown(self, stack: str | None = None) -> str:
        """The figure of `stack` (None: the total), marked when list prices stand in in it."""
        value = self.total if stack is None else self.by_stack[stack]
        marked = any(self.at_list_price.values()) if stack is None else self.at_list_price.get(stack, 0.0) > 0
        return f"{value:,.2f}" + (STAND_IN_MARK if marked else "")


@dataclass
class CapacityPlan:
    mau: int
    subject: str  # "12,000 monthly active users", "stage 10K (2,001-4,000 MAU)"
    chosen: Estimate
    other: Estimate
    current_shards: int
    room: int  # the most shards the address plan places
    added: list[str]
    removed: list[str]
    changes: list[str]
    today: Bill
    planned: Bill
    # What would have to change in the address plan, when the shards do not fit it.
    beyond_address_plan: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: CostReport | None = None  # at the planned size, when the address plan places it
    scale_out: Bill | None = None

    @property
    def shards(self) -> int:
        return self.chosen.shards

    @property
    def fits(self) -> bool:
        return self.shards <= self.room


def make_plan(mau: int, topology: Path, basis: Basis | None = None, capacity: Capacity | None = None,
              stage: StageRow | None = None) -> CapacityPlan:
    """The plan for `mau` users, or for `stage` of the table (its upper end of MAU)."""
    capacity = capacity or load_capacity()
    basis = basis or capacity.basis
    if stage is not None:
        mau = stage.mau_up_to
    estimates = {"stages": by_stages(mau, capacity), "users-per-shard": by_users_per_shard(mau, capacity)}
    chosen = estimates[basis]
    other = estimates["users-per-shard" if basis == "stages" else "stages"]
    current = load_topology(topology)
    room = shard_capacity(current.shards_spec, current.network)
    local = stack_settings(LOCAL)
    today_report = topology_cost(current, local)
    subject = f"stage {stage.stage} ({stage_span(capacity, stage)})" if stage else f"{mau:,} monthly active users"
    planned = load_topology(topology, shards=chosen.shards) if chosen.shards <= room else None
    report = topology_cost(planned, local) if planned is not None else None
    bill = _bill(report, chosen.shards) if report is not None else \
        _estimated_bill(topology, current, chosen.shards, room, [], local)
    plan = CapacityPlan(mau, subject, chosen, other, len(current.shards), room, [], [], [],
                        today=_bill(today_report, len(current.shards)), planned=bill, report=report)
    if planned is not None:
        _topology_change(plan, current, planned)
    else:
        plan.beyond_address_plan = address_plan_changes(current, chosen.shards)
    if stage is None:
        plan.notes += [note for note in (label_confusion(mau, capacity),) if note]
    if mau >= capacity.stateless_from_mau:
        servers = [step.server for step in capacity.stateless]
        plan.scale_out = _estimated_bill(topology, current, chosen.shards, room, servers, local)
        for step in capacity.stateless:
            if step.server in current.servers:
                plan.hints.append(f"when {step.trigger}: servers.{step.server}.instances: 1 -> 2 (adds {step.adds})")
    plan.hints += [item.what for item in capacity.not_modelled if mau >= item.from_mau]
    return plan


def _topology_change(plan: CapacityPlan, current: Inventory, planned: Inventory) -> None:
    before, after = set(current.servers), set(planned.servers)
    if plan.shards != len(current.shards):
        plan.changes.append(f"shards.count: {current.shards_spec.count} -> {plan.shards}")
    old_type = replica_type_for(current.shards_spec, len(current.shards))
    new_type = replica_type_for(planned.shards_spec, len(planned.shards))
    if old_type != new_type:
        kept = sorted(before & {s.replica.name for s in planned.shards})
        plan.changes.append(
            f"replica type {old_type} -> {new_type} (shards.replica.large_from_count: "
            f"{planned.shards_spec.replica.large_from_count}): new replicas are {new_type}; "
            f"{', '.join(kept) or 'no existing replica'} resized (hcloud powers each off for it)"
        )
    plan.added, plan.removed = _natural(after - before), _natural(before - after)


def address_plan_changes(current: Inventory, shards: int) -> list[str]:
    """What would have to change for the address plan to place `shards` shards: one line per
    range that is too small, with the size it would need."""
    spec, network = current.shards_spec, current.network
    changes = []
    for room in shard_rooms(spec, network):
        if room.holds >= shards:
            continue
        if room.path == "shards.local.pool":
            prefix = _prefix_for(shards + 1)  # hosts 1..shards-1, plus the network and broadcast addresses
            pool, site_range = room.network, current.sites[LOCAL].range
            text = (f"{room.path} {pool} places {room.holds} shards (shard 0 at shards.local.first_address "
                    f"{spec.local.first_address}, shards 1-{room.holds - 1} at {pool.network_address + 1}-"
                    f"{pool.network_address + room.holds - 1}); {shards:,} need a /{prefix} pool")
            if 2 ** (32 - prefix) >= site_range.num_addresses:
                text += (f", as large as sites.local.range {site_range} or larger, which the other local servers "
                         f"and network.scale_out_pool {network.scale_out_pool} share: the local site's range has "
                         "to grow, and the tunnel numbering with it (a shard's tunnel index is the last octet of "
                         "its address, and tunnel indices run 0-255)")
            else:
                text += (f" inside sites.local.range {site_range}, clear of the other local servers and "
                         f"network.scale_out_pool {network.scale_out_pool}")
        else:
            first = spec.replica.first_host
            prefix = _prefix_for(shards + first + 1)
            text = (f"{room.path} {room.network} places {room.holds} replicas (replica N at host "
                    f"shards.replica.first_host + N = {first} + N); {shards:,} need a /{prefix} subnet")
        changes.append(text)
    return changes


def _prefix_for(addresses: int) -> int:
    return 32 - math.ceil(math.log2(addresses))


def _bill(report: CostReport, shards: int) -> Bill:
    return Bill(shards, {stack: report.total(stack=stack) for stack in STACKS},
                at_list_price={stack: report.stand_in_total([stack]) for stack in STACKS})


def _estimated_bill(topology: Path, current: Inventory, shards: int, room: int, scale_out: list[str],
                    local: StackSettings) -> Bill:
    """The bill at `shards` with `scale_out`'s servers at 2 instances. Beyond what the address
    plan places, the shards it cannot place are priced like its last one."""
    placed = min(shards, room)
    data = _topology_data(topology)
    data["shards"]["count"] = placed
    if replica_type_for(current.shards_spec, shards) != replica_type_for(current.shards_spec, placed):
        data["shards"]["replica"]["large_from_count"] = placed  # every replica of `shards` is the large type
    for name in scale_out:
        if name in data["servers"]:
            data["servers"][name]["instances"] = max(2, int(data["servers"][name].get("instances", 1)))
    inventory = build_inventory(data, source=str(topology), server_types=load_server_types())
    report = topology_cost(inventory, local)
    bill = _bill(report, shards)
    extra = shards - placed
    if not extra:
        return bill
    last = inventory.shards[-1]
    lines = [line for line in report.lines if line.name in (last.primary.name, last.replica.name)]
    by_stack, at_list_price = dict(bill.by_stack), dict(bill.at_list_price)
    for line in lines:
        by_stack[line.stack] = round(by_stack[line.stack] + extra * line.eur, 2)
        if line.stand_in:
            at_list_price[line.stack] = round(at_list_price[line.stack] + extra * line.eur, 2)
    each = sum(line.eur for line in lines)
    products = " + ".join(f"{line.product} ({line.name})" for line in sorted(lines, key=lambda line: line.site != LOCAL))
    return Bill(shards, by_stack, f"{placed} shards as the address plan places them, and {extra:,} more each priced "
                                  f"like shard {last.index}: EUR {each:,.2f}, {products}", at_list_price)


def _topology_data(topology: Path) -> dict[str, Any]:
    problems = Problems()
    data = read_config(Path(topology), problems)
    problems.raise_if_any(str(topology))
    return dict(data)


def _natural(names: set[str]) -> list[str]:
    """local-shard-2 before local-shard-10."""
    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])


def render(plan: CapacityPlan, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({
            "mau": plan.mau, "subject": plan.subject, "basis": plan.chosen.basis, "shards": plan.shards,
            "how": plan.chosen.how,
            "stage": {"label": plan.chosen.stage.stage, "mau_up_to": plan.chosen.stage.mau_up_to,
                      "shards": plan.chosen.stage.shards} if plan.chosen.stage else None,
            "other_basis": {"basis": plan.other.basis, "shards": plan.other.shards, "how": plan.other.how},
            "address_plan": {"holds": plan.room, "fits": plan.fits, "what_would_have_to_change": plan.beyond_address_plan},
            "current_shards": plan.current_shards, "changes": plan.changes, "added_servers": plan.added,
            "removed_servers": plan.removed, "hints": plan.hints, "notes": plan.notes,
            "cost_change": {"today": _bill_json(plan.today), "planned": _bill_json(plan.planned),
                            "change": {**{stack: round(plan.planned.by_stack[stack] - plan.today.by_stack[stack], 2)
                                          for stack in STACKS},
                                       "total": round(plan.planned.total - plan.today.total, 2)},
                            "with_stateless_scale_out": _bill_json(plan.scale_out) if plan.scale_out else None},
            "cost": plan.report.as_json() if plan.report is not None else None,
        }, indent=2) + "\n"
    md = fmt == "markdown"
    h = "### " if md else ""
    bullet = "- " if md else "  "
    shards = f"{plan.shards:,} shard{'s' if plan.shards != 1 else ''}"
    answer = shards if plan.fits else f"needs {shards}; the address plan holds at most {plan.room}"
    out = [f"{'## ' if md else ''}{plan.subject}: {answer}", "", f"from {plan.chosen.basis}: {plan.chosen.how}"]
    if plan.other.shards != plan.shards:
        out.append(f"the other figure disagrees: {plan.other.basis} gives {plan.other.shards:,} shards ({plan.other.how}); "
                   "SPEC.md's two figures count different things (monthly actives vs users with a year of data on "
                   f"a shard); `--basis {plan.other.basis}` plans with it")
    else:
        out.append(f"{plan.other.basis} agrees: {plan.other.how}")
    out += [f"note: {note}" for note in plan.notes]
    if not plan.fits:
        out += ["", f"{h}what would have to change: the address plan (config/topology.yaml), not only shards.count", ""]
        out += [f"{bullet}{change}" for change in plan.beyond_address_plan]
    out += ["", f"{h}topology change (config/topology.yaml)", ""]
    if not plan.fits:
        out.append(f"{bullet}none the address plan allows: {plan.shards:,} shards do not fit it (at most {plan.room})")
    else:
        out += [f"{bullet}{c}" for c in plan.changes] or [f"{bullet}none: the topology has {plan.current_shards} shards"]
    if plan.added:
        out += ["", f"{h}servers added ({len(plan.added)})", "", bullet + ", ".join(plan.added)]
    if plan.removed:
        out += ["", f"{h}servers removed ({len(plan.removed)}): a shard's data must move off first", "",
                bullet + ", ".join(plan.removed)]
    if plan.hints:
        out += ["", f"{h}at this size, by metrics (SPEC.md, stateless scale-out)", ""]
        out += [f"{bullet}{hint}" for hint in plan.hints]
    out += ["", f"{h}cost per month against the topology now (EUR excl. VAT; config/pricing.yaml)", ""]
    rows = [[stack, plan.today.shown(stack), plan.planned.shown(stack),
             _signed(plan.planned.by_stack[stack] - plan.today.by_stack[stack])] for stack in STACKS]
    rows.append(["total", plan.today.shown(), plan.planned.shown(), _signed(plan.planned.total - plan.today.total)])
    today = f"now ({plan.today.shards} shard{'s' if plan.today.shards != 1 else ''})"
    out += text_table(["stack", today, f"planned ({shards})", "change"], rows, md)
    out.append("")
    if any(plan.planned.at_list_price.values()) or any(plan.today.at_list_price.values()):
        out.append(f"{stand_in_mark(md)} EUR {sum(plan.today.at_list_price.values()):,.2f} now and EUR "
                   f"{sum(plan.planned.at_list_price.values()):,.2f} planned at list prices standing in for a "
                   "location's own, higher ones (`unde-infra cost` marks which): the real figures are higher")
    if plan.planned.estimated:
        out.append(f"planned: {plan.planned.estimated}")
    if plan.scale_out is not None:
        out.append(f"with every stateless scale-out above as well: EUR {plan.scale_out.total:,.2f} per month")
    if plan.fits:
        out.append(f"each server's price, and what is already paid and what is new: `unde-infra cost --shards {plan.shards}`")
    return "\n".join(out).rstrip() + "\n"


def _signed(value: float) -> str:
    return f"{'+' if value >= 0 else '-'}{abs(value):,.2f}"


def _bill_json(bill: Bill) -> dict[str, Any]:
    return {"shards": bill.shards, **bill.by_stack, "total": bill.total, "estimated": bill.estimated or None,
            "at_list_price_standing_in": bill.at_list_price}


def parse_mau(text: str, capacity: Capacity) -> tuple[int | None, str | None]:
    """`--mau`: a number of users (`100000`, `100,000`, `100_000`), or the reason it is not one."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    if re.fullmatch(r"-?\d+", cleaned):
        value = int(cleaned)
        return (value, None) if value >= 0 else (None, f"a number of monthly active users, 0 or more (got {value})")
    row = find_stage(capacity, text)
    if row is not None:
        users = label_as_users(row.stage)
        spelled = f", or --mau {users} for {users:,} users" if users else ""
        return None, (f"{shown(text)} is a stage label of SPEC's scale-out table, not a number of users "
                      f"({stage_text(capacity, row)}): give --stage {row.stage}{spelled}")
    return None, f"a number of monthly active users, like 12000 or 12,000 (got {shown(text)})"


def cmd_plan(args: argparse.Namespace) -> int:
    capacity = load_capacity()
    problems = Problems()
    mau, stage = 0, None
    if args.stage is not None:
        stage = find_stage(capacity, args.stage)
        if stage is None:
            stages = ", ".join(f"{row.stage} ({stage_span(capacity, row)})" for row in capacity.stages)
            problems.add("--stage", f"unknown stage {shown(args.stage)} (SPEC's stages: {stages})")
    else:
        parsed, reason = parse_mau(args.mau, capacity)
        if reason is not None:
            problems.add("--mau", reason)
        mau = parsed or 0
    problems.raise_if_any("unde-infra plan")
    print(render(make_plan(mau, args.topology, args.basis, capacity, stage=stage), args.format), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "plan", help="shards, topology change and cost change for N monthly active users or a stage of SPEC's table",
        description="Exit 0 with the answer, also when the shards needed do not fit the address plan: that is the "
                    "answer to the question asked (how many shards, how many the address plan holds, what would have "
                    "to change; JSON: address_plan.fits false), not a fault of the input. Exit 2: bad input.")
    wanted = parser.add_mutually_exclusive_group(required=True)
    wanted.add_argument("--mau", help="monthly active users, a number (12000 or 12,000)")
    wanted.add_argument("--stage", help="a stage of SPEC's scale-out table by its label (config/capacity.yaml, "
                                        "stages): a label is a name, not a MAU figure; the output shows the MAU it covers")
    parser.add_argument("--basis", choices=["stages", "users-per-shard"], default=None,
                        help="which of SPEC.md's capacity figures decides (default: config/capacity.yaml's basis)")
    parser.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.set_defaults(func=cmd_plan)
