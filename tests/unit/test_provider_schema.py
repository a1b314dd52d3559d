"""The providers' published schemas as data: the preview checks every registered resource against
them, and knows which changed inputs replace a resource."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import components.hosts
from unde_infra import cli
from unde_infra.model import DEFAULT_TOPOLOGY
from unde_infra.naming import REPLACE_FORCING_FIELDS, SERVER_TYPE
from unde_infra.offline import Record
from unde_infra.provider_schema import (
    PROVIDERS,
    SCHEMA_DIR,
    check_records,
    load_schema,
    planned_differences,
    replace_fact_sources,
    replacement_causes,
    replacing_properties,
    resource_schema,
)
from unde_infra.provider_schema_trim import sdk_args_class, sdk_inputs, trim

URN = "urn:pulumi:helsinki::unde-infra::hcloud:index/server:Server::broken"


def record(resource_type: str, inputs: dict, name: str = "broken", custom: bool = True) -> Record:
    urn = f"urn:pulumi:helsinki::unde-infra::{resource_type}::{name}"
    return Record(urn=urn, type=resource_type, name=name, custom=custom, parent=None, inputs=inputs,
                  secret_paths=set(), dependencies=[], protect=False, ignore_changes=[], retain_on_delete=False,
                  import_id=None, delete_before_replace=False, replace_on_changes=[], aliases=[], provider=None)


def scaled_topology(tmp_path: Path) -> Path:
    """Two local-app instances (a load balancer) and the RouterOS gateway (a CopyToRemote): every
    resource type the program can register."""
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["servers"]["local-app"]["instances"] = 2
    data["network"]["wireguard"]["mode"] = "routeros"
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# 16: the session's 16-shard runs, on one worker
@pytest.mark.parametrize("shards", [1, pytest.param(16, marks=pytest.mark.xdist_group("sixteen-shards"))])
@pytest.mark.parametrize("stack", ["helsinki", "local"])
def test_both_stacks_conform_to_the_providers_schemas(run_stack, stack, shards) -> None:
    result = run_stack(stack, shards=shards)  # run_stacks raises ProviderSchemaError on a violation
    custom = [r for r in result.run.records if r.custom]
    assert check_records(result.run.records) == []
    # Every resource was checked against a schema, none waved through for want of one.
    assert all(resource_schema(r.type) is not None for r in custom)
    assert {r.type.split(":")[0] for r in custom} <= {*PROVIDERS, "pulumi"}
    if stack == "local":  # each shard is a pair of servers (the local primary, the Helsinki replica)
        assert sum(r.type == SERVER_TYPE for r in custom) >= 2 * shards


def test_the_load_balancer_and_routeros_paths_conform_too(run_stack, tmp_path) -> None:
    result = run_stack("local", topology=scaled_topology(tmp_path), routerosPrivateInterface="ether5")
    types = {r.type for r in result.run.records}
    assert {"hcloud:index/loadBalancer:LoadBalancer", "hcloud:index/loadBalancerService:LoadBalancerService",
            "hcloud:index/loadBalancerTarget:LoadBalancerTarget", "hcloud:index/loadBalancerNetwork:LoadBalancerNetwork",
            "command:remote:CopyToRemote"} <= types
    assert check_records(result.run.records) == []


def test_each_kind_of_violation_names_the_urn_and_the_property() -> None:
    bad = [
        record(SERVER_TYPE, {"serverType": "cx23", "imagee": "debian-12"}, "unknown"),
        record("hcloud:index/network:Network", {"name": "unde"}, "missing"),
        record(SERVER_TYPE, {"serverType": "cx23", "networks": [{"networkId": "one"}]}, "wrong-type"),
        record("command:remote:Command", {"connection": {"host": "192.0.2.1"}, "logging": "everything"}, "bad-enum"),
        record("command:remote:Command", {"create": "true"}, "nested-missing"),
    ]
    found = {(v.urn.rsplit("::", 1)[-1], v.property): v.message for v in check_records(bad)}
    assert found.keys() == {("unknown", "imagee"), ("missing", "ipRange"), ("wrong-type", "networks[0].networkId"),
                            ("bad-enum", "logging"), ("nested-missing", "connection")}
    assert found["unknown", "imagee"].startswith("unknown input")
    assert found["missing", "ipRange"] == "missing required input"
    assert found["wrong-type", "networks[0].networkId"] == "expected integer, got str 'one'"
    assert "'everything' is not one of 'stdout', 'stderr', 'stdoutAndStderr', 'none'" in found["bad-enum", "logging"]
    assert str(check_records(bad[:1])[0]).startswith(
        "urn:pulumi:helsinki::unde-infra::hcloud:index/server:Server::unknown: imagee: unknown input")


def test_values_the_sdk_sends_are_accepted() -> None:
    from pulumi.output import Unknown
    from pulumi.runtime import rpc

    good = [
        # whole numbers travel as doubles; unknowns are computed later; secrets wrap any value
        record(SERVER_TYPE, {"serverType": "cx23", "networks": [{"networkId": 89050712.0, "ip": Unknown()}],
                             "sshKeys": rpc.wrap_rpc_secret(["1"])}),
        # a provider resource's non-string inputs are JSON-encoded strings
        record("pulumi:providers:minio", {"minioSsl": "true", "minioServer": "hel1.your-objectstorage.com",
                                          "version": "0.17.1"}),
        record("pulumi:pulumi:StackReference", {"name": "organization/unde-infra/helsinki"}),
        record("unde:network:Firewalls", {"anything": 1}, custom=False),
    ]
    assert check_records(good) == []
    wrong = check_records([record("pulumi:providers:minio", {"minioSsl": "yes"}),
                           record(SERVER_TYPE, {"serverType": rpc.wrap_rpc_secret(7)}, "secret")])
    assert [(v.property, v.message) for v in wrong] == [  # in URN order
        ("serverType", "expected string, got int [secret]"),  # a secret value is never printed
        ("minioSsl", "expected boolean (JSON-encoded), got 'yes'"),
    ]


def test_an_unknown_resource_type_is_a_violation() -> None:
    found = check_records([record("hcloud:index/volumes:Volumes", {}), record("aws:s3/bucket:Bucket", {})])
    assert [(v.property, v.message) for v in found] == [
        ("(type)", "aws:s3/bucket:Bucket: no schema is kept for provider 'aws'"),
        ("(type)", "hcloud:index/volumes:Volumes: not a resource of provider 'hcloud'"),
    ]


def test_the_preview_exits_2_naming_urn_and_property_and_writes_nothing(monkeypatch, tmp_path, capsys,
                                                                        fresh_event_loop) -> None:
    # The real program and the real CLI, with one input the provider would refuse: an image as a
    # number (IMAGE is what created servers get; adopted ones state their own system).
    monkeypatch.setattr(components.hosts, "IMAGE", 12)
    out = tmp_path / "preview"
    code = cli.main(["preview", "--stack", "helsinki", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists()
    lines = err.splitlines()
    assert re.match(r"provider schemas: \d+ problems", lines[0])
    assert ("  urn:pulumi:helsinki::unde-infra::unde:helsinki:BatchHost$hcloud:index/server:Server::standby-orchestrator: "
            "image: expected string, got float 12.0") in lines  # numbers travel as doubles
    assert not any("Server::scraper: image" in line for line in lines)  # adopted: its own system


def test_replace_facts_from_the_schema_and_the_provider_source() -> None:
    assert replacing_properties("hcloud:index/network:Network") == {"ipRange"}
    server = replacing_properties(SERVER_TYPE)
    assert {"image", "location", "userData", "sshKeys"} <= server
    assert not {"serverType", "labels", "networks", "publicNets", "firewallIds"} & server  # updated in place
    # Where the schema is silent (plugin-framework resources), the Terraform provider's source says so.
    assert replacing_properties("hcloud:index/sshKey:SshKey") == {"publicKey"}
    assert "publicKey" not in {n for n, p in resource_schema("hcloud:index/sshKey:SshKey")["inputProperties"].items()
                               if p.get("willReplaceOnChanges")}
    assert {"length", "keepers"} <= replacing_properties("random:index/randomBytes:RandomBytes")
    assert replacing_properties("command:remote:Command") == {"triggers"}
    assert replacing_properties("hcloud:index/firewall:Firewall") == frozenset()
    # The pinned provider no longer forces a new server for datacenter (removed in v1.67.0).
    assert "datacenter" not in server
    sources = replace_fact_sources(SERVER_TYPE)
    assert "terraform-provider-hcloud" in sources["datacenter"]
    # components/hosts.py and the policies read this same data.
    assert REPLACE_FORCING_FIELDS == tuple(sorted(server))


def test_replacement_causes() -> None:
    old = {"image": "debian-12", "serverType": "cx23", "location": "hel1", "userData": "a", "labels": {"a": "1"}}
    new = {"image": "debian-13", "serverType": "cx33", "location": "hel1", "userData": "b", "labels": {"a": "2"},
           "sshKeys": ["1"]}
    assert replacement_causes(SERVER_TYPE, old, new) == ["image", "sshKeys", "userData"]
    assert replacement_causes(SERVER_TYPE, old, new, ["userData", "sshKeys"]) == ["image"]
    assert replacement_causes(SERVER_TYPE, old, dict(old)) == []
    assert replacement_causes("hcloud:index/network:Network", {"ipRange": "10.1.0.0/16"},
                              {"ipRange": "10.0.0.0/14"}) == ["ipRange"]
    assert replacement_causes("hcloud:index/network:Network", {"ipRange": "10.0.0.0/14"},
                              {"ipRange": "10.0.0.0/14", "deleteProtection": True}) == []


def test_a_set_differs_by_its_members_not_their_order() -> None:
    attachment = "hcloud:index/firewallAttachment:FirewallAttachment"
    assert planned_differences(attachment, {"firewallId": 7, "serverIds": [1, 2, 3]},
                               {"firewallId": 7, "serverIds": [3, 1, 2]}) == {}
    assert planned_differences(attachment, {"firewallId": 7, "serverIds": [1, 2]},
                               {"firewallId": 7, "serverIds": [2, 3]}) == {"serverIds": ([1, 2], [2, 3])}


def test_every_fact_names_its_source() -> None:
    facts = yaml.safe_load((SCHEMA_DIR / "replace-facts.yaml").read_text())
    for resource_type, properties in facts.items():
        schema = resource_schema(resource_type)
        assert schema is not None, resource_type
        for name, fact in properties.items():
            assert name in schema["inputProperties"], (resource_type, name)
            assert isinstance(fact["replaces"], bool)
            assert re.match(r"https://github\.com/[^/]+/[^/]+/(blob|commit)/[0-9a-f]{40}", fact["source"]), fact


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_schemas_agree_with_the_pinned_sdks(provider) -> None:
    """The SDK is generated from the pinned version's schema: every input name and required input
    of every kept resource and type must match it (differences are recorded in the data)."""
    import importlib.metadata

    data = json.loads((SCHEMA_DIR / f"{provider}.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", data["source"]["commit"])
    assert data["source"]["url"].startswith(f"https://github.com/pulumi/pulumi-{provider}/blob/")
    assert data["pinnedSdk"]["version"] == importlib.metadata.version(f"pulumi-{provider}")
    schema = load_schema(provider)
    checked = 0
    for token, spec in schema["resources"].items():
        cls = sdk_args_class(provider, token, is_type=False)
        assert cls is not None, token
        names, required = sdk_inputs(cls)
        assert set(names) == set(spec["inputProperties"]), token
        assert required == set(spec.get("requiredInputs") or []), token
        checked += 1
    for token, spec in schema["types"].items():
        if spec.get("type") != "object":
            continue
        cls = sdk_args_class(provider, token, is_type=True)
        assert cls is not None, token
        names, required = sdk_inputs(cls)
        assert set(names) == set(spec["properties"]), token
        assert required == set(spec.get("required") or []), token
        checked += 1
    assert checked >= len(schema["resources"])


def test_trimming_keeps_the_resources_and_every_type_they_reach() -> None:
    full = {
        "name": "demo",
        "provider": {"inputProperties": {"token": {"type": "string", "description": "long text"}}},
        "resources": {
            "demo:index/a:A": {"description": "x", "inputProperties": {"b": {"$ref": "#/types/demo:index/B:B"}},
                               "requiredInputs": ["b"], "properties": {"out": {"type": "string"}}},
            "demo:index/unused:Unused": {"inputProperties": {}},
        },
        "types": {
            "demo:index/B:B": {"type": "object", "properties": {"c": {"$ref": "#/types/demo:index/C:C"}}},
            "demo:index/C:C": {"type": "string", "enum": [{"value": "x", "description": "d"}]},
            "demo:index/D:D": {"type": "object", "properties": {}},
        },
    }
    trimmed = trim(full, ["demo:index/a:A"])
    assert trimmed["resources"] == {"demo:index/a:A": {"inputProperties": {"b": {"$ref": "#/types/demo:index/B:B"}},
                                                       "requiredInputs": ["b"]}}
    assert sorted(trimmed["types"]) == ["demo:index/B:B", "demo:index/C:C"]
    assert trimmed["types"]["demo:index/C:C"]["enum"] == [{"value": "x"}]
    assert trimmed["provider"] == {"inputProperties": {"token": {"type": "string"}}}
