"""`unde-infra ops` against the drill's real cluster (3 etcd members, a shard's 2 Patroni +
PostgreSQL 15 nodes in network namespaces, test_failover_drill.Drill): the patronictl commands
of the switchover and reinit plans, run inside the namespace of the member the plan names
instead of over ssh, with the drill's layout (paths) in place of production's. Then what the
plan's own expectation says must hold, checked by ops.expectation_problem on patronictl's JSON,
and by PostgreSQL itself; before each plan, its preconditions (ops.precondition_problems) on the
real patronictl's JSON and configuration: which node takes writes, which one streams, and that the rebuilt
replica's data directory really is a new one.

Bounds are generous (other work loads the machine); they only catch what did not happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_failover_drill import Drill, Lab, _report, wait_for
from tests.integration.test_failover_drill import lab_factory as lab_factory  # the fixture
from unde_infra import ops
from unde_infra.model import Server, load_topology

pytestmark = pytest.mark.integration
BOUND_S = 180


def unmet_preconditions(drill: Drill, step: ops.Step) -> list[str]:
    """What --execute reads before the first action, read in the member's namespace."""
    assert step.server is not None
    listed = drill.lab.exec(step.server.name, list(ops.patronictl_list_json(step)), check=False, timeout=30)
    config = drill.lab.exec(step.server.name, list(ops.patronictl_show_config(step)), check=False, timeout=30)
    assert listed.returncode == 0 and config.returncode == 0, listed.stderr + config.stderr
    state = ops.ClusterState(ops.parse_members(listed.stdout), ops.is_paused(config.stdout))
    return ops.precondition_problems(step.require, ops.scope_of(step), state)


def wait_for_preconditions(drill: Drill, steps: list[ops.Step]) -> None:
    """The plan's preconditions hold on the real cluster (Patroni reports a member's state once a
    loop, so they may need a moment after the previous plan)."""
    for step in (s for s in steps if s.require):
        deadline = time.monotonic() + BOUND_S
        while (unmet := unmet_preconditions(drill, step)) and time.monotonic() < deadline:
            time.sleep(1)
        assert unmet == [], unmet


def run_plan(drill: Drill, steps: list[ops.Step]) -> float:
    """Each step's patronictl in its member's namespace; then wait for the step's expectation.
    Returns the seconds from the first command to the expected state."""
    wait_for_preconditions(drill, steps)
    started = time.monotonic()
    for step in steps:
        assert step.server is not None
        result = drill.lab.exec(step.server.name, list(step.argv), timeout=BOUND_S, check=False)
        assert result.returncode == 0, f"{' '.join(step.argv)}:\n{result.stdout}{result.stderr}"
        if step.expect is not None:
            wait_for_expectation(drill, step.server, step, step.expect)
    return time.monotonic() - started


def wait_for_expectation(drill: Drill, server: Server, step: ops.Step, expect: ops.Expect) -> None:
    deadline = time.monotonic() + BOUND_S
    problem: str | None = "not checked"
    while time.monotonic() < deadline:
        listed = drill.lab.exec(server.name, list(ops.patronictl_list_json(step)), check=False, timeout=30)
        problem = ops.expectation_problem(listed.stdout, expect) if listed.returncode == 0 else listed.stderr
        if problem is None:
            return
        time.sleep(1)
    raise AssertionError(f"after {BOUND_S} s: {problem}")


def test_switchover_and_reinit_from_the_ops_plans(lab_factory: Callable[[str], Lab], request: pytest.FixtureRequest,
                                                  deployed_patroni: str) -> None:
    inventory = load_topology()
    shard = inventory.shards[0]
    drill = Drill(inventory, shard, lab_factory("o"), deployed_patroni)
    primary, replica = drill.bootstrap()

    def layout_for(server: Server):  # the drill's paths, as the servers have production's
        return drill.layouts[server.name]

    # Switchover to Helsinki, patronictl on the replica (the default).
    to_helsinki = ops.switchover_steps(shard, "replica", layout_for=layout_for)
    assert {s.server.name for s in to_helsinki if s.server} == {replica}
    seconds = run_plan(drill, to_helsinki)
    _report(request, "ops_switchover_to_replica_seconds", round(seconds, 1))
    assert drill.writable(replica) and not drill.writable(primary)
    wait_for("the old primary to stream from the replica", lambda: drill.is_streaming_to(replica, primary), BOUND_S)

    # Reinitialise the old primary, now a replica: its data directory must be a new one.
    marker = Path(drill.layouts[primary].data_dir) / "unde-ops-reinit-marker"
    marker.write_text("before reinit\n")
    before = drill.sql(primary, "SELECT pg_postmaster_start_time()").stdout.strip()
    steps = ops.reinit_steps(shard, "primary", layout_for=layout_for)
    assert {s.server.name for s in steps if s.server} == {replica}  # run on the other member
    seconds = run_plan(drill, steps)
    _report(request, "ops_reinit_seconds", round(seconds, 1))
    assert not marker.exists(), "reinit left the old data directory in place"
    assert drill.sql(primary, "SELECT pg_postmaster_start_time()").stdout.strip() != before
    wait_for("the rebuilt replica to stream", lambda: drill.is_streaming_to(replica, primary), BOUND_S)
    drill.sql(replica, "INSERT INTO drill (id, note) VALUES (4242, 'after reinit')")
    wait_for("the rebuilt replica to replay new writes", lambda: drill.sql(
        primary, "SELECT note FROM drill WHERE id = 4242").stdout.strip() == "after reinit", BOUND_S)

    # The leader refuses to be reinitialised: --execute stops before it, and patronictl itself
    # fails, nothing is wiped.
    rebuild_leader = ops.reinit_steps(shard, "replica", layout_for=layout_for)
    assert any("is the Leader (running)" in line for line in unmet_preconditions(drill, rebuild_leader[0]))
    (leader_reinit, *_) = [s for s in rebuild_leader if s.expect]
    assert leader_reinit.server is not None
    refused = drill.lab.exec(leader_reinit.server.name, list(leader_reinit.argv), check=False, timeout=60)
    assert refused.returncode != 0 and drill.writable(replica), refused.stdout + refused.stderr

    # And home again, patronictl on the local member this time.
    seconds = run_plan(drill, ops.switchover_steps(shard, "primary", via="primary", layout_for=layout_for))
    _report(request, "ops_switchover_home_seconds", round(seconds, 1))
    assert drill.writable(primary) and not drill.writable(replica)
    wait_for("the replica to stream from the primary again", lambda: drill.is_streaming_to(primary, replica), BOUND_S)
