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
from unde_infra.model import DEFAULT_TOPOLOGY, LOCAL, ROOT, load_topology
from unde_infra.settings import stack_settings

CAPACITY = load_capacity()


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
    assert plan.report.total() == expected.total()
    assert plan.hints == [CAPACITY.not_modelled[1].what]  # PostHog's ClickHouse from 10K; no stateless step yet
    assert plan.scale_out_total is None


def test_the_text_says_which_figure_and_prints_both_when_they_disagree() -> None:
    result = unde("plan", "--mau", "12000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("12,000 monthly active users: 16 shards")
    assert "from stages: stage 50K of the scale-out table (up to 20,000 MAU)" in result.stdout
    assert "users-per-shard gives 15 shards" in result.stdout and "count different things" in result.stdout
    assert "shards.count: 1 -> 16" in result.stdout and "Monthly cost at 16 shards" in result.stdout
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
    assert plan.scale_out_total is not None and plan.scale_out_total > plan.report.total()
    assert make_plan(24999, DEFAULT_TOPOLOGY).scale_out_total is None


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
    too_many = unde("plan", "--mau", "100000000")
    assert too_many.returncode == 2 and "shards.count:" in too_many.stderr and "131072" in too_many.stderr


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
