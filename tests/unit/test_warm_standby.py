"""SPEC scenario 2's warm standby, as the stacks register it: the standby servers in the helsinki
stack, and in the local stack the entry's DNS zone and record, the failover watcher on both
vantage points and the standby orchestrator's secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest
import yaml

from unde_infra import timings
from unde_infra.errors import Problems, TopologyError
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology
from unde_infra.offline import run_program, unwrap_secrets
from unde_infra.render.entry_failover import CONFIG_PATH, SCRIPT_PATH, TOKEN_PATH, UNIT_PATH, EntryDns
from unde_infra.settings import parse_settings, read_stack_config

ZONE = "hcloud:index/zone:Zone"
RRSET = "hcloud:index/zoneRrset:ZoneRrset"
COMMAND = "command:remote:Command"


def records_of(result, kind: str) -> dict:
    return {r.name: r for r in result.run.records if r.type == kind}


def test_helsinki_builds_the_standby_servers_and_exports_the_entry(run_stack) -> None:
    result = run_stack("helsinki")
    servers = {r.name: unwrap_secrets(r.inputs) for r in result.run.records if r.type == "hcloud:index/server:Server"}
    assert servers["standby-api"]["serverType"] == "cx33" and servers["standby-orchestrator"]["serverType"] == "cx43"
    for name, ip in (("standby-api", "10.1.0.20"), ("standby-orchestrator", "10.1.0.21")):
        assert servers[name]["location"] == "hel1" and servers[name]["networks"][0]["ip"] == ip
        assert servers[name]["publicNets"][0]["ipv4Enabled"] is True
    outputs = result.run.plain_outputs()
    assert outputs["standbyEntryAddress"].startswith("203.0.113.")  # standby-api's public IPv4
    documented = yaml.safe_load(Path("config/offline-stack-outputs.yaml").read_text())["helsinki"]
    assert "standbyEntryAddress" in documented


def test_the_local_stack_owns_the_zone_and_the_entry_record(run_stack) -> None:
    result = run_stack("local", dnsZone="unde.app", entryHostname="go")
    (zone,) = records_of(result, ZONE).values()
    (rrset,) = records_of(result, RRSET).values()
    zone_inputs, rrset_inputs = unwrap_secrets(zone.inputs), unwrap_secrets(rrset.inputs)
    assert zone_inputs == {"name": "unde.app", "mode": "primary", "deleteProtection": True,
                           "labels": {"managed-by": "unde-infra"}}
    assert zone.protect is True
    entry = result.run.plain_outputs()["entryAddress"]
    assert rrset_inputs["zone"] == "unde.app" and rrset_inputs["name"] == "go" and rrset_inputs["type"] == "A"
    assert rrset_inputs["ttl"] == timings.ENTRY_RECORD_TTL_SECONDS == 60
    assert [r["value"] for r in rrset_inputs["records"]] == [entry]
    # The watcher owns the record's value after creation: `pulumi up` never moves users.
    assert rrset.ignore_changes == ["records"] and rrset.protect is False
    # Both through the DNS project's own provider, whose token stays secret.
    (provider,) = [r for r in result.run.records if r.type == "pulumi:providers:hcloud"]
    assert zone.provider and zone.provider.startswith(provider.urn) and rrset.provider == zone.provider
    assert provider.export()["inputs"]["token"] == "[secret]"
    assert result.run.plain_outputs()["entryRecord"] == "go.unde.app"


def test_the_watcher_goes_to_both_vantage_points(run_stack) -> None:
    result = run_stack("local", dnsZone="unde.app")
    entry = result.run.plain_outputs()["entryAddress"]
    standby = yaml.safe_load(Path("config/offline-stack-outputs.yaml").read_text())["helsinki"]["standbyEntryAddress"]
    decider = json.loads(result.artifacts["standby-api"][CONFIG_PATH])
    observer = json.loads(result.artifacts["etcd-witness"][CONFIG_PATH])
    assert decider["role"] == "decider" and observer["role"] == "observer"
    assert decider["local"]["record"] == observer["local"]["record"] == entry
    assert decider["standby"]["record"] == standby
    witness_ip = str(load_topology().server("etcd-witness").ip)
    assert decider["peer_status_url"] == f"http://{witness_ip}:9480/status" and observer["listen"] == f"{witness_ip}:9480"
    commands = records_of(result, COMMAND)
    token = commands[f"standby-api:{TOKEN_PATH}"]
    assert "install -D -m 0600 -o root -g root" in unwrap_secrets(token.inputs)["create"]
    assert "stdin" in token.secret_paths and f"etcd-witness:{TOKEN_PATH}" not in commands  # the observer needs none
    script = unwrap_secrets(commands[f"standby-api:{SCRIPT_PATH}"].inputs)
    assert "install -D -m 0755" in script["create"] and script["stdin"].startswith("#!/usr/bin/python3\n")
    assert "LoadCredential=dns-api-token:" in result.artifacts["standby-api"][UNIT_PATH]
    assert "LoadCredential" not in result.artifacts["etcd-witness"][UNIT_PATH]
    # Reached directly at their public addresses (no jump host in the path of the watcher's setup).
    apply = unwrap_secrets(commands["standby-api:apply:entry-failover"].inputs)
    assert apply["connection"]["host"] == standby and "proxy" not in apply["connection"]
    assert "--check" in apply["create"] and "systemctl restart unde-entry-failover" in apply["create"]


def test_the_standby_orchestrator_gets_the_key_and_the_replicas(run_stack) -> None:
    result = run_stack("local", dnsZone="unde.app", shards=2)
    files = result.artifacts["standby-orchestrator"]
    credentials = files["/etc/unde/secrets/shard-credentials.env"]
    # Its own site's member first (the replica, the primary once the local site is down), the
    # writable one chosen by libpq; the local orchestrator's list is the other way round.
    assert "SHARD0_HOST=10.1.2.10,10.2.0.10\n" in credentials and "SHARD1_HOST=10.1.2.11,10.2.0.129\n" in credentials
    assert "SHARD0_TARGET_SESSION_ATTRS=read-write\n" in credentials
    # A client on a primary that vanishes mid-statement gives up and tries the next host.
    assert "SHARD0_TCP_USER_TIMEOUT=5000\n" in credentials and "SHARD0_KEEPALIVES_IDLE=5\n" in credentials
    local = result.artifacts["local-orchestrator"]["/etc/unde/secrets/shard-credentials.env"]
    assert "SHARD0_HOST=10.2.0.10,10.1.2.10\n" in local and "SHARD1_HOST=10.2.0.129,10.1.2.11\n" in local
    assert "SHARD0_USER=orchestrator\n" in credentials
    assert files["/run/unde/secrets/master-encryption-key"] == result.artifacts["local-orchestrator"][
        "/run/unde/secrets/master-encryption-key"]
    mek = records_of(result, COMMAND)["standby-orchestrator:/run/unde/secrets/master-encryption-key"]
    connection = unwrap_secrets(mek.inputs)["connection"]
    assert connection["host"] == "10.1.0.21"  # its private address
    assert connection["proxy"]["host"] == "46.62.233.30"  # through helsinki-gw
    assert "stdin" in mek.secret_paths


def test_a_real_local_run_needs_the_dns_zone(fresh_event_loop) -> None:
    with pytest.raises(pulumi.RunError) as caught:
        run_program("local", read_stack_config("local"))
    cause = caught.value.__cause__
    assert isinstance(cause, TopologyError)
    # Under the CLI the program stops on every blocker of a real run, the zone among them.
    assert cause.source == "Pulumi.local.yaml (not ready for a real run)"
    assert [p.path for p in cause.problems] == ["sshKeys[0]", "adminCidrs[0]", "telegramChatId", "dnsZone", "acmeEmail"]


def test_no_standby_no_dns(run_stack, tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    del data["servers"]["standby-api"]
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_stack("local", topology=path)
    assert records_of(result, ZONE) == {} and "standby-api" not in result.artifacts
    assert "entryRecord" not in result.run.plain_outputs()


@pytest.mark.parametrize(("settings", "problem"), [
    ({"dnsZone": "Unde.App"}, "dnsZone: not a domain name in lower case without a trailing dot: 'Unde.App'"),
    ({"dnsZone": "unde.app."}, "dnsZone: not a domain name in lower case without a trailing dot: 'unde.app.'"),
    ({"dnsZone": "localhost"}, "dnsZone: not a domain name in lower case without a trailing dot: 'localhost'"),
    ({"dnsZone": "unde.app", "entryHostname": "api.unde.app"},
     "entryHostname: give the name relative to the zone ('api'), not 'api.unde.app'"),
    ({"dnsZone": "unde.app", "entryHostname": "-api"},
     "entryHostname: a name inside the zone (e.g. api, or @ for its apex), got '-api'"),
])
def test_bad_dns_settings_are_reported(settings: dict, problem: str) -> None:
    problems = Problems()
    parse_settings("local", settings, problems)
    assert [str(p) for p in problems.items] == [problem]


def test_apex_entry() -> None:
    problems = Problems()
    settings = parse_settings("local", {"dnsZone": "unde.app", "entryHostname": "@"}, problems)
    assert not problems and EntryDns(settings.dns_zone or "", settings.entry_hostname).fqdn == "unde.app"
