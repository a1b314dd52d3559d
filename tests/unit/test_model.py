"""The topology model: what it derives from config/topology.yaml, and every bad input it rejects."""

from __future__ import annotations

import copy
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from unde_infra.errors import TopologyError
from unde_infra.model import DEFAULT_TOPOLOGY, Inventory, load_topology, stack_of
from unde_infra.sizing import cheapest_type

SPEC_HELSINKI = {  # SPEC.md: name -> (private IP, type); shard-replica-0 moved (contradiction 4)
    "helsinki-gw": ("10.1.0.2", "cx23"),
    "scraper": ("10.1.0.3", "cpx22"),
    "push": ("10.1.0.4", "cpx32"),
    "model-generator": ("10.1.0.5", "cpx22"),
    "tryon-service": ("10.1.0.6", "cpx22"),
    "production-db": ("10.1.1.2", None),
    "apify": ("10.1.0.9", "cx23"),
    "collage": ("10.1.0.16", "cx33"),
    "recognition": ("10.1.0.14", "cx23"),
    "photo-downloader": ("10.1.0.10", "cx23"),
    "ximilar-sync": ("10.1.0.11", "cx23"),
    "ximilar-gw": ("10.1.0.12", "cx23"),
    "llm-reranker": ("10.1.0.13", "cx23"),
    "staging-db": ("10.1.0.8", "cpx22"),
    "shard-replica-0": ("10.1.2.10", "ccx23"),
    "etcd-3": ("10.1.0.15", "cx23"),
    "posthog": ("10.1.0.30", "ccx33"),
    "monitoring": ("10.1.0.7", "cx33"),
}
SPEC_LOCAL = {  # SPEC.md: name -> (private IP, vCPU, GB, interface, tunnel local, tunnel helsinki)
    "local-app": ("10.2.0.2", 4, 8, "wg-app", "10.3.0.1", "10.3.0.100"),
    "local-orchestrator": ("10.2.0.17", 8, 16, "wg-orch", "10.3.1.1", "10.3.1.100"),
    "local-redis": ("10.2.0.4", 2, 4, "wg-redis", "10.3.2.1", "10.3.2.100"),
    "local-mood": ("10.2.0.11", 2, 4, "wg-mood", "10.3.3.1", "10.3.3.100"),
    "local-persona": ("10.2.0.21", 2, 4, "wg-persona", "10.3.4.1", "10.3.4.100"),
    "local-context": ("10.2.0.19", 2, 4, "wg-context", "10.3.5.1", "10.3.5.100"),
    "local-voice": ("10.2.0.12", 2, 4, "wg-voice", "10.3.6.1", "10.3.6.100"),
    "local-shard-0": ("10.2.0.10", 16, 32, "wg-shard0", "10.3.10.1", "10.3.10.100"),
    "local-etcd-1": ("10.2.0.50", 1, 2, "wg-etcd", "10.3.50.1", "10.3.50.100"),
}
EXISTING = {
    "helsinki-gw", "scraper", "push", "model-generator", "tryon-service", "production-db", "apify", "collage",
    "recognition", "photo-downloader", "ximilar-sync", "ximilar-gw", "llm-reranker", "staging-db", "etcd-3",
    "monitoring",
}  # fmt: skip


def test_every_helsinki_server_of_the_plan(inventory: Inventory) -> None:
    for name, (ip, server_type) in SPEC_HELSINKI.items():
        server = inventory.server(name)
        assert str(server.ip) == ip, name
        assert server.hcloud_type == server_type, name
        assert server.existing == (name in EXISTING), name
    assert inventory.server("production-db").dedicated == "AX41"
    assert inventory.server("helsinki-gw").public_address == IPv4Address("46.62.233.30")


def test_every_local_server_of_the_plan_with_its_tunnel(inventory: Inventory) -> None:
    for name, (ip, vcpu, ram, interface, local_ip, helsinki_ip) in SPEC_LOCAL.items():
        server = inventory.server(name)
        assert (str(server.ip), server.vcpu, server.ram_gb) == (ip, vcpu, ram), name
        assert server.tunnel is not None
        assert (server.tunnel.interface, str(server.tunnel.local_ip), str(server.tunnel.helsinki_ip)) == (
            interface,
            local_ip,
            helsinki_ip,
        ), name
    # Beyond SPEC's table: the second alert path, with a tunnel of its own like every local server.
    assert {s.name for s, _ in inventory.tunnels()} == set(SPEC_LOCAL) | {"local-monitoring"}
    second = inventory.server("local-monitoring").tunnel
    assert second is not None and (second.interface, str(second.local_ip)) == ("wg-mon", "10.3.7.1")


