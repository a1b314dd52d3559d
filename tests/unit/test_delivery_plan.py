"""The delivery plan and its peak SSH connections per endpoint (unde_infra/delivery_plan.py), and
the budget the delivery keeps at 1 and at 16 shards (components/remote_command.DeliveryQueues)."""

from __future__ import annotations

import re

import pytest

from unde_infra.delivery_plan import DeliveryPlan, PlannedCommand, peak_connections, plan_from_run
from unde_infra.limits import SSH_CONNECTION_BUDGET, SSHD_MAX_STARTUPS


def command(name: str, after: tuple[str, ...] = (), host: str = "192.0.2.1", jump: str | None = None) -> PlannedCommand:
    return PlannedCommand(name=name, urn=f"urn:{name}", server=name.partition(":")[0], host=host, user="root", port=22,
                          jump=jump, create="true", stdin=None, triggers=[], after=[f"urn:{a}" for a in after])


def plan(*commands: PlannedCommand) -> DeliveryPlan:
    return DeliveryPlan("test", list(commands))


def test_a_chain_has_a_peak_of_one() -> None:
    assert peak_connections(plan(*(command(f"h:{i}", (f"h:{i - 1}",) if i else ()) for i in range(20)))) == {"192.0.2.1": 1}


def test_an_antichain_peaks_at_its_size() -> None:
    assert peak_connections(plan(*(command(f"h:{i}") for i in range(13)))) == {"192.0.2.1": 13}


def test_a_diamond_peaks_at_its_middle() -> None:
    diamond = plan(command("h:top"), command("h:left", ("h:top",)), command("h:middle", ("h:top",)),
                   command("h:right", ("h:top",)), command("h:bottom", ("h:left", "h:middle", "h:right")))
    assert peak_connections(diamond) == {"192.0.2.1": 3}


def test_order_is_transitive_through_other_endpoints() -> None:
    """a (host 1) before b (host 2) before c (host 1): a and c never overlap."""
    chained = plan(command("one:a", host="192.0.2.1"), command("two:b", ("one:a",), host="192.0.2.2"),
                   command("one:c", ("two:b",), host="192.0.2.1"))
    assert peak_connections(chained) == {"192.0.2.1": 1, "192.0.2.2": 1}


def test_a_jump_host_sees_the_commands_of_every_host_behind_it() -> None:
    """Two hosts behind one jump host, each a chain of three: each host sees one connection at
    a time, the jump host two (one per chain) plus its own command, which runs alongside."""
    commands = [command("gw:own", host="198.51.100.1")]
    for host, address in (("a", "10.0.0.1"), ("b", "10.0.0.2")):
        commands += [command(f"{host}:{i}", (f"{host}:{i - 1}",) if i else (), host=address, jump="198.51.100.1")
                     for i in range(3)]
    assert peak_connections(plan(*commands)) == {"10.0.0.1": 1, "10.0.0.2": 1, "198.51.100.1": 3}


def test_a_plan_round_trips_through_json() -> None:
    original = plan(command("h:/etc/x"), command("h:apply", ("h:/etc/x",), jump="198.51.100.1"))
    assert DeliveryPlan.from_json(original.to_json()) == original


SHARDS = [pytest.param(None, id="committed shards"),
          pytest.param(16, id="16 shards", marks=pytest.mark.xdist_group("sixteen-shards"))]


@pytest.mark.parametrize("shards", SHARDS)
@pytest.mark.parametrize("stack", ["helsinki", "local"])
def test_no_endpoint_sees_more_ssh_connections_than_the_budget(run_stack, stack, shards) -> None:
    """Under `pulumi up`'s unbounded parallelism, from the program's dependency graph: every
    target and every jump host at most SSH_CONNECTION_BUDGET connections at once, and the
    budget is no trivial one (hosts with many more commands than that)."""
    result = run_stack(stack, shards=shards)
    delivery = plan_from_run(result.run)
    peaks = peak_connections(delivery)
    assert SSH_CONNECTION_BUDGET < SSHD_MAX_STARTUPS
    over = {endpoint: peak for endpoint, peak in peaks.items() if peak > SSH_CONNECTION_BUDGET}
    assert over == {}
    commands: dict[str, int] = {}
    for c in delivery.commands:
        for endpoint in c.endpoints():
            commands[endpoint] = commands.get(endpoint, 0) + 1
    assert max(commands.values()) > 5 * SSHD_MAX_STARTUPS
    assert len([n for n in commands.values() if n > SSHD_MAX_STARTUPS]) >= 5
    if shards == 16 and stack == "local":
        # 16 shards: the jump hosts carry hundreds of commands, in their lanes.
        assert max(commands.values()) > 500 and max(peaks.values()) == SSH_CONNECTION_BUDGET


def test_without_the_queues_a_fresh_up_would_flood_sshd(run_stack, monkeypatch) -> None:
    """The same program with every command registered out of turn (the delivery before the
    queues): the hosts would see dozens of connections at once."""
    from components.remote_command import DeliveryQueues

    monkeypatch.setattr(DeliveryQueues, "in_turn", lambda self, host, build, opts=None: build(opts or _options()))
    peaks = peak_connections(plan_from_run(run_stack("local").run))
    assert max(peaks.values()) > 4 * SSHD_MAX_STARTUPS
    assert len([p for p in peaks.values() if p > SSHD_MAX_STARTUPS]) >= 5


def _options():  # type: ignore[no-untyped-def]
    import pulumi

    return pulumi.ResourceOptions()


@pytest.mark.parametrize("stack", ["helsinki", "local"])
def test_every_written_file_marks_an_apply_step_of_its_own_server(run_stack, stack) -> None:
    """Each apply step has its own marker on its server (names repeat: local-shard-0:apply is
    the shard's setup and its tunnel's), and every marker a write leaves is one that an apply
    step on the same server runs and removes."""
    delivery = plan_from_run(run_stack(stack).run)
    applied: dict[tuple[str, str], str] = {}
    marked: set[tuple[str, str]] = set()
    for c in delivery.commands:
        text = c.create or ""
        if (m := re.search(r"pending='?(/var/lib/unde/pending/[^'\s]+)", text)) is not None:
            assert (c.server, m.group(1)) not in applied, (c.name, applied.get((c.server, m.group(1))))
            applied[(c.server, m.group(1))] = c.name
        marked.update((c.server, m.group(1)) for m in re.finditer(r": > '?(/var/lib/unde/pending/[^'\s;]+)", text))
    assert applied and marked and marked == set(applied)
