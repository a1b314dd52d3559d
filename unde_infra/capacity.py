"""`unde-infra plan --mau N`: how many shards N monthly active users need, from the plan's
capacity figures (`config/capacity.yaml`), the topology change that gets there, the servers it
adds and what the result costs per month."""

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
from .cost import render as render_cost
from .cost import topology_cost
from .errors import Problems
from .model import (
    DEFAULT_TOPOLOGY,
    LOCAL,
    ROOT,
    Inventory,
    build_inventory,
    load_server_types,
    load_topology,
    replica_type_for,
)
from .settings import stack_settings

DEFAULT_CAPACITY = ROOT / "config" / "capacity.yaml"
Basis = Literal["stages", "users-per-shard"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageRow(_Strict):
    stage: str
    mau_up_to: int = Field(gt=0)
    shards: int = Field(ge=1)


class UsersPerShard(_Strict):
    low: int = Field(gt=0)
    high: int = Field(gt=0)


class StatelessStep(_Strict):
    server: str
    trigger: str
    adds: str


class NotModelled(_Strict):
    from_mau: int
    what: str


class Capacity(_Strict):
    basis: Basis
    stages: list[StageRow] = Field(min_length=1)
    users_per_shard: UsersPerShard
    stateless_from_mau: int
    stateless: list[StatelessStep]
    not_modelled: list[NotModelled] = []


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


@dataclass(frozen=True)
class Estimate:
    basis: Basis
    shards: int
    how: str


def by_stages(mau: int, capacity: Capacity) -> Estimate:
    for row in capacity.stages:
        if mau <= row.mau_up_to:
            return Estimate("stages", row.shards, f"stage {row.stage} of the scale-out table (up to {row.mau_up_to:,} MAU)")
    last = capacity.stages[-1]
    doublings = math.ceil(math.log2(mau / last.mau_up_to))
    shards = last.shards * 2**doublings
    return Estimate("stages", shards, f"beyond the table's last row ({last.mau_up_to:,} MAU, {last.shards} shards): "
                                      f"doubled {doublings} time{'s' if doublings != 1 else ''}, as the table does")


def by_users_per_shard(mau: int, capacity: Capacity) -> Estimate:
    low, high = capacity.users_per_shard.low, capacity.users_per_shard.high
    shards = max(1, math.ceil(mau / high))
    return Estimate("users-per-shard", shards,
                    f"{mau:,} users at {high} users per shard (the comfortable capacity's upper end; "
                    f"{max(1, math.ceil(mau / low))} shards at its lower end, {low})")


@dataclass
class CapacityPlan:
    mau: int
    chosen: Estimate
    other: Estimate
    current_shards: int
    added: list[str]
    removed: list[str]
    changes: list[str]
    hints: list[str] = field(default_factory=list)
    report: Any = None  # CostReport at the planned size
    scale_out_total: float | None = None

    @property
    def shards(self) -> int:
        return self.chosen.shards


def make_plan(mau: int, topology: Path, basis: Basis | None = None, capacity: Capacity | None = None) -> CapacityPlan:
    capacity = capacity or load_capacity()
    basis = basis or capacity.basis
    estimates = {"stages": by_stages(mau, capacity), "users-per-shard": by_users_per_shard(mau, capacity)}
    chosen = estimates[basis]
    other = estimates["users-per-shard" if basis == "stages" else "stages"]
    current = load_topology(topology)
    planned = load_topology(topology, shards=chosen.shards)  # exit 2 when the address plan has no room
    before = set(current.servers)
    after = set(planned.servers)
    changes = [f"shards.count: {current.shards_spec.count} -> {chosen.shards}"] if chosen.shards != len(current.shards) else []
    old_type = replica_type_for(current.shards_spec, len(current.shards))
    new_type = replica_type_for(planned.shards_spec, len(planned.shards))
    if old_type != new_type:
        kept = sorted(before & {s.replica.name for s in planned.shards})
        changes.append(
            f"replica type {old_type} -> {new_type} (shards.replica.large_from_count: "
            f"{planned.shards_spec.replica.large_from_count}): new replicas are {new_type}; "
            f"{', '.join(kept) or 'no existing replica'} resized (hcloud powers each off for it)"
        )
    local = stack_settings(LOCAL)
    plan = CapacityPlan(mau, chosen, other, len(current.shards), _natural(after - before), _natural(before - after), changes,
                        report=topology_cost(planned, local))
    if mau >= capacity.stateless_from_mau:
        scaled = _with_instances(planned, topology, [step.server for step in capacity.stateless])
        for step in capacity.stateless:
            spec = planned.servers.get(step.server)
            if spec is not None:
                plan.hints.append(f"when {step.trigger}: servers.{step.server}.instances: 1 -> 2 (adds {step.adds})")
        plan.scale_out_total = topology_cost(scaled, local).total()
    plan.hints += [item.what for item in capacity.not_modelled if mau >= item.from_mau]
    return plan


def _natural(names: set[str]) -> list[str]:
    """local-shard-2 before local-shard-10."""
    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])