def test_one_task_per_server_and_labels(inventory: Inventory) -> None:
    for server in inventory.servers.values():
        assert server.labels["task"] == server.task
        assert server.labels["site"] == server.site
    assert inventory.server("local-shard-0").labels["shard"] == "0"
    assert inventory.server("shard-replica-0").labels == {
        "site": "helsinki", "task": "shard-replica", "managed-by": "unde-infra", "shard": "0",
    }  # fmt: skip


def test_default_etcd_placement_has_one_vote_per_failure_domain(inventory: Inventory) -> None:
    assert inventory.etcd_placement == "three-sites"
    assert sorted(m.site for m in inventory.etcd) == ["helsinki", "local", "witness"]
    plan = load_topology(placement="plan")
    assert [(m.member, m.host.name) for m in plan.etcd] == [
        ("etcd-1", "local-etcd-1"),
        ("etcd-2", "shard-replica-0"),
        ("etcd-3", "etcd-3"),
    ]
    assert "etcd-witness" not in plan.servers  # only built under three-sites
    assert any("SPEC contradiction 3" in note for note in plan.notes)


@pytest.mark.parametrize("count", [1, 2, 4, 8, 16, 64, 127])
def test_shard_scale_out_never_collides(count: int) -> None:
    inventory = load_topology(shards=count)
    assert [s.index for s in inventory.shards] == list(range(count))
    addresses = [s.ip for s in inventory.servers.values()]
    assert len(addresses) == len(set(addresses))
    tunnels = [t.index for _, t in inventory.tunnels()]
    assert len(tunnels) == len(set(tunnels))
    interfaces = [t.interface for _, t in inventory.tunnels()]
    assert len(interfaces) == len(set(interfaces)) and all(len(i) <= 15 for i in interfaces)
    expected_type = "ccx33" if count >= 8 else "ccx23"
    assert {s.replica.hcloud_type for s in inventory.shards} == {expected_type}
    local = IPv4Network("10.2.0.0/24")
    assert all(s.primary.ip in local and s.primary.vcpu == 16 and s.primary.ram_gb == 32 for s in inventory.shards)
    assert all(s.replica.ip in IPv4Network("10.1.2.0/24") for s in inventory.shards)


def test_adding_shards_never_moves_an_existing_one() -> None:
    small, large = load_topology(shards=2), load_topology(shards=16)
    for before, after in zip(small.shards, large.shards, strict=False):
        assert (before.primary.ip, before.replica.ip, before.primary.tunnel) == (
            after.primary.ip,
            after.replica.ip,
            after.primary.tunnel,
        )
    assert str(large.server("local-shard-1").ip) == "10.2.0.129"
    assert str(large.server("shard-replica-15").ip) == "10.1.2.25"
    assert str(large.server("local-shard-15").tunnel.local_ip) == "10.3.143.1"  # type: ignore[union-attr]


def test_stack_split(inventory: Inventory) -> None:
    local = {s.name for s in inventory.stack_servers("local")}
    # Beyond SPEC's tables: the second alert path (scenario 3 must not lose alerting).
    assert local == set(SPEC_LOCAL) | {"shard-replica-0", "local-monitoring"}
    helsinki = {s.name for s in inventory.stack_servers("helsinki")}
    # Beyond SPEC's tables: the etcd witness (contradiction 3) and scenario 2's warm standby.
    assert helsinki == (set(SPEC_HELSINKI) - {"shard-replica-0"}) | {"etcd-witness", "standby-api", "standby-orchestrator"}
    assert stack_of(inventory.server("shard-replica-0")) == "local"


def test_cheapest_local_type_respects_location_and_limit(inventory: Inventory) -> None:
    types, limit = inventory.server_types, inventory.local_limit
    # The CX line is not sold in Singapore; the shard's 16 vCPU / 32 GB fits CPX62 exactly and
    # CCX43 (64 GB) is over the local limit.
    assert cheapest_type(16, 32, "sin", types, limit) == "cpx62"
    assert cheapest_type(2, 4, "sin", types, limit) == "cpx22"
    assert cheapest_type(2, 4, "hel1", types, limit) == "cx23"
    assert cheapest_type(1, 2, "sin", types, limit) == "cpx12"
    assert cheapest_type(17, 32, "sin", types, limit) is None


