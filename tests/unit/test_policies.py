"""The policy pack: for every rule a passing and a violating case, most of them made by editing
the topology or a stack's config as the team would; the pack loaded through pulumi_policy's own
analyzer with the resources of an offline run; and the preview's policy.json and exit code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import struct_pb2
from pulumi.runtime import proto

from policies.rules import RULES, evaluate
from policies.views import context_for, from_record
from tests.conftest import unde
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology

RULE_NAMES = {rule.name for rule in RULES}


def topology_with(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    edit(data)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def violations(result) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for v in result.violations:
        found.setdefault(v.policy, []).append(v.message)
    return found


@pytest.fixture
def default_runs(default_preview_runs):
    return default_preview_runs


def test_the_default_topology_passes_every_rule(default_runs) -> None:
    for result in default_runs.values():
        assert result.violations == []


def test_local_server_size(run_stack, tmp_path: Path) -> None:
    def bigger(data: dict[str, Any]) -> None:
        data["sites"]["local"]["max_size"] = {"vcpu": 32, "ram_gb": 64}  # the topology loosens its own limit
        data["servers"]["local-orchestrator"]["size"] = {"vcpu": 16, "ram_gb": 48}

    result = run_stack("local", topology=topology_with(tmp_path, bigger))
    messages = violations(result)["local-server-size"]
    assert messages == ["local-orchestrator: type ccx43 (16 vCPU / 64 GB) is over the local limit of 16 vCPU / 32 GB per server (64 GB RAM > 32 GB)"]
    hosts = {s.name: {"address": f"192.0.2.{i}"} for i, s in enumerate(load_topology().site_servers("local"), 10)}
    existing = run_stack("local", topology=topology_with(tmp_path, bigger), provider="existing", hosts=hosts)
    assert violations(existing)["local-server-size"] == [
        "local-orchestrator: declared 16 vCPU / 48 GB is over the local limit of 16 vCPU / 32 GB per server (48 GB RAM > 32 GB)"
    ]


def test_one_server_one_task(run_stack, tmp_path: Path) -> None:
    plan = run_stack("local", topology=topology_with(tmp_path, lambda d: d["etcd"].update(placement="plan")))
    assert "one-server-one-task" not in violations(plan)  # etcd-2 on shard-replica-0: a listed exception

    def etcd_on_redis(data: dict[str, Any]) -> None:
        data["etcd"]["placements"]["custom"] = [
            {"member": "etcd-1", "host": "local-etcd-1"},
            {"member": "etcd-2", "host": "local-redis"},
            {"member": "etcd-3", "host": "etcd-3"},
        ]
        data["etcd"]["placement"] = "custom"

    result = run_stack("local", topology=topology_with(tmp_path, etcd_on_redis))
    assert violations(result)["one-server-one-task"] == [
        "local-redis: runs etcd beside its own task redis; list it under exceptions in config/policy.yaml with a reason, or give it a server"
    ]


def test_no_public_ipv4_on_data_servers(run_stack, tmp_path: Path) -> None:
    result = run_stack("helsinki", topology=topology_with(tmp_path, lambda d: d["servers"]["staging-db"].update(public_ipv4=True)))
    assert violations(result)["no-public-ipv4-on-data-servers"] == ["staging-db: data server (staging-db) with a public IPv4 address"]


def test_public_ingress(run_stack, tmp_path: Path) -> None:
    result = run_stack("helsinki", topology=topology_with(tmp_path, lambda d: d["tasks"]["scraper"].update(entry_point=True)))
    assert violations(result)["public-ingress"] == [
        "HTTPS open on scraper, which is not an entry point",
        "HTTP (ACME) open on scraper, which is not an entry point",
    ]


def test_ssh_from_admin_cidrs(run_stack) -> None:
    # The stack config refuses 0.0.0.0/0 and ::/0 outright (tests/unit/test_hostile_input.py);
    # a network wider than policy.yaml's ssh_max_prefix reaches the rule.
    result = run_stack("helsinki", adminCidrs=["10.0.0.0/8", "2001:db0::/28"])
    assert violations(result)["ssh-from-admin-cidrs"] == [
        "unde-helsinki-base: SSH open to 10.0.0.0/8, wider than /16: that is the internet",
        "unde-helsinki-base: SSH open to 2001:db0::/28, wider than /32: that is the internet",
    ]
    assert "ssh-from-admin-cidrs" not in violations(run_stack("helsinki", adminCidrs=["198.51.100.0/24", "2001:db8::/48"]))


def _evaluate_with(result, change, import_ids=None) -> dict[str, list[str]]:
    """The rules over the run's resources, each passed through `change` (None drops it): what a
    program that registered them that way would be told. Used where the topology and the stack
    config can no longer express the fault, because the model refuses it first."""
    views = [v for v in (change(from_record(r)) for r in result.run.records) if v is not None]
    ctx = context_for(result.run.stack, inventory=result.inventory, admin_cidrs=("198.51.100.0/24",),
                      import_ids=import_ids or {})
    found: dict[str, list[str]] = {}
    for v in evaluate(views, ctx):
        found.setdefault(v.policy, []).append(v.message)
    return found


def _evaluate_without(result, predicate) -> dict[str, list[str]]:
    return _evaluate_with(result, lambda view: None if predicate(view) else view)


def test_stateful_servers_protected(default_runs) -> None:
    # The topology cannot stop marking redis stateful any more (the model refuses it), so the
    # fault is made in the registered resources themselves.
    def unprotected(view):
        if view.name != "local-redis" or view.type != "hcloud:index/server:Server":
            return view
        return dataclasses.replace(view, protect=False, inputs={**view.inputs, "deleteProtection": False})

    assert _evaluate_with(default_runs["local"], unprotected)["stateful-protected"] == [
        "local-redis: stateful or adopted server without protect",
        "local-redis: stateful or adopted server without hcloud delete and rebuild protection",
    ]


def test_no_secret_in_user_data(default_runs) -> None:
    # A private key in sshKeys is refused by the stack config's check now; a user data that
    # carries one anyway (a renderer's bug) is what the rule still catches.
    def leaky(view):
        if view.type != "hcloud:index/server:Server" or view.name != "scraper":
            return view
        return dataclasses.replace(view, inputs={**view.inputs, "userData": view.inputs["userData"] + "# PASSWORD=x\n"})

    assert _evaluate_with(default_runs["helsinki"], leaky)["no-secret-in-user-data"] == [
        "scraper: user data contains 'PASSWORD='"
    ]


def test_adopted_servers_kept(run_stack, tmp_path: Path) -> None:
    """Removing an adopted server from the topology is a mandatory violation until it is retired."""
    inventory = load_topology()
    ids = {s.name: str(4000 + i) for i, s in enumerate(inventory.stack_servers("helsinki")) if s.existing and not s.dedicated}

    def without_scraper(data: dict[str, Any]) -> None:
        del data["servers"]["scraper"]

    removed = run_stack("helsinki", topology=topology_with(tmp_path, without_scraper), importIds=ids)
    (violation,) = [v for v in removed.violations if v.policy == "adopted-servers-kept"]
    assert violation.enforcement == "mandatory"
    assert violation.message.startswith(
        f"scraper was adopted (importIds.scraper: {ids['scraper']}) and is no longer a server of the helsinki stack"
    )
    assert "retired: {scraper: <reason>}" in violation.message

    def retired(data: dict[str, Any]) -> None:
        without_scraper(data)
        data["retired"] = {"scraper": "the scraper moved to Apify (MR !123)"}

    kept = run_stack("helsinki", topology=topology_with(tmp_path, retired), importIds=ids)
    assert "adopted-servers-kept" not in violations(kept)

    def no_longer_existing(data: dict[str, Any]) -> None:
        data["servers"]["scraper"]["existing"] = False
        del data["servers"]["scraper"]["public_ipv4"]

    flipped = run_stack("helsinki", topology=topology_with(tmp_path, no_longer_existing), importIds=ids)
    assert violations(flipped)["adopted-servers-kept"] == [
        f"scraper was adopted (importIds.scraper: {ids['scraper']}) but the topology no longer says existing: true; "
        "it would lose the protection of an adopted server"
    ]


def test_etcd_quorum_size(default_runs) -> None:
    result = default_runs["local"]
    assert "etcd-quorum-size" not in _evaluate_with(result, lambda view: view)
    ctx = context_for("local", inventory=result.inventory, admin_cidrs=("198.51.100.0/24",), import_ids={})
    stricter = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, etcd_min_members=5))
    found = [v for v in evaluate([from_record(r) for r in result.run.records], stricter) if v.policy == "etcd-quorum-size"]
    assert [v.message for v in found] == ["etcd placement three-sites has 3 members; policy.yaml asks for 5"]


def test_shard_has_replica(default_runs) -> None:
    local = default_runs["local"]
    found = _evaluate_without(local, lambda r: r.name == "shard-replica-0" and r.type == "hcloud:index/server:Server")
    assert found["shard-has-replica"] == ["shard 0: no replica in the stack"]


def test_etcd_quorum_is_advisory(run_stack, tmp_path: Path) -> None:
    result = run_stack("local", topology=topology_with(tmp_path, lambda d: d["etcd"].update(placement="plan")))
    (violation,) = [v for v in result.violations if v.policy == "etcd-quorum-survives-site-loss"]
    assert violation.enforcement == "advisory"
    assert violation.message.startswith("etcd placement plan: losing helsinki leaves 1 of 3 members (etcd-1)")


def test_every_server_is_a_monitoring_target(default_runs) -> None:
    helsinki = default_runs["helsinki"]
    found = _evaluate_without(helsinki, lambda r: r.name == "monitoring:/etc/prometheus/file_sd/node.json")
    # Without node.json, servers with no other exporter are no target at all; database servers
    # are still scraped through postgres_exporter.
    assert "scraper (10.1.0.3) is not a monitoring target" in found["monitoring-targets"]
    assert "local-mood (10.2.0.11) is not a monitoring target" in found["monitoring-targets"]
    assert not any(m.startswith("staging-db ") for m in found["monitoring-targets"])


def test_every_local_server_has_a_tunnel(default_runs) -> None:
    local = default_runs["local"]
    found = _evaluate_without(local, lambda r: r.type == "unde:network:WireGuardPeer" and r.name.startswith("local-mood"))
    assert found["local-server-tunnel"] == ["local-mood: local server without its own WireGuard tunnel"]


def test_no_surprise_blocking(run_stack, tmp_path: Path) -> None:
    """Passing and violating cases of the rule; tests/unit/test_inbound.py has the rest."""
    def serves(entry: dict[str, Any]):
        return lambda data: data["servers"]["push"].update(inbound=[entry])

    kept = run_stack("helsinki", topology=topology_with(tmp_path, serves({"port": 6379, "reason": "redis for a partner",
                                                                         "sources": ["203.0.113.7/32"]})))
    assert "no-surprise-blocking" not in violations(kept)
    blocked = run_stack("helsinki", topology=topology_with(tmp_path, serves({"port": "20-25", "reason": "ssh and smtp"})))
    assert violations(blocked)["no-surprise-blocking"] == [
        "push: serves tcp 20-25 from 0.0.0.0/0, ::/0 today (ssh and smtp) and the new firewalls block it; "
        "acknowledge with close: true at servers.push.inbound.0, or keep it (SSH is kept only from the admin CIDRs)"
    ]


def test_every_rule_has_a_case_here() -> None:
    text = Path(__file__).read_text()
    assert all(f'"{name}"' in text for name in RULE_NAMES)


# ---------------------------------------------------------------------------------------------


def _analyzer_request(result) -> Any:
    resources = []
    for record in result.run.records:
        properties = struct_pb2.Struct()
        properties.update(json.loads(json.dumps(record.inputs, default=str)))
        resources.append(
            proto.AnalyzerResource(
                type=record.type,
                properties=properties,
                urn=record.urn,
                name=record.name,
                options=proto.AnalyzerResourceOptions(protect=record.protect, ignoreChanges=record.ignore_changes),
                parent=record.parent or "",
                dependencies=record.dependencies,
            )
        )
    return proto.AnalyzeStackRequest(resources=resources)


def test_the_pack_loads_and_applies_through_pulumi_policys_analyzer(run_stack, tmp_path: Path) -> None:
    from pulumi_policy.policy import _PolicyAnalyzerServicer

    from policies.__main__ import pack_arguments

    args = pack_arguments()
    servicer = _PolicyAnalyzerServicer(args["name"], "0.1.0", args["policies"], args["enforcement_level"], args["initial_config"])
    info = servicer.GetAnalyzerInfo(None, None)
    assert {p.name for p in info.policies} == RULE_NAMES

    clean = servicer.AnalyzeStack(_analyzer_request(run_stack("helsinki")), None)
    assert list(clean.diagnostics) == []

    bad = run_stack("helsinki", topology=topology_with(tmp_path, lambda d: d["servers"]["staging-db"].update(public_ipv4=True)))
    response = servicer.AnalyzeStack(_analyzer_request(bad), None)
    (diagnostic,) = response.diagnostics
    assert diagnostic.policyName == "no-public-ipv4-on-data-servers"
    assert diagnostic.enforcementLevel == proto.MANDATORY
    assert diagnostic.urn.endswith("hcloud:index/server:Server::staging-db")
    assert "staging-db: data server (staging-db) with a public IPv4 address" in diagnostic.message


def test_preview_writes_policy_json_and_exits_1(tmp_path: Path) -> None:
    topology = topology_with(tmp_path, lambda d: d["servers"]["staging-db"].update(public_ipv4=True))
    out = tmp_path / "out"
    result = unde("preview", "--stack", "helsinki", "--topology", str(topology), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((out / "helsinki" / "policy.json").read_text())
    assert report == [
        {
            "policy": "no-public-ipv4-on-data-servers",
            "enforcement": "mandatory",
            "urn": "urn:pulumi:helsinki::unde-infra::unde:helsinki:BatchHost$hcloud:index/server:Server::staging-db",
            "message": "staging-db: data server (staging-db) with a public IPv4 address",
        }
    ]
    assert "[mandatory] no-public-ipv4-on-data-servers: staging-db" in result.stdout


def test_an_advisory_violation_alone_exits_0(tmp_path: Path) -> None:
    topology = topology_with(tmp_path, lambda d: d["etcd"].update(placement="plan"))
    result = unde("preview", "--stack", "local", "--topology", str(topology), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[advisory] etcd-quorum-survives-site-loss" in result.stdout


