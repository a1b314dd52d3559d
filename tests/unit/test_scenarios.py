"""The scenario analysis: quorum per placement, failsafe semantics, RTO from the timings, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unde_infra import scenarios, timings
from unde_infra.model import HELSINKI, LOCAL, Inventory, load_topology

ROOT = Path(__file__).resolve().parents[2]


def unde(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unde_infra", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


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
        expected_site = HELSINKI if name in ("shard-down", "local-site-down") else LOCAL
        assert outcome.primary_site == expected_site, (name, shard)
        expected_rto = timings.failover_rto_seconds() if expected_site == HELSINKI else 0
        assert outcome.rto_seconds == expected_rto
    assert outcomes[("third-site-down", 0)].data_at_risk == "none"
    assert "accumulate" in outcomes[("helsinki-down", 0)].data_at_risk
    assert "16 MiB" in outcomes[("shard-down", 0)].data_at_risk


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
