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
