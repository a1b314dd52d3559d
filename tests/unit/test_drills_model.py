"""The drills hold the failure model to what they measure: a figure beyond the timings the
model assumes is a problem of the run (lab/drills.disagreements)."""

from __future__ import annotations

from lab.drills import disagreements, percentile
from unde_infra import timings


def test_figures_within_the_model_are_no_problem() -> None:
    figures = {"etcd_election": {"etcd-3": {"election_s": 2.1}},
               "durability": {"async": {"replication": {"replay_lag_max_ms": 124.0}}}}
    assert disagreements(figures) == []


def test_a_slower_election_or_a_longer_lag_than_the_model_is_a_problem() -> None:
    figures = {"etcd_election": {"etcd-3": {"election_s": timings.ETCD_ELECTION_MAX_SECONDS + 0.5},
                                 "etcd-witness": {"election_s": None}},
               "durability": {"async": {"replication": {"replay_lag_max_ms": 1500.0}}}}
    found = disagreements(figures)
    assert len(found) == 3
    assert found[0].startswith("etcd election with the leader on etcd-3 took ")
    assert "timings.REPLICATION_LAG_SECONDS" in found[2]


def test_percentiles_of_commit_latencies() -> None:
    latencies = [float(i) for i in range(1, 101)]
    assert (percentile(latencies, 0.5), percentile(latencies, 0.99)) == (51.0, 100.0)


# --------------------------------------------------------------------------------------------
# The failure drills (lab/failover_drills.py): what they read from the clients' acknowledgements

from lab.failover_drills import Ack, ShardFigures, cut_ruleset, two_primaries, write_outage  # noqa: E402
from lab.failover_drills import disagreements as failure_disagreements  # noqa: E402
from unde_infra import scenarios  # noqa: E402
from unde_infra.model import load_topology  # noqa: E402


def acks(*pairs: tuple[float, str]) -> list[Ack]:
    return [Ack(at, "local", n, host) for n, (at, host) in enumerate(pairs)]


def test_the_outage_is_the_longest_time_without_an_acknowledged_write_after_the_failure() -> None:
    written = acks((9.0, "a"), (9.9, "a"), (10.4, "a"), (31.0, "b"), (31.2, "b"), (36.0, "b"))
    # A member cut off may still acknowledge after the failure (10.4); the outage runs from its
    # last acknowledgement to the new member's first (31.0); the later gap of 4.8 s is shorter.
    assert write_outage(written, failed_at=10.0, until=40.0) == 20.6
    assert write_outage(written, failed_at=10.0, until=30.0) == 0.5  # only 10.4 came in time
    assert write_outage(acks((9.0, "a")), failed_at=10.0, until=40.0) is None


def test_two_primaries_are_two_members_acknowledging_in_overlapping_times() -> None:
    failover = acks((1, "10.2.0.10"), (2, "10.2.0.10"), (20, "10.1.2.10"), (21, "10.1.2.10"))
    assert not two_primaries(failover)
    split = acks((1, "10.2.0.10"), (20, "10.1.2.10"), (22, "10.2.0.10"), (23, "10.1.2.10"))
    assert two_primaries(split)
    assert not two_primaries(acks((1, "a"), (2, "a")))


def test_the_link_cut_drops_only_what_crosses_between_local_and_helsinki() -> None:
    ruleset = cut_ruleset(["198.51.100.10", "2001:db8:2::10"], ["203.0.113.1", "2001:db8:1::1"])
    assert "ip saddr { 198.51.100.10 } ip daddr { 203.0.113.1 } drop" in ruleset
    assert "ip saddr { 203.0.113.1 } ip daddr { 198.51.100.10 } drop" in ruleset
    assert "ip6 saddr { 2001:db8:2::10 } ip6 daddr { 2001:db8:1::1 } drop" in ruleset
    # No IPv6 on one side: no IPv6 rule (an empty set would not load).
    assert "ip6" not in cut_ruleset(["198.51.100.10"], ["203.0.113.1", "2001:db8:1::1"])


def model_row(scenario: str, leader: str, durability: str = "async") -> scenarios.Outcome:
    inventory = load_topology()
    shard = inventory.shards[0]
    if durability == "sync":
        from dataclasses import replace

        shard = replace(shard, durability="sync")
    failure = next(f for f in scenarios.failures(inventory, shard) if f.name == scenario)
    return scenarios.evaluate(inventory, shard, failure, next(m for m in inventory.etcd if m.member == leader))


def test_a_drill_that_measures_what_the_model_says_agrees() -> None:
    row = model_row("shard-down", "etcd-3")
    measured = ShardFigures(outage_s=23.3, acked=700, lost=2, lost_window_s=0.05, two_primaries=False,
                            primary_site="helsinki", rejoin_s=40.0)
    assert failure_disagreements(measured, row, election=False) == []


def test_each_way_a_drill_can_differ_from_the_model_is_named() -> None:
    row = model_row("link-cut", "etcd-3")  # async: Helsinki promotes, up to 21 s of acknowledgements lost
    measured = ShardFigures(outage_s=row.rto_seconds + 5, acked=900, lost=400, lost_window_s=row.max_loss_seconds + 4,
                            two_primaries=True, primary_site="local", rejoin_s=None)
    found = failure_disagreements(measured, row, election=True)
    assert [f.split(": ", 1)[1].split(" ")[0] for f in found] == ["writes", "400", "two", "the", "etcd", "not"]
    assert found[0].startswith("link-cut, shard 0 (async), etcd leader etcd-3: writes stopped for 30")


def test_a_sync_shard_loses_nothing_in_the_model_so_any_lost_row_is_a_disagreement() -> None:
    row = model_row("shard-down", "etcd-1", durability="sync")
    assert row.max_loss_seconds == 0
    measured = ShardFigures(outage_s=20.0, acked=100, lost=1, lost_window_s=0.0, two_primaries=False,
                            primary_site="helsinki", rejoin_s=30.0)
    assert failure_disagreements(measured, row, election=False) == [
        "shard-down, shard 0 (sync), etcd leader etcd-1: 1 acknowledged rows lost; the model says none"]


def test_the_docs_table_puts_each_drill_beside_the_models_row() -> None:
    from lab.failover_drills import markdown_table

    inventory = load_topology()
    figures = {"scenarios": [{"scenario": "link-cut", "etcd_leader": "etcd-3", "etcd_election": False, "problems": [],
                              "shards": {"0": {"outage_s": 10.0, "acked": 900, "lost": 400, "lost_window_s": 9.5,
                                               "two_primaries": False, "primary_site": "helsinki", "rejoin_s": 200.0}}}],
               "hiccups": [{"scenario": "blackout 5 s", "etcd_leader": "etcd-1", "etcd_election": True, "problems": [],
                            "shards": {"0": {"outage_s": 0.07, "acked": 2156, "lost": 0, "lost_window_s": 0.0,
                                             "two_primaries": False, "primary_site": "local"}}}]}
    rows = markdown_table(figures, inventory).splitlines()
    assert rows[2] == ("| link-cut | etcd-3 | 0 (async) | 10.0 (25) | 400 of 900 over 9.5 s (21) | no | "
                       "helsinki (helsinki) | 200.0 |")
    assert rows[3] == "| blackout 5 s | etcd-1 | 0 (async) | 0.07 (no failover) | 0 of 2156 (0) | no | local | - |"