def test_stateless_instances_get_stable_addresses_and_tunnels() -> None:
    data = _topology()
    data["servers"]["local-app"]["instances"] = 2
    data["servers"]["local-orchestrator"]["instances"] = 3
    inventory = _load(data)
    app2 = inventory.server("local-app-2")
    assert (str(app2.ip), app2.task, app2.instance) == ("10.2.0.65", "api", 2)
    assert app2.tunnel is not None and (app2.tunnel.interface, app2.tunnel.index) == ("wg-app-2", 65)
    orch3 = inventory.server("local-orchestrator-3")
    assert str(orch3.ip) == "10.2.0.74" and orch3.tunnel is not None and orch3.tunnel.interface == "wg-orch-3"


# ---------------------------------------------------------------------------------------------
# Bad input: every problem at once, each as `path: message` naming the bad value.


def _topology() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(DEFAULT_TOPOLOGY.read_text()))


def _load(data: dict[str, Any], tmp: Path | None = None) -> Inventory:
    import tempfile

    folder = tmp or Path(tempfile.mkdtemp())
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_topology(path)


def _problems(mutate: Callable[[dict[str, Any]], None], tmp_path: Path) -> list[str]:
    data = _topology()
    mutate(data)
    with pytest.raises(TopologyError) as caught:
        _load(data, tmp_path)
    return [str(p) for p in caught.value.problems]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (_set("servers.local-voice.ip", "10.2.0.11"), "servers.local-voice.ip: 10.2.0.11 is already used by local-mood"),
        (_set("servers.local-mood.ip", "10.9.0.11"), "servers.local-mood.ip: 10.9.0.11 is outside site local's range 10.2.0.0/24"),
        (_set("servers.local-mood.ip", "10.2.0.1"), "servers.local-mood.ip: 10.2.0.1 is reserved"),
        (_set("servers.local-mood.ip", "10.2.0.255"), "servers.local-mood.ip: 10.2.0.255 is reserved (broadcast"),
        (_set("servers.scraper.ip", "10.1.0.1"), "servers.scraper.ip: 10.1.0.1 is reserved (first host of 10.1.0.0/24"),
        (_set("servers.scraper.type", "cx99"), "servers.scraper.type: unknown server type 'cx99'"),
        (_set("servers.local-mood.size", {"vcpu": 24, "ram_gb": 32}), "servers.local-mood.size: over the local limit of 16 vCPU / 32 GB per server (24 vCPU > 16)"),
        (_set("servers.local-mood.size", {"vcpu": 16, "ram_gb": 64}), "servers.local-mood.size: over the local limit of 16 vCPU / 32 GB per server (64 GB RAM > 32 GB)"),
        (_set("shards.local.size", {"vcpu": 16, "ram_gb": 48}), "shards.local.size: over the local limit"),
        (_set("servers.local-mood.task", None), "servers.local-mood.task: has no task; every server has exactly one"),
        (_set("servers.local-mood.task", ["mood", "persona"]), "servers.local-mood.task: has 2 tasks (mood, persona); one server, one task"),
        (_set("servers.local-mood.task", "dance"), "servers.local-mood.task: unknown task 'dance'"),
        (_set("shards.count", 0), "shards.count: Input should be greater than or equal to 1 (got 0)"),
        (_set("shards.count", 200), "shards.count: 200 shards do not fit the address plan (at most 127)"),
        (_set("servers.local-mood.tunnel", {"interface": "wg-mood", "index": 2}), "servers.local-redis.tunnel.index: tunnel index 2 is already used by local-mood"),
        (_set("servers.local-mood.ip", "not-an-ip"), "servers.local-mood.ip: 'not-an-ip' is not an IPv4 address"),
        (_set("servers.local-mood.colour", "red"), "servers.local-mood.colour: unknown key"),
        (_set("servers.staging-db.ip", "10.1.1.20"), "servers.staging-db.ip: 10.1.1.20 is in vswitch subnet vswitch; a cloud server needs a cloud subnet"),
        (_set("servers.local-mood.tunnel", None), "servers.local-mood.tunnel: every local server has its own WireGuard tunnel"),
        (_set("etcd.placement", "everywhere"), "etcd.placement: unknown placement 'everywhere'"),
        (_set("servers.posthog.type", "cpx62"), None),  # a valid change: no problem expected
    ],
)
def test_bad_input_is_reported_with_path_and_value(
    mutation: Callable[[dict[str, Any]], None], expected: str | None, tmp_path: Path
) -> None:
    if expected is None:
        data = _topology()
        mutation(data)
        _load(data, tmp_path)  # accepted
        return
    problems = _problems(mutation, tmp_path)
    assert any(p.startswith(expected) for p in problems), problems


