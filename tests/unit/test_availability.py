"""Where each server is ordered, as which hcloud type, and whether config/server_types.yaml
says that location sells it (unde_infra/availability.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from unde_infra.availability import placement, type_location_problems
from unde_infra.errors import TopologyError
from unde_infra.model import DEFAULT_TOPOLOGY, HELSINKI, LOCAL, ROOT, build_inventory, load_server_types, load_topology
from unde_infra.settings import stack_settings

RAW_TYPES = yaml.safe_load((ROOT / "config" / "server_types.yaml").read_text())["types"]
LOCATIONS = sorted({location for spec in RAW_TYPES.values() for location in spec["locations"]})


def topology_with(change) -> dict:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    change(data)
    return data


def inventory_of(data: dict, shards: int | None = None):
    if shards is not None:
        data["shards"]["count"] = shards
    return build_inventory(data, source="topology.yaml", server_types=load_server_types())


def local_voice_as(type_name: str):
    def change(data: dict) -> None:
        data["servers"]["local-voice"]["type"] = type_name
        data["servers"]["local-voice"].pop("size", None)
    return change


def test_the_committed_configuration_orders_only_what_is_sold() -> None:
    inventory = load_topology()
    for stack in (HELSINKI, LOCAL):
        assert type_location_problems(inventory, stack_settings(stack)) == []
    local = stack_settings(LOCAL)
    placed = {s.name: placement(s, inventory, local) for s in inventory.servers.values()}
    seen = {name: (p.hcloud_type, p.location, p.sold, p.ordered) for name, p in placed.items() if p is not None}
    assert seen["local-shard-0"] == ("cpx62", "sin", True, True)  # chosen among what sin sells
    assert seen["shard-replica-0"] == ("ccx23", "hel1", True, True)
    assert seen["etcd-witness"] == ("cx23", "fsn1", True, True)
    assert seen["helsinki-gw"] == ("cx23", "hel1", True, False)  # adopted: keeps the type it runs
    assert placed["production-db"] is None  # a Robot server
    existing = dataclasses.replace(local, provider="existing")
    assert all(placement(s, inventory, existing) is None for s in inventory.site_servers(LOCAL))


def test_a_cx_type_for_a_server_in_sin_is_refused_with_what_sin_sells() -> None:
    inventory = inventory_of(topology_with(local_voice_as("cx23")))
    assert type_location_problems(inventory, stack_settings(LOCAL)) == [(
        "servers.local-voice.type",
        "cx23 is not sold in sin (sold in: fsn1, hel1, nbg1; in sin: cpx12, cpx22, ccx13, cpx32, ccx23, cpx42, cpx52, "
        "ccx33, cpx62, ccx43); the cheapest there with at least its 2 vCPU / 4 GB: cpx22",
    )]
    assert type_location_problems(inventory, stack_settings(HELSINKI)) == []  # not a server of that stack
    in_helsinki = dataclasses.replace(stack_settings(LOCAL), location="hel1")
    assert type_location_problems(inventory, in_helsinki) == []


@pytest.mark.parametrize("type_name", sorted(RAW_TYPES))
def test_every_type_and_location_as_config_server_types_yaml_says(type_name: str) -> None:
    base = load_topology()
    voice = dataclasses.replace(base.server("local-voice"), hcloud_type=type_name)
    inventory = dataclasses.replace(base, servers={**base.servers, voice.name: voice})
    for location in LOCATIONS:
        settings = dataclasses.replace(stack_settings(LOCAL), location=location)
        placed = placement(voice, inventory, settings)
        assert placed is not None and (placed.hcloud_type, placed.location) == (type_name, location)
        sold = location in RAW_TYPES[type_name]["locations"]
        assert placed.sold is sold
        problems = [path for path, _ in type_location_problems(inventory, settings)]
        assert ("servers.local-voice.type" in problems) is not sold, (type_name, location)


def test_the_replicas_share_one_problem_at_the_setting_that_names_their_type() -> None:
    settings = dataclasses.replace(stack_settings(LOCAL), replica_location="sin")
    small = inventory_of(topology_with(lambda d: d["shards"]["replica"].update(type="cx33")))
    assert type_location_problems(small, settings) == [(
        "shards.replica.type",
        "cx33 is not sold in sin (sold in: fsn1, hel1, nbg1; in sin: cpx12, cpx22, ccx13, cpx32, ccx23, cpx42, cpx52, "
        "ccx33, cpx62, ccx43); the cheapest there with at least its 4 vCPU / 8 GB: cpx32; for shard-replica-0",
    )]
    large = inventory_of(topology_with(lambda d: d["shards"]["replica"].update(large_type="cx53")), shards=16)
    ((path, message),) = type_location_problems(large, settings)
    assert path == "shards.replica.large_type"
    assert message.startswith("cx53 is not sold in sin (")
    assert message.endswith("; for shard-replica-0 ... shard-replica-15 (16 servers)")


def test_an_adopted_server_is_checked_only_when_it_is_resized() -> None:
    """An adopted server keeps the type it runs (serverType is ignored): nothing is ordered
    unless `resize: true` asks for its type."""
    only_nbg1 = {name: spec.model_copy(update={"locations": ["nbg1"]}) if name == "cx23" else spec
                 for name, spec in load_server_types().items()}
    inventory = dataclasses.replace(load_topology(), server_types=only_nbg1)
    helsinki = stack_settings(HELSINKI)
    # etcd-witness is new (created in fsn1); the adopted cx23 servers in hel1 keep theirs.
    assert [path for path, _ in type_location_problems(inventory, helsinki)] == ["servers.etcd-witness.type"]
    resized = dataclasses.replace(inventory, servers={
        **inventory.servers, "apify": dataclasses.replace(inventory.server("apify"), resize=True)})
    assert [path for path, _ in type_location_problems(resized, helsinki)] == ["servers.apify.type",
                                                                              "servers.etcd-witness.type"]


def test_the_topology_check_of_a_sites_location_reads_the_same(tmp_path: Path) -> None:
    data = topology_with(lambda d: d["sites"]["witness"].update(location="ash"))
    with pytest.raises(TopologyError) as raised:
        inventory_of(data)
    assert ("servers.etcd-witness.type: cx23 is not sold in ash (sold in: fsn1, hel1, nbg1; in ash: cpx12, cpx22, "
            "ccx13, cpx32, ccx23, cpx42, cpx52, ccx33, cpx62, ccx43); the cheapest there with at least its "
            "2 vCPU / 4 GB: cpx22") in [str(p) for p in raised.value.problems]
