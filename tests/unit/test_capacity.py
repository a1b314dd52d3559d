"""`unde-infra plan --mau N`: shards from SPEC.md's capacity figures (which one is said), the
topology change, the servers added and the cost at that size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import unde
from unde_infra.capacity import by_stages, by_users_per_shard, load_capacity, make_plan
from unde_infra.cost import topology_cost
from unde_infra.errors import TopologyError
from unde_infra.model import DEFAULT_TOPOLOGY, LOCAL, ROOT, load_topology, shard_capacity, shard_rooms
from unde_infra.pricing import load_pricing
from unde_infra.settings import stack_settings

CAPACITY = load_capacity()
PRICES = load_pricing().servers.eur_month


@pytest.mark.parametrize(("mau", "shards"), [
    (0, 1), (800, 1), (801, 2), (2000, 2), (2001, 4), (4000, 4), (10000, 8), (10001, 16), (20000, 16),
    (20001, 32), (40000, 32), (40001, 64),
])  # fmt: skip
def test_the_stage_table_of_spec(mau: int, shards: int) -> None:
    """SPEC.md's table: 0-800 -> 1, ~800-2,000 -> 2, ~2,000-4,000 -> 4, ~4,000-10,000 -> 8,
    ~10,000-20,000 -> 16; beyond it the shards double as the MAU doubles."""
    assert by_stages(mau, CAPACITY).shards == shards


@pytest.mark.parametrize(("mau", "shards"), [(0, 1), (800, 1), (801, 2), (8000, 10), (12000, 15)])
def test_users_per_shard(mau: int, shards: int) -> None:
    assert by_users_per_shard(mau, CAPACITY).shards == shards


def test_sixteen_shards_at_twelve_thousand(tmp_path: Path) -> None:
    plan = make_plan(12000, DEFAULT_TOPOLOGY)
    assert (plan.chosen.basis, plan.shards, plan.other.shards) == ("stages", 16, 15)
    assert plan.changes[0] == "shards.count: 1 -> 16"
    assert "replica type ccx23 -> ccx33" in plan.changes[1] and "shard-replica-0 resized" in plan.changes[1]
    assert plan.added == [f"local-shard-{n}" for n in range(1, 16)] + [f"shard-replica-{n}" for n in range(1, 16)]
    assert plan.removed == []
    expected = topology_cost(load_topology(shards=16), stack_settings(LOCAL))
    assert plan.report.total() == expected.total() == plan.planned.total
    assert plan.today.total == topology_cost(load_topology(), stack_settings(LOCAL)).total()
    assert plan.planned.estimated == ""  # itemised: the address plan places every shard
    assert plan.hints == [CAPACITY.not_modelled[1].what]  # PostHog's ClickHouse from 10K; no stateless step yet
    assert plan.scale_out is None


def test_the_text_says_which_figure_and_prints_both_when_they_disagree() -> None:
    result = unde("plan", "--mau", "12000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("12,000 monthly active users: 16 shards")
    assert "from stages: SPEC's scale-out table, stage 50K: 10,001-20,000 MAU, 16 shards" in result.stdout
    assert "users-per-shard gives 15 shards" in result.stdout and "count different things" in result.stdout
    assert "shards.count: 1 -> 16" in result.stdout
    agree = unde("plan", "--mau", "3000").stdout
    assert "users-per-shard agrees" in agree and "disagrees" not in agree
    other = json.loads(unde("plan", "--mau", "12000", "--basis", "users-per-shard", "--format", "json").stdout)
    assert (other["basis"], other["shards"], other["other_basis"]["shards"]) == ("users-per-shard", 15, 16)
    assert other["changes"][0] == "shards.count: 1 -> 15"


def test_stateless_scale_out_from_25k_with_its_cost() -> None:
    plan = make_plan(30000, DEFAULT_TOPOLOGY)
    assert plan.shards == 32
    assert "when p95 > 200 ms: servers.local-app.instances: 1 -> 2 (adds local-app-2 and a load balancer)" in plan.hints
    assert any("local-orchestrator.instances: 1 -> 2" in hint for hint in plan.hints)
    assert any("Redis Sentinel" in hint for hint in plan.hints)
    assert plan.scale_out is not None and plan.scale_out.total > plan.planned.total
    assert make_plan(24999, DEFAULT_TOPOLOGY).scale_out is None


def test_fewer_users_than_the_topology_has_shards_lists_the_removed_servers(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["shards"]["count"] = 4
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    plan = make_plan(500, topology)
    assert plan.changes == ["shards.count: 4 -> 1"]
    assert plan.removed == ["local-shard-1", "local-shard-2", "local-shard-3", "shard-replica-1", "shard-replica-2", "shard-replica-3"]
    assert "a shard's data must move off first" in unde("plan", "--mau", "500", "--topology", str(topology)).stdout


def test_bad_input_exits_2() -> None:
    negative = unde("plan", "--mau", "-1")
    assert negative.returncode == 2 and "--mau: a number of monthly active users" in negative.stderr
    text = unde("plan", "--mau", "many")
    assert (text.returncode, text.stderr) == (2, "unde-infra plan: 1 problem\n  --mau: a number of monthly active "
                                                 "users, like 12000 or 12,000 (got 'many')\n")
    both = unde("plan", "--mau", "5000", "--stage", "10K")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_a_capacity_table_out_of_order_is_refused(tmp_path: Path) -> None:
    from unde_infra.errors import TopologyError

    data = yaml.safe_load((ROOT / "config" / "capacity.yaml").read_text())
    data["stages"][2]["mau_up_to"] = 100
    path = tmp_path / "capacity.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError) as raised:
        load_capacity(path)
    assert [p.path for p in raised.value.problems] == ["stages.10K"]


def test_a_capacity_file_with_bad_fields_names_each_with_what_it_got(tmp_path: Path) -> None:
    from unde_infra.errors import TopologyError

    data = yaml.safe_load((ROOT / "config" / "capacity.yaml").read_text())
    data["stages"][1]["shards"] = "many"
    data["users_per_shard"]["peak"] = 900
    del data["basis"]
    path = tmp_path / "capacity.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError) as raised:
        load_capacity(path)
    assert sorted(str(p) for p in raised.value.problems) == [
        "basis: required",
        "stages.1.shards: Input should be a valid integer, unable to parse string as an integer (got 'many')",
        "users_per_shard.peak: unknown key",
    ]


# --------------------------------------------------------------------------------------------
# Beyond the address plan: an answer, not an error


def cost_rows(lines: list[str]) -> dict[str, list[str]]:
    """The cost change table's rows (stack -> cells), from the heading on."""
    start = next(i for i, line in enumerate(lines) if line.startswith("cost per month against the topology now"))
    rows = {}
    for line in lines[start + 2:]:
        if not line:
            break
        first, *cells = line.split()
        rows[first] = cells
    return rows


