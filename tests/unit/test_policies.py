"""The policy pack: for every rule a passing and a violating case, most of them made by editing
the topology or a stack's config as the team would; the pack loaded through pulumi_policy's own
analyzer with the resources of an offline run; and the preview's policy.json and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import struct_pb2
from pulumi.runtime import proto

from policies.rules import RULES, evaluate
from policies.views import context_for, from_record
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology

ROOT = Path(__file__).resolve().parents[2]
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
    assert violations(result)["public-ingress"] == ["HTTPS open on scraper, which is not an entry point"]


def test_ssh_from_admin_cidrs(run_stack) -> None:
    result = run_stack("helsinki", adminCidrs=["0.0.0.0/0"])
    assert violations(result)["ssh-from-admin-cidrs"] == [
        "unde-helsinki-base: SSH open to 0.0.0.0/0, wider than /16: that is the internet"
    ]
    assert "ssh-from-admin-cidrs" not in violations(run_stack("helsinki", adminCidrs=["198.51.100.0/24"]))


def test_stateful_servers_protected(run_stack, tmp_path: Path) -> None:
    result = run_stack("local", topology=topology_with(tmp_path, lambda d: d["tasks"]["redis"].update(stateful=False)))
    assert violations(result)["stateful-protected"] == [
        "local-redis: stateful or adopted server without protect",
        "local-redis: stateful or adopted server without hcloud delete and rebuild protection",
    ]


def test_no_secret_in_user_data(run_stack) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----"
    result = run_stack("helsinki", sshKeys=[key])  # somebody pasted the private half
    messages = violations(result)["no-secret-in-user-data"]
    assert len(messages) == 17 and all("BEGIN OPENSSH PRIVATE KEY" in m for m in messages)


def _evaluate_without(result, predicate) -> dict[str, list[str]]:
    views = [from_record(r) for r in result.run.records if not predicate(r)]
    ctx = context_for(result.run.stack, inventory=result.inventory)
    found: dict[str, list[str]] = {}
    for v in evaluate(views, ctx):
        found.setdefault(v.policy, []).append(v.message)
    return found


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
    result = subprocess.run(
        [sys.executable, "-m", "unde_infra", "preview", "--stack", "helsinki", "--topology", str(topology), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
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
    result = subprocess.run(
        [sys.executable, "-m", "unde_infra", "preview", "--stack", "local", "--topology", str(topology), "--out", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[advisory] etcd-quorum-survives-site-loss" in result.stdout


