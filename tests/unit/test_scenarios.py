"""The scenario analysis: quorum per placement, failsafe semantics, RTO from the timings, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from tests.conftest import unde
from unde_infra import scenarios, timings
from unde_infra.model import HELSINKI, LOCAL, Inventory, load_topology

ROOT = Path(__file__).resolve().parents[2]


def by_key(outcomes: list[scenarios.Outcome]) -> dict[tuple[str, int], scenarios.Outcome]:
    return {(o.scenario, o.shard): o for o in outcomes}


def test_default_quorum_survives_the_loss_of_either_site(inventory: Inventory) -> None:
    survives = scenarios.quorum_survives_site_loss(inventory)
    assert survives[LOCAL] and survives[HELSINKI], (
        f"etcd placement {inventory.etcd_placement} loses its quorum with a site: {survives}")
    assert len({m.site for m in inventory.etcd}) == 3


def test_plan_placement_loses_quorum_with_helsinki() -> None:
    plan = load_topology(placement="plan")
    assert scenarios.quorum_survives_site_loss(plan)[HELSINKI] is False


def test_timings_obey_patronis_rule_and_spec() -> None:
    assert timings.PATRONI_LOOP_WAIT + 2 * timings.PATRONI_RETRY_TIMEOUT <= timings.PATRONI_TTL
    assert timings.PATRONI_TTL >= 20  # Patroni 4 raises anything lower to 20
    assert timings.PATRONI_LOOP_WAIT <= 5  # SPEC: Patroni notices after ~5 s
    assert 15 <= timings.failover_rto_seconds() <= 30  # SPEC: RTO 15-30 s


def test_default_placement_keeps_every_shard_writable() -> None:
    inventory = load_topology(shards=3)
    outcomes = by_key(scenarios.analyse(inventory))
    assert len(outcomes) == len(scenarios.SCENARIOS) * 3
    for (name, shard), outcome in outcomes.items():
        assert outcome.writable, (name, shard, outcome.why)
        expected_site = HELSINKI if name in ("shard-down", "local-site-down", "link-cut") else LOCAL
        assert outcome.primary_site == expected_site, (name, shard)
        assert not outcome.two_primaries
        assert len(outcome.by_leader) == len(inventory.etcd)
    assert outcomes[("third-site-down", 0)].data_at_risk == "none"
    assert "accumulate" in outcomes[("helsinki-down", 0)].data_at_risk
    assert "16 MiB" in outcomes[("shard-down", 0)].data_at_risk


def test_rto_includes_the_etcd_election_where_the_leader_fails_with_the_primary(inventory: Inventory) -> None:
    rows = by_key(scenarios.analyse(inventory))
    plain, with_election = timings.failover_rto_seconds(), timings.failover_rto_seconds(etcd_election=True)
    assert plain == timings.PATRONI_TTL + timings.PATRONI_MEMBER_CHECK_SECONDS + timings.PATRONI_PROMOTE_SECONDS
    # The new etcd leader renews the lease: a full ttl again, plus the election itself.
    assert with_election >= plain + timings.ETCD_ELECTION_TIMEOUT_MS / 1000 * 2
    assert with_election <= 30  # SPEC: RTO 15-30 s
    shard_down, site_down = rows[("shard-down", 0)], rows[("local-site-down", 0)]
    assert shard_down.rto_seconds == plain and not shard_down.etcd_election
    assert site_down.rto_seconds == with_election and site_down.etcd_leader == "etcd-1" and site_down.etcd_election
    by_leader = {o.etcd_leader: o for o in site_down.by_leader}
    assert by_leader["etcd-3"].rto_seconds == plain and by_leader["etcd-witness"].rto_seconds == plain


def test_link_cut_loses_the_async_window_only_with_the_etcd_leader_in_helsinki(inventory: Inventory) -> None:
    cut = by_key(scenarios.analyse(inventory))[("link-cut", 0)]
    assert cut.etcd_leader == "etcd-3" and cut.primary_site == HELSINKI
    assert cut.max_loss_seconds == timings.async_loss_window_seconds()
    assert timings.async_loss_window_seconds() <= timings.PATRONI_TTL + timings.PATRONI_DEMOTE_SECONDS
    by_leader = {o.etcd_leader: o for o in cut.by_leader}
    # The local or the witness leader keeps the local member in its quorum: nothing moves.
    for member in ("etcd-1", "etcd-witness"):
        assert by_leader[member].primary_site == LOCAL and by_leader[member].max_loss_seconds == 0


def test_sync_shards_never_lose_an_acknowledged_commit() -> None:
    inventory = load_topology(shards=2)
    inventory = dataclasses.replace(
        inventory, shards=tuple(dataclasses.replace(s, durability="sync") if s.index == 1 else s
                                for s in inventory.shards))
    for outcome in scenarios.analyse(inventory):
        for case in (outcome, *outcome.by_leader):
            if case.shard == 1:
                assert case.durability == "sync" and case.max_loss_seconds == 0, case
    cut = {(o.scenario, o.shard): o for o in scenarios.analyse(inventory)}[("link-cut", 0)]
    assert cut.durability == "async" and cut.max_loss_seconds > 0


def test_durability_overrides_are_checked(tmp_path: Path) -> None:
    text = (ROOT / "config" / "topology.yaml").read_text().replace(
        "durability_overrides: {}", "durability_overrides: {0: sync, 7: sync}")
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    result = unde("scenarios", "--topology", str(path))
    assert result.returncode == 2 and "shards.durability_overrides.7: there is no shard 7" in result.stderr
    ok = path.read_text().replace("{0: sync, 7: sync}", "{0: sync}")
    path.write_text(ok)
    rows = json.loads(unde("scenarios", "--json", "--topology", str(path)).stdout)
    assert {row["durability"] for row in rows} == {"sync"} and all(row["max_loss_seconds"] == 0 for row in rows)


def test_plan_placement_stops_writes_when_helsinki_goes() -> None:
    inventory = load_topology(shards=2, placement="plan")
    outcomes = by_key(scenarios.analyse(inventory))
    for shard in inventory.shards:
        down = outcomes[("helsinki-down", shard.index)]
        assert down.writable is False and down.primary_site is None and down.rto_seconds is None
        assert "failsafe cannot help" in down.why
        # The link cut demotes the local primary too; Helsinki holds the majority and promotes.
        cut = outcomes[("link-cut", shard.index)]
        assert cut.writable and cut.primary_site == HELSINKI
        assert outcomes[("third-site-down", shard.index)].primary_site == LOCAL


def test_failsafe_keeps_a_primary_that_reaches_every_member(inventory: Inventory) -> None:
    shard = inventory.shards[0]
    every_etcd = frozenset(m.host.name for m in inventory.etcd)
    outcome = scenarios.evaluate(inventory, shard, scenarios.Failure("etcd-down", every_etcd))
    assert outcome.writable and outcome.primary_site == LOCAL and "failsafe" in outcome.why
    # Without the replica, failsafe has a member it cannot reach: the primary demotes.
    alone = scenarios.evaluate(inventory, shard, scenarios.Failure("x", every_etcd | {shard.replica.name}))
    assert alone.writable is False


def test_without_the_witness_tunnel_helsinki_down_would_stop_writes(inventory: Inventory,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The witness only helps because local-etcd-1 reaches it directly, not through helsinki-gw."""
    monkeypatch.setattr(scenarios, "_direct_links", lambda inv: set())
    shard = inventory.shards[0]
    failure = next(f for f in scenarios.failures(inventory, shard) if f.name == "helsinki-down")
    assert scenarios.evaluate(inventory, shard, failure).writable is False