def test_the_address_plans_room_is_what_the_model_places() -> None:
    """The planner's limit is the model's: 127 shards load, 128 are refused, and both say 127."""
    inventory = load_topology()
    assert shard_capacity(inventory.shards_spec, inventory.network) == 127
    assert [(room.path, str(room.network), room.holds) for room in shard_rooms(inventory.shards_spec, inventory.network)] \
        == [("shards.local.pool", "10.2.0.128/25", 127), ("network.subnets.replicas", "10.1.2.0/24", 245)]
    assert len(load_topology(shards=127).shards) == 127
    with pytest.raises(TopologyError) as raised:
        load_topology(shards=128)
    assert [str(p) for p in raised.value.problems] == ["shards.count: 128 shards do not fit the address plan (at most 127)"]


def test_a_hundred_thousand_users_get_an_answer_with_what_would_have_to_change() -> None:
    result = unde("plan", "--mau", "100000")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == "100,000 monthly active users: needs 128 shards; the address plan holds at most 127"
    assert ("  shards.local.pool 10.2.0.128/25 places 127 shards (shard 0 at shards.local.first_address 10.2.0.10, "
            "shards 1-126 at 10.2.0.129-10.2.0.254); 128 need a /24 pool, as large as sites.local.range 10.2.0.0/24 "
            "or larger, which the other local servers and network.scale_out_pool 10.2.0.64/26 share: the local site's "
            "range has to grow, and the tunnel numbering with it (a shard's tunnel index is the last octet of its "
            "address, and tunnel indices run 0-255)") in lines
    assert "  none the address plan allows: 128 shards do not fit it (at most 127)" in lines
    # The cost change against today: 127 shards as placed, the 128th priced like the 127th.
    local = stack_settings(LOCAL)
    today = topology_cost(load_topology(), local)
    at_room = topology_cost(load_topology(shards=127), local)
    one_more = PRICES["cpx62"] + PRICES["ccx33"]
    planned_local = round(at_room.total(stack="local") + one_more, 2)
    planned_total = round(at_room.total() + one_more, 2)
    rows = cost_rows(lines)
    # `*`: list prices stand in for sin's own (cost marks which); the 128th shard's primary is in sin too.
    assert rows["local"] == [f"{today.total(stack='local'):,.2f}*", f"{planned_local:,.2f}*",
                             f"+{planned_local - today.total(stack='local'):,.2f}"]
    assert rows["total"] == [f"{today.total():,.2f}*", f"{planned_total:,.2f}*", f"+{planned_total - today.total():,.2f}"]
    assert (f"* EUR {today.stand_in_total():,.2f} now and EUR {at_room.stand_in_total() + PRICES['cpx62']:,.2f} planned "
            "at list prices standing in for a location's own, higher ones (`unde-infra cost` marks which): the real "
            "figures are higher") in lines
    assert rows["stack"] == ["now", "(1", "shard)", "planned", "(128", "shards)", "change"]
    assert f"planned: 127 shards as the address plan places them, and 1 more each priced like shard 126: " \
           f"EUR {one_more:,.2f}, cpx62 (local-shard-126) + ccx33 (shard-replica-126)" in lines
    data = json.loads(unde("plan", "--mau", "100000", "--format", "json").stdout)
    assert data["address_plan"]["holds"] == 127 and data["address_plan"]["fits"] is False
    assert data["cost_change"]["planned"]["total"] == planned_total
    assert data["cost_change"]["change"]["total"] == round(planned_total - today.total(), 2)
    assert data["cost"] is None and data["added_servers"] == []


