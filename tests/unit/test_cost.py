"""`unde-infra cost`: the monthly bill from config/pricing.yaml, per server, stack and total;
existing hosts priced from their stack config; the comparison with the plan's stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import unde
from unde_infra.cost import compare_with_plan, resources_cost, topology_cost
from unde_infra.errors import Problems, TopologyError
from unde_infra.model import DEFAULT_TOPOLOGY, LOCAL, ROOT, load_server_types, load_topology
from unde_infra.pricing import Pricing, load_pricing
from unde_infra.settings import parse_settings, stack_settings

PRICING = load_pricing()
PRICES = PRICING.servers.eur_month
IPV4 = PRICING.other.primary_ipv4


def existing_local(hosts: dict[str, dict[str, object]]):
    problems = Problems()
    settings = parse_settings(LOCAL, {"provider": "existing", "hosts": hosts}, problems)
    assert not problems, problems.items
    return settings


def test_default_topology_prices_every_server_from_the_price_file() -> None:
    report = topology_cost(load_topology(), stack_settings(LOCAL))
    lines = {line.name: line for line in report.lines}
    assert report.unpriced == []
    # Adopted Helsinki servers: their own type, plus the primary IPv4 they have.
    assert (lines["helsinki-gw"].product, lines["helsinki-gw"].eur) == ("cx23", PRICES["cx23"] + IPV4)
    assert lines["push"].eur == PRICES["cpx32"] + IPV4
    # A private data server has no public IPv4 to pay for; the Robot server has its own price.
    assert lines["staging-db"].ipv4_eur == 0 and lines["staging-db"].eur == PRICES["cpx22"]
    assert (lines["production-db"].kind, lines["production-db"].eur) == ("dedicated", PRICING.other.dedicated["AX41"])
    # Local servers: the cheapest type sold in sin that fits (16 vCPU / 32 GB for a shard).
    assert (lines["local-shard-0"].product, lines["local-shard-0"].eur) == ("cpx62", PRICES["cpx62"])
    assert lines["local-etcd-1"].product == "cpx12"
    # Scenario 2's warm standby in Helsinki and scenario 3's second alert path on the local site.
    assert (lines["standby-api"].product, lines["standby-api"].eur) == ("cx33", PRICES["cx33"] + IPV4)
    assert (lines["standby-orchestrator"].product, lines["standby-orchestrator"].eur) == ("cx43", PRICES["cx43"] + IPV4)
    assert (lines["local-monitoring"].stack, lines["local-monitoring"].product) == ("local", "cpx12")
    assert lines["local-monitoring"].eur == PRICES["cpx12"] + IPV4
    # The replica is in the local stack but runs in Helsinki.
    replica = lines["shard-replica-0"]
    assert (replica.stack, replica.site, replica.product) == ("local", "helsinki", "ccx23")
    assert lines["object storage"].eur == PRICING.other.object_storage_base
    assert "local-app-lb" not in lines  # one API instance: no load balancer
    inventory = load_topology()
    assert {n for n in lines if n not in ("object storage",)} == set(inventory.servers)
    assert report.total() == pytest.approx(sum(line.eur for line in report.lines))
    assert report.total() == pytest.approx(report.total(stack="helsinki") + report.total(stack="local"))


def test_sixteen_shards_bring_sixteen_pairs_and_the_larger_replica_type() -> None:
    one = topology_cost(load_topology(), stack_settings(LOCAL))
    sixteen = topology_cost(load_topology(shards=16), stack_settings(LOCAL))
    replicas = [line for line in sixteen.lines if line.task == "shard-replica"]
    assert len(replicas) == 16 and {line.product for line in replicas} == {"ccx33"}
    shards = [line for line in sixteen.lines if line.task == "shard"]
    assert len(shards) == 16 and {line.product for line in shards} == {"cpx62"}
    # Only the local stack grows: 15 more shards, 16 replicas at the larger type instead of one small.
    assert sixteen.total(stack="helsinki") == one.total(stack="helsinki")
    expected = 15 * PRICES["cpx62"] + 16 * PRICES["ccx33"] - PRICES["ccx23"]
    assert sixteen.total(stack="local") - one.total(stack="local") == pytest.approx(expected)


def test_scale_out_adds_a_load_balancer_on_hcloud(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["servers"]["local-app"]["instances"] = 2
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    report = topology_cost(load_topology(topology), stack_settings(LOCAL))
    lines = {line.name: line for line in report.lines}
    assert lines["local-app-lb"].eur == PRICING.other.load_balancer_types["lb11"]
    assert lines["local-app-2"].product == "cpx32"
    # With existing hosts the entry host's nginx balances: no load balancer to pay for.
    hosts = {name: {"address": f"192.0.2.{i}", "eurMonth": 10} for i, name in enumerate(lines, 1) if name.startswith("local-")}
    existing = topology_cost(load_topology(topology), existing_local(hosts))
    assert "local-app-lb" not in {line.name for line in existing.lines}


def test_existing_hosts_are_priced_from_the_stack_config() -> None:
    inventory = load_topology()
    local_names = [s.name for s in inventory.site_servers(LOCAL)]
    hosts: dict[str, dict[str, object]] = {name: {"address": f"192.0.2.{i}", "eurMonth": 20 + i}
                                           for i, name in enumerate(local_names, 1)}
    del hosts["local-voice"]["eurMonth"]
    report = topology_cost(inventory, existing_local(hosts))
    lines = {line.name: line for line in report.lines}
    assert lines["local-app"].kind == "existing"
    assert lines["local-app"].eur == hosts["local-app"]["eurMonth"]
    assert lines["local-app"].ipv4_eur == 0  # an existing host's price is whatever its contract says
    assert report.unpriced == ["local-voice"]
    assert any("local-voice" in note and "eurMonth" in note for note in report.notes)
    assert report.total(site=LOCAL) == pytest.approx(sum(h["eurMonth"] for h in hosts.values() if "eurMonth" in h))  # type: ignore[misc]


@pytest.mark.parametrize("value", ["cheap", -5, True, [1], 10**6])
def test_a_bad_host_price_is_a_settings_problem(value: object) -> None:
    problems = Problems()
    parse_settings(LOCAL, {"provider": "existing", "hosts": {"local-app": {"address": "192.0.2.1", "eurMonth": value}}}, problems)
    assert [p.path for p in problems.items] == ["hosts.local-app.eurMonth"]


def test_a_type_without_a_price_and_a_price_without_a_type_are_errors(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "config" / "pricing.yaml").read_text())
    del data["servers"]["eur_month"]["cx33"]
    data["servers"]["eur_month"]["cx99"] = 1.0
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError) as raised:
        load_server_types(pricing=path)
    assert sorted(p.path for p in raised.value.problems) == ["servers.eur_month.cx33", "servers.eur_month.cx99"]


def test_the_price_file_has_a_date_and_a_source_per_group() -> None:
    raw = yaml.safe_load((ROOT / "config" / "pricing.yaml").read_text())
    for group in ("servers", "other"):
        assert raw[group]["source"].startswith("https://")
        assert str(raw[group]["taken"]) in PRICING.taken
    # One place for a price: server_types.yaml keeps the specs only.
    assert "eur_month" not in (ROOT / "config" / "server_types.yaml").read_text().split("types:")[1]


def test_comparison_with_the_plan_uses_each_stages_shard_count() -> None:
    rows = compare_with_plan(DEFAULT_TOPOLOGY, stack_settings(LOCAL))
    by = {(r.stage, r.part): r for r in rows}
    assert {r.stage for r in rows} == {"start", "10K", "50K"}
    assert [by[(s, "total")].shards for s in ("start", "10K", "50K")] == [1, 4, 16]
    ours_16 = topology_cost(load_topology(shards=16), stack_settings(LOCAL))
    assert by[("50K", "local")].ours == ours_16.total(site=LOCAL)
    assert by[("50K", "total")].ours == ours_16.total()
    # The plan's figures as SPEC.md states them.
    assert (by[("10K", "total")].plan.low, by[("10K", "total")].plan.high) == (740, 1140)  # type: ignore[union-attr]
    assert by[("50K", "local")].plan.currency == "USD"  # type: ignore[union-attr]
    assert by[("start", "total")].plan is None and by[("start", "total")].verdict == "the plan gives no figure"
    assert by[("10K", "total")].verdict.endswith("below the plan") or "within" in by[("10K", "total")].verdict


def test_cli_text_markdown_json_and_stack_filter() -> None:
    text = unde("cost")
    assert text.returncode == 0, text.stderr
    assert "stack helsinki: EUR" in text.stdout and "stack local: EUR" in text.stdout
    assert "Against the plan" in text.stdout and "prices taken 2026-" in text.stdout
    markdown = unde("cost", "--format", "markdown", "--shards", "16")
    assert "| local-shard-15 | local | sin | shard | cpx62 | 50.49\\* | 0.00 | 50.49 | new |  |" in markdown.stdout
    data = json.loads(unde("cost", "--format", "json", "--stack", "local", "--shards", "16").stdout)
    assert data["shards"] == 16
    assert {line["stack"] for line in data["lines"]} == {"local"}
    assert len([line for line in data["lines"] if line["task"] == "shard-replica"]) == 16
    assert data["total"] == pytest.approx(data["stacks"]["helsinki"] + data["stacks"]["local"])
    assert data["plan_comparison"] == []  # one stack: no plan comparison
    bad = unde("cost", "--shards", "0")
    assert bad.returncode == 2 and "--shards" in bad.stderr


# 16: the session's 16-shard runs, on one worker
@pytest.mark.parametrize("shards", [1, pytest.param(16, marks=pytest.mark.xdist_group("sixteen-shards"))])
def test_the_preview_bills_what_the_topology_cost_says(run_stack, shards: int) -> None:
    """The two views agree: pricing what the program registered (resources.json) gives the same
    Hetzner Cloud bill as pricing the topology, stack by stack."""
    for stack in ("helsinki", "local"):
        result = run_stack(stack, shards=shards)
        from_preview = resources_cost(stack, result.run.resources())
        from_topology = topology_cost(load_topology(shards=shards), stack_settings(LOCAL))
        cloud = [line for line in from_topology.stack_lines(stack) if line.kind in ("hcloud", "object-storage", "load-balancer")]
        assert from_preview.unpriced == []
        def seen(line):
            return line.name, line.product, line.eur, line.location, line.runs_today, line.stand_in

        assert sorted(map(seen, from_preview.lines)) == sorted(map(seen, cloud))


# --------------------------------------------------------------------------------------------
# Currencies: every figure in EUR; the plan's in another currency compared only at a configured rate


def pricing_with(tmp_path: Path, change) -> Pricing:
    data = yaml.safe_load((ROOT / "config" / "pricing.yaml").read_text())
    change(data)
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_pricing(path)


def test_the_plans_usd_figures_are_never_subtracted_from_ours() -> None:
    rows = compare_with_plan(DEFAULT_TOPOLOGY, stack_settings(LOCAL))
    usd = [r for r in rows if r.plan is not None and r.plan.currency == "USD"]
    assert [(r.stage, r.part) for r in usd] == [("10K", "local"), ("50K", "local")]
    for row in usd:
        assert row.plan_eur is None
        assert row.verdict == ("not compared: the plan's figure is in USD and ours in EUR; config/pricing.yaml "
                               "has no exchange rate for USD (exchange_rates.USD)")
    text = unde("cost").stdout
    assert "(the plan's figure is in USD, not converted)" not in text and text.count("not compared: ") == 2


def test_a_configured_rate_converts_the_plans_figure_and_is_shown(tmp_path: Path) -> None:
    rate = {"eur": 0.5, "taken": "2026-12-01", "source": "https://www.ecb.europa.eu/stats/eurofxref/"}
    pricing = pricing_with(tmp_path, lambda d: d.update(exchange_rates={"USD": rate}))
    by = {(r.stage, r.part): r for r in compare_with_plan(DEFAULT_TOPOLOGY, stack_settings(LOCAL), pricing)}
    ten = by[("10K", "local")]  # $500-900 at 0.5: EUR 250-450
    assert ten.plan_eur == (250.0, 450.0)
    assert 250 <= ten.ours <= 450
    assert ten.verdict == "within the plan's range (the plan's $500-900 is EUR 250-450 at 0.5 EUR per USD, taken 2026-12-01)"
    fifty = by[("50K", "local")]  # $2,000-3,500: EUR 1,000-1,750
    assert fifty.verdict == (f"{1000 - fifty.ours:,.0f} below the plan (the plan's $2,000-3,500 is EUR 1,000-1,750 "
                             "at 0.5 EUR per USD, taken 2026-12-01)")
    assert by[("10K", "helsinki")].rate is None  # EUR: as written


# --------------------------------------------------------------------------------------------
# Each server at its location; already paid apart from new spend


def test_each_server_is_priced_at_its_location_and_a_standing_in_list_price_is_marked(tmp_path: Path) -> None:
    report = topology_cost(load_topology(), stack_settings(LOCAL))
    lines = {line.name: line for line in report.lines}
    assert (lines["helsinki-gw"].location, lines["etcd-witness"].location, lines["shard-replica-0"].location) == \
        ("hel1", "fsn1", "hel1")
    assert lines["production-db"].location is None  # a Robot server, not an hcloud location
    local = [line for line in report.lines if line.site == LOCAL]
    assert local and {line.location for line in local} == {"sin"}
    assert all(line.stand_in.startswith("list price (fsn1, nbg1, hel1): config/pricing.yaml has no sin price")
               for line in local)
    assert not any(line.stand_in for line in report.lines if line.site != LOCAL)
    assert report.stand_in_total() == pytest.approx(sum(line.eur for line in local))
    text = unde("cost", "--stack", "local", "--no-plan").stdout
    assert text.count("50.49*") == 1 and "24.49*" not in text  # local-shard-0 marked; its replica in hel1 not
    assert (f"* list price (fsn1, nbg1, hel1): config/pricing.yaml has no sin price, and Hetzner charges more there: "
            f"EUR {report.stand_in_total():,.2f} of the figures above is priced so, and the real bill is higher") in text
    # A location's own price, once recorded, is used as it is, unmarked.
    pricing = pricing_with(tmp_path, lambda d: d["servers"]["location_eur_month"].update(sin={"cpx62": 61.0}))
    own = {line.name: line for line in topology_cost(load_topology(), stack_settings(LOCAL), pricing).lines}
    assert (own["local-shard-0"].base_eur, own["local-shard-0"].stand_in) == (61.0, "")
    assert own["local-app"].stand_in  # cpx32 has no sin price yet


def test_a_location_price_for_an_unknown_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as raised:
        pricing_with(tmp_path, lambda d: d["servers"]["location_eur_month"].update(sin={"cx99": 5.0, "cpx12": 0}))
    assert sorted(str(p) for p in raised.value.problems) == [
        "servers.location_eur_month.sin.cpx12: a price is a positive number of EUR per month (got 0.0)",
        "servers.location_eur_month.sin.cx99: no list price for cx99 (servers.eur_month): a type the program does not know",
    ]


def test_what_runs_today_is_already_paid_and_the_rest_is_new_spend() -> None:
    inventory = load_topology()
    report = topology_cost(inventory, stack_settings(LOCAL))
    running = {name for name, server in inventory.servers.items() if server.existing}
    assert {line.name for line in report.lines if line.runs_today} == running
    paid = round(sum(line.eur for line in report.lines if line.name in running), 2)
    assert report.total(runs_today=True) == paid
    assert report.total(runs_today=False) == round(report.total() - paid, 2)
    text = unde("cost").stdout
    assert (f"total: EUR {report.total():,.2f} per month: EUR {paid:,.2f} already paid ({len(running)} running today), "
            f"EUR {report.total() - paid:,.2f} new spend") in text
    assert (f"stack local: EUR {report.total(stack='local'):,.2f} per month (11 items): EUR 0.00 already paid "
            f"(0 running today), EUR {report.total(stack='local'):,.2f} new spend") in text
    data = json.loads(unde("cost", "--format", "json").stdout)
    assert data["already_paid"]["total"] == paid
    assert data["new_spend"]["total"] == round(report.total() - paid, 2)
    # Hosts of provider existing run today: already paid.
    hosts = {s.name: {"address": f"192.0.2.{i}", "eurMonth": 10} for i, s in enumerate(inventory.site_servers(LOCAL), 1)}
    existing = topology_cost(inventory, existing_local(hosts))
    assert all(line.runs_today for line in existing.lines if line.site == LOCAL)


def test_a_type_not_sold_at_its_location_is_marked(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["servers"]["local-voice"]["type"] = "cx23"
    del data["servers"]["local-voice"]["size"]
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    report = topology_cost(load_topology(topology), stack_settings(LOCAL))
    voice = next(line for line in report.lines if line.name == "local-voice")
    assert (voice.product, voice.location, voice.not_sold) == ("cx23", "sin", "cx23 is not sold in sin")
    assert [line.name for line in report.lines if line.not_sold] == ["local-voice"]
    text = unde("cost", "--topology", str(topology), "--stack", "local", "--no-plan").stdout
    assert "NOT SOLD in sin" in next(line for line in text.splitlines() if line.startswith("local-voice "))
    assert ("note: cannot be ordered: servers.local-voice.type: cx23 is not sold in sin (sold in: fsn1, hel1, nbg1; "
            "in sin: cpx12, cpx22, ccx13, cpx32, ccx23, cpx42, cpx52, ccx33, cpx62, ccx43); the cheapest there with at "
            "least its 2 vCPU / 4 GB: cpx22") in text.splitlines()