def test_local_shard_over_the_limit_is_reported_once(tmp_path: Path) -> None:
    problems = _problems(_set("shards.local.size", {"vcpu": 16, "ram_gb": 48}), tmp_path)
    assert problems == ["shards.local.size: over the local limit of 16 vCPU / 32 GB per server (48 GB RAM > 32 GB)"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    def many(data: dict[str, Any]) -> None:
        data["servers"]["local-voice"]["ip"] = "10.2.0.11"  # duplicate of local-mood
        data["servers"]["scraper"]["type"] = "cx99"
        data["servers"]["local-persona"]["task"] = ["persona", "mood"]
        data["servers"]["local-context"]["ip"] = "garbage"
        data["shards"]["count"] = 0

    problems = _problems(many, tmp_path)
    assert len(problems) == 5, problems
    assert {p.split(":")[0] for p in problems} == {
        "servers.local-voice.ip",
        "servers.scraper.type",
        "servers.local-persona.task",
        "servers.local-context.ip",
        "shards.count",
    }


def test_duplicate_server_name_in_yaml_is_rejected(tmp_path: Path) -> None:
    text = DEFAULT_TOPOLOGY.read_text()
    duplicated = text.replace(
        "  local-redis:",
        "  local-app:          {site: local, task: api, size: {vcpu: 4, ram_gb: 8}, ip: 10.2.0.3, tunnel: {interface: wg-app2, index: 7}}\n  local-redis:",
        1,
    )
    path = tmp_path / "topology.yaml"
    path.write_text(duplicated)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert [str(p) for p in caught.value.problems] == [
        f"line {_line_of(duplicated, '  local-app:', 2)}, column 3: duplicate key 'local-app' (first defined on line {_line_of(duplicated, '  local-app:', 1)})"
    ]


def _line_of(text: str, prefix: str, occurrence: int) -> int:
    seen = 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(prefix):
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(prefix)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("servers:\n  a: [unclosed\n")
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    (problem,) = caught.value.problems
    assert problem.path.startswith("line ") and "malformed YAML" in problem.message


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology(tmp_path / "nope.yaml")
    assert "cannot read the file" in str(caught.value)


def test_resize_is_only_for_an_existing_server(tmp_path: Path) -> None:
    problems = _problems(_set("servers.local-app.resize", True), tmp_path)
    assert problems == ["servers.local-app.resize: only an existing server needs resize: a new one is created with its type"]


def test_created_servers_run_debian_13_and_adopted_ones_keep_theirs(inventory: Inventory, tmp_path: Path) -> None:
    """docs/architecture.md, "Operating system and where packages come from": the program's image for what it
    creates, the topology's word (default Debian 12) for what it adopts."""
    assert {s.os for s in inventory.servers.values() if not s.existing} == {"debian-13"}
    assert {s.os for s in inventory.servers.values() if s.existing} == {"debian-12"}
    assert {s.replica.os for s in inventory.shards} == {s.primary.os for s in inventory.shards} == {"debian-13"}
    data = _topology()
    _set("servers.monitoring.os", "debian-13")(data)
    upgraded = _load(data, tmp_path)
    assert upgraded.servers["monitoring"].os == "debian-13"


def test_a_created_server_cannot_ask_for_debian_12_and_no_unknown_system(tmp_path: Path) -> None:
    problems = _problems(_set("servers.local-app.os", "debian-12"), tmp_path)
    assert problems == ["servers.local-app.os: a server the program creates runs debian-13 (its image); "
                        "only an existing server may run another system"]
    problems = _problems(_set("servers.monitoring.os", "debian-11"), tmp_path)
    assert "servers.monitoring.os: Input should be 'debian-12' or 'debian-13' (got 'debian-11')" in problems