def _with_instances(planned: Inventory, topology: Path, servers: list[str]) -> Inventory:
    problems = Problems()
    data = read_config(Path(topology), problems)
    problems.raise_if_any(str(topology))
    data["shards"]["count"] = len(planned.shards)
    for name in servers:
        if name in data["servers"]:
            data["servers"][name]["instances"] = max(2, int(data["servers"][name].get("instances", 1)))
    return build_inventory(data, source=str(topology), server_types=load_server_types())


def render(plan: CapacityPlan, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({
            "mau": plan.mau, "basis": plan.chosen.basis, "shards": plan.shards, "how": plan.chosen.how,
            "other_basis": {"basis": plan.other.basis, "shards": plan.other.shards, "how": plan.other.how},
            "current_shards": plan.current_shards, "changes": plan.changes, "added_servers": plan.added,
            "removed_servers": plan.removed, "hints": plan.hints, "cost": plan.report.as_json(),
            "cost_with_stateless_scale_out": plan.scale_out_total,
        }, indent=2) + "\n"
    md = fmt == "markdown"
    h = "### " if md else ""
    bullet = "- " if md else "  "
    out = [f"{'## ' if md else ''}{plan.mau:,} monthly active users: {plan.shards} shard{'s' if plan.shards != 1 else ''}", "",
           f"from {plan.chosen.basis}: {plan.chosen.how}"]
    if plan.other.shards != plan.shards:
        out.append(f"the other figure disagrees: {plan.other.basis} gives {plan.other.shards} shards ({plan.other.how}); "
                   "SPEC.md's two figures count different things (monthly actives vs users with a year of data on "
                   f"a shard); `--basis {plan.other.basis}` plans with it")
    else:
        out.append(f"{plan.other.basis} agrees: {plan.other.how}")
    out += ["", f"{h}topology change (config/topology.yaml)", ""]
    out += [f"{bullet}{c}" for c in plan.changes] or [f"{bullet}none: the topology has {plan.current_shards} shards"]
    if plan.added:
        out += ["", f"{h}servers added ({len(plan.added)})", "", bullet + ", ".join(plan.added)]
    if plan.removed:
        out += ["", f"{h}servers removed ({len(plan.removed)}): a shard's data must move off first", "",
                bullet + ", ".join(plan.removed)]
    if plan.hints:
        out += ["", f"{h}at this size, by metrics (SPEC.md, stateless scale-out)", ""]
        out += [f"{bullet}{hint}" for hint in plan.hints]
    out += ["", render_cost(plan.report, ["helsinki", "local"], [], fmt).rstrip()]
    if plan.scale_out_total is not None:
        out += ["", f"with every stateless scale-out above as well: EUR {plan.scale_out_total:,.2f} per month"]
    return "\n".join(out) + "\n"


def cmd_plan(args: argparse.Namespace) -> int:
    if args.mau < 0:
        problems = Problems()
        problems.add("--mau", f"a number of monthly active users, 0 or more (got {args.mau})")
        problems.raise_if_any("unde-infra plan")
    print(render(make_plan(args.mau, args.topology, args.basis), args.format), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("plan", help="shards, topology change and cost for N monthly active users")
    parser.add_argument("--mau", type=int, required=True, help="monthly active users")
    parser.add_argument("--basis", choices=["stages", "users-per-shard"], default=None,
                        help="which of SPEC.md's capacity figures decides (default: config/capacity.yaml's basis)")
    parser.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.set_defaults(func=cmd_plan)