def test_the_limit_comes_from_the_topologys_address_plan(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["shards"]["local"]["pool"] = "10.2.0.128/26"  # 63 shards
    data["shards"]["replica"]["first_host"] = 220  # replicas at 10.1.2.220-254: 35
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    plan = make_plan(20000, topology)  # 16 shards fit
    assert (plan.room, plan.fits, plan.beyond_address_plan) == (35, True, [])
    beyond = make_plan(80000, topology)  # 64 shards
    assert (beyond.room, beyond.fits) == (35, False)
    assert beyond.beyond_address_plan == [
        "shards.local.pool 10.2.0.128/26 places 63 shards (shard 0 at shards.local.first_address 10.2.0.10, "
        "shards 1-62 at 10.2.0.129-10.2.0.190); 64 need a /25 pool inside sites.local.range 10.2.0.0/24, clear of "
        "the other local servers and network.scale_out_pool 10.2.0.64/26",
        "network.subnets.replicas 10.1.2.0/24 places 35 replicas (replica N at host shards.replica.first_host + N "
        "= 220 + N); 64 need a /23 subnet",
    ]


def test_a_hundred_million_users_are_answered_too() -> None:
    result = unde("plan", "--mau", "100000000")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("100,000,000 monthly active users: needs 131,072 shards; the address plan holds at most 127\n")
    assert "131,072 need a /14 pool" in result.stdout and "131,072 need a /14 subnet" in result.stdout


# --------------------------------------------------------------------------------------------
# Stage labels are names, not MAU figures


def test_a_stage_is_planned_by_its_label_and_shown_with_the_mau_it_covers() -> None:
    result = unde("plan", "--stage", "10k")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stage 10K (2,001-4,000 MAU): 4 shards\n")
    assert "from stages: SPEC's scale-out table, stage 10K: 2,001-4,000 MAU, 4 shards" in result.stdout
    data = json.loads(unde("plan", "--stage", "50K", "--format", "json").stdout)
    assert (data["shards"], data["mau"], data["stage"]) == (16, 20000, {"label": "50K", "mau_up_to": 20000, "shards": 16})


def test_a_mau_figure_that_reads_like_a_stage_label_says_it_is_not_that_stage() -> None:
    fifty = unde("plan", "--mau", "50,000")
    assert fifty.returncode == 0, fifty.stderr
    assert fifty.stdout.startswith("50,000 monthly active users: 64 shards\n")
    assert ("note: 50,000 MAU is not stage 50K: SPEC's stage labels are names, not MAU figures (stage 50K: "
            "10,001-20,000 MAU, 16 shards); `--stage 50K` plans that stage") in fifty.stdout.splitlines()
    assert "note:" not in unde("plan", "--mau", "20000").stdout
    label = unde("plan", "--mau", "50K")
    assert label.returncode == 2
    assert label.stderr == ("unde-infra plan: 1 problem\n  --mau: '50K' is a stage label of SPEC's scale-out table, not a "
                            "number of users (stage 50K: 10,001-20,000 MAU, 16 shards): give --stage 50K, or --mau "
                            "50000 for 50,000 users\n")
    unknown = unde("plan", "--stage", "40K")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[1] == (
        "  --stage: unknown stage '40K' (SPEC's stages: start (0-800 MAU), 5K (801-2,000 MAU), 10K (2,001-4,000 MAU), "
        "25K (4,001-10,000 MAU), 50K (10,001-20,000 MAU))")


def test_the_cost_change_against_today_in_eur() -> None:
    plan = make_plan(12000, DEFAULT_TOPOLOGY)
    local = stack_settings(LOCAL)
    today, planned = topology_cost(load_topology(), local), topology_cost(load_topology(shards=16), local)
    lines = unde("plan", "--mau", "12000").stdout.splitlines()
    assert "stack     now (1 shard)  planned (16 shards)  change" in lines
    for stack in ("helsinki", "local"):
        assert plan.today.by_stack[stack] == today.total(stack=stack)
        assert plan.planned.by_stack[stack] == planned.total(stack=stack)
    change = planned.total(stack="local") - today.total(stack="local")
    rows = cost_rows(lines)
    assert rows["local"] == [f"{today.total(stack='local'):,.2f}*", f"{planned.total(stack='local'):,.2f}*", f"+{change:,.2f}"]
    assert rows["helsinki"] == [f"{today.total(stack='helsinki'):,.2f}"] * 2 + ["+0.00"]
    assert "each server's price, and what is already paid and what is new: `unde-infra cost --shards 16`" in lines