def test_cli_json() -> None:
    result = unde("scenarios", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == len(scenarios.SCENARIOS)
    assert all(list(row) == list(scenarios.JSON_KEYS) for row in rows)
    assert {row["scenario"] for row in rows} == set(scenarios.SCENARIOS)
    assert all(isinstance(row["writable"], bool) for row in rows)
    plan = json.loads(unde("scenarios", "--json", "--placement", "plan").stdout)
    helsinki = next(row for row in plan if row["scenario"] == "helsinki-down")
    assert helsinki["writable"] is False and helsinki["rto_seconds"] is None


def test_cli_text_and_bad_input(tmp_path: Path) -> None:
    text = unde("scenarios")
    assert text.returncode == 0 and "etcd placement three-sites" in text.stdout
    assert "helsinki-down" in text.stdout
    assert unde("scenarios", "--placement", "nowhere").returncode == 2
    missing = unde("scenarios", "--topology", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2 and "cannot read the file" in missing.stderr


def test_scenario_2_rto_adds_the_dns_failover_to_the_promotion(inventory: Inventory) -> None:
    rows = by_key(scenarios.analyse(inventory))
    site = rows[("local-site-down", 0)]
    dns = timings.entry_failover_seconds()
    # Detection: N failed probes at both vantage points, one interval for their skew, the
    # probes' timeouts and the peer read; then the API call, publication and the TTL.
    assert timings.entry_failover_detection_seconds() == (
        (timings.ENTRY_FAILURES_TO_FAIL_OVER + 1) * timings.ENTRY_PROBE_INTERVAL_SECONDS
        + 2 * timings.ENTRY_PROBE_TIMEOUT_SECONDS + timings.ENTRY_PEER_TIMEOUT_SECONDS)
    assert dns == (timings.entry_failover_detection_seconds() + timings.DNS_API_TIMEOUT_SECONDS
                   + timings.DNS_PUBLISH_SECONDS + timings.ENTRY_RECORD_TTL_SECONDS)
    assert site.entry_failover_seconds == dns and site.scenario_rto_seconds == max(site.rto_seconds or 0, dns)
    low, high = scenarios.SPEC_SITE_FAILOVER_RTO_SECONDS
    assert low <= site.scenario_rto_seconds <= high  # SPEC: RTO 1-5 min
    assert site.routing_seconds is None  # the standby orchestrator needs no routing entry
    for (name, _), row in rows.items():
        if name != "local-site-down":
            assert row.entry_failover_seconds is None
            assert row.scenario_rto_seconds == (row.rto_seconds or 0) + (row.routing_seconds or 0)
    text = unde("scenarios").stdout
    assert f"users reach standby-api after at most {dns} s" in text and "standby-api and etcd-witness" in text
    assert f"RTO {site.scenario_rto_seconds} s" in text and "SPEC: 1-5 min" in text
    row = next(r for r in json.loads(unde("scenarios", "--json").stdout) if r["scenario"] == "local-site-down")
    assert row["entry_failover_seconds"] == dns and row["scenario_rto_seconds"] == site.scenario_rto_seconds


def test_without_a_standby_entry_scenario_2_serves_nobody(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text())
    del data["servers"]["standby-api"]
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    rows = json.loads(unde("scenarios", "--json", "--topology", str(path)).stdout)
    site = next(r for r in rows if r["scenario"] == "local-site-down")
    assert site["writable"] is True and site["entry_failover_seconds"] is None and site["scenario_rto_seconds"] is None
    assert "no standby entry point in the topology" in unde("scenarios", "--topology", str(path)).stdout


def test_scenario_1_rto_adds_the_routing_update_where_the_local_site_serves_on(inventory: Inventory) -> None:
    rows = by_key(scenarios.analyse(inventory))
    routing = timings.routing_update_seconds()
    # The next poll of the node's own Patroni, its timeout, then one write to local-redis.
    assert routing == math.ceil(timings.ROUTING_POLL_SECONDS + timings.ROUTING_PATRONI_TIMEOUT_SECONDS
                                + timings.ROUTING_REDIS_TIMEOUT_SECONDS)
    shard_down = rows[("shard-down", 0)]
    assert shard_down.primary_site == "helsinki" and shard_down.routing_seconds == routing
    assert shard_down.scenario_rto_seconds == shard_down.rto_seconds + routing <= 30  # SPEC: RTO ~15-30 s
    # Cut off from Helsinki, local-redis cannot be told, and its clients could not reach the
    # replica anyway; where nothing moved there is nothing to route.
    assert rows[("link-cut", 0)].routing_seconds is None
    assert rows[("helsinki-down", 0)].routing_seconds is None and rows[("helsinki-down", 0)].scenario_rto_seconds == 0
    row = next(r for r in json.loads(unde("scenarios", "--json").stdout) if r["scenario"] == "shard-down")
    assert row["routing_seconds"] == routing and row["scenario_rto_seconds"] == shard_down.scenario_rto_seconds
