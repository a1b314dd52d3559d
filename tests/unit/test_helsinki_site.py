"""The Helsinki site as registered: network, routes, subnets, firewalls, placement, buckets."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from unde_infra.offline import unwrap_secrets


def by_type(result, kind: str) -> dict[str, dict]:
    return {r.name: unwrap_secrets(r.inputs) for r in result.run.records if r.type == kind}


def server_ids(result) -> dict[str, int]:
    return {r.name: int(r.id) for r in result.run.records if r.type == "hcloud:index/server:Server"}


def test_network_contains_every_routed_destination(run_stack) -> None:
    result = run_stack("helsinki")
    (network,) = by_type(result, "hcloud:index/network:Network").values()
    assert network["ipRange"] == "10.0.0.0/14"
    routes = {r["destination"]: r["gateway"] for r in by_type(result, "hcloud:index/networkRoute:NetworkRoute").values()}
    assert routes == {"10.2.0.0/24": "10.1.0.2", "10.3.0.0/16": "10.1.0.2", "0.0.0.0/0": "10.1.0.2"}
    subnets = {s["ipRange"]: s for s in by_type(result, "hcloud:index/networkSubnet:NetworkSubnet").values()}
    assert subnets["10.1.1.0/24"]["type"] == "vswitch" and subnets["10.1.1.0/24"]["vswitchId"] == 71001
    assert {ip for ip, s in subnets.items() if s["type"] == "cloud"} == {"10.1.0.0/24", "10.1.2.0/24", "10.1.3.0/24"}
    assert {s["networkZone"] for s in subnets.values()} == {"eu-central"}


def test_firewalls_open_only_what_the_plan_exposes(run_stack) -> None:
    result = run_stack("helsinki", adminCidrs=["198.51.100.0/24", "203.0.113.7/32"])
    firewalls = by_type(result, "hcloud:index/firewall:Firewall")
    rules = {
        name: sorted((r["protocol"], r.get("port"), tuple(r["sourceIps"])) for r in fw["rules"])
        for name, fw in firewalls.items()
    }
    assert rules == {
        "unde-helsinki-base": [
            ("icmp", None, ("0.0.0.0/0", "::/0")),
            ("tcp", "22", ("198.51.100.0/24", "203.0.113.7/32")),
        ],
        # 80 for ACME's HTTP-01 challenge and the redirect to HTTPS.
        "unde-helsinki-https": [("tcp", "443", ("0.0.0.0/0", "::/0")), ("tcp", "80", ("0.0.0.0/0", "::/0"))],
        "unde-helsinki-wireguard": [("udp", "51820-52075", ("0.0.0.0/0", "::/0"))],
    }
    assert all(r["direction"] == "in" for fw in firewalls.values() for r in fw["rules"])
    ids = server_ids(result)
    attached = {name: sorted(int(i) for i in a["serverIds"]) for name, a in by_type(result, "hcloud:index/firewallAttachment:FirewallAttachment").items()}
    # HTTPS on the warm-standby entry point only (scenario 2), not on its orchestrator.
    assert attached["unde-helsinki-https"] == [ids["standby-api"]]
    assert attached["unde-helsinki-wireguard"] == sorted([ids["helsinki-gw"], ids["etcd-witness"]])
    # Private servers have no public interface at all (no IPv4, no IPv6); every server with one,
    # of either family, has the base rules.
    servers = by_type(result, "hcloud:index/server:Server")
    public = {name for name, s in servers.items() if s["publicNets"][0]["ipv4Enabled"] or s["publicNets"][0]["ipv6Enabled"]}
    assert {name for name, s in servers.items() if not s["publicNets"][0]["ipv6Enabled"]} == {"staging-db"}
    assert sorted(ids[n] for n in public) == attached["unde-helsinki-base"]
    assert {"staging-db", "etcd-3"} & public == {"etcd-3"}


def test_data_servers_are_private_and_route_through_the_gateway(run_stack) -> None:
    result = run_stack("helsinki")
    servers = by_type(result, "hcloud:index/server:Server")
    assert servers["staging-db"]["publicNets"][0]["ipv4Enabled"] is False
    user_data = result.artifacts["staging-db"]["user-data.yaml"]
    assert "ExecStart=/sbin/ip route replace default via 10.0.0.1" in user_data
    assert "ExecStart=/sbin/ip route replace 10.0.0.0/14 via 10.0.0.1" in user_data
    assert "route replace default" not in result.artifacts["scraper"]["user-data.yaml"]


@pytest.mark.xdist_group("sixteen-shards")  # the session's 16-shard runs, on one worker
def test_replicas_are_spread_at_most_ten_a_group(run_stack) -> None:
    result = run_stack("local", shards=16)
    groups = by_type(result, "hcloud:index/placementGroup:PlacementGroup")
    assert {g["type"] for g in groups.values()} == {"spread"} and len(groups) == 2
    group_ids = {r.name: int(r.id) for r in result.run.records if r.type == "hcloud:index/placementGroup:PlacementGroup"}
    servers = by_type(result, "hcloud:index/server:Server")
    members = Counter(s.get("placementGroupId") for name, s in servers.items() if name.startswith("shard-replica-"))
    assert members == {group_ids["replicas-0"]: 10, group_ids["replicas-1"]: 6}
    assert all("placementGroupId" not in s for name, s in servers.items() if name.startswith("local-"))


def test_buckets_on_hetzner_object_storage(run_stack) -> None:
    result = run_stack("helsinki")
    (provider,) = by_type(result, "pulumi:providers:minio").values()
    assert provider["minioServer"] == "hel1.your-objectstorage.com" and provider["minioSsl"] in (True, "true")
    secret_inputs = next(r for r in result.run.records if r.type == "pulumi:providers:minio").export()["inputs"]
    assert secret_inputs["minioPassword"] == "[secret]" and secret_inputs["minioUser"] == "[secret]"
    buckets = by_type(result, "minio:index/s3Bucket:S3Bucket")
    assert sorted(b["bucket"] for b in buckets.values()) == ["unde-backups", "unde-images", "unde-user-media"]
    assert all(r.protect for r in result.run.records if r.type == "minio:index/s3Bucket:S3Bucket")
    versioned = by_type(result, "minio:index/s3BucketVersioning:S3BucketVersioning")
    assert sorted(versioned) == ["unde-backups", "unde-user-media"]
    policies = by_type(result, "minio:index/ilmPolicy:IlmPolicy")
    assert all(p["rules"][0]["noncurrentVersionExpirationDays"] == 30 for p in policies.values())


def test_gateway_outputs_for_the_local_stack(run_stack) -> None:
    result = run_stack("helsinki")
    outputs = result.run.plain_outputs()
    assert outputs["gatewayPublicAddress"] == "46.62.233.30"
    assert outputs["gatewayPrivateAddress"] == "10.1.0.2"
    assert outputs["gatewaySshEndpoint"] == "root@46.62.233.30:22"
    import yaml

    from unde_infra.offline import STACK_OUTPUTS_FILE

    documented = yaml.safe_load(STACK_OUTPUTS_FILE.read_text())["helsinki"]
    assert set(documented) == set(outputs)


def test_an_existing_network_is_adopted_at_the_plans_range(run_stack) -> None:
    adopting = {"id": 4242, "subnets": ["10.1.0.0/24", "10.1.1.0/24"]}
    first = run_stack("helsinki", networkImport=adopting, adopting=True)
    (network,) = [r for r in first.run.records if r.type == "hcloud:index/network:Network"]
    # Widened beforehand (change_ip_range): the import asks for the range it has, never a change.
    assert network.import_id == "4242" and network.inputs["ipRange"] == "10.0.0.0/14"
    assert {"name", "labels", "deleteProtection", "exposeRoutesToVswitch"} <= set(network.ignore_changes)
    subnets = {r.inputs["ipRange"]: r.import_id for r in first.run.records if r.type == "hcloud:index/networkSubnet:NetworkSubnet"}
    assert subnets == {
        "10.1.0.0/24": "4242-10.1.0.0/24",
        "10.1.1.0/24": "4242-10.1.1.0/24",
        "10.1.2.0/24": None,
        "10.1.3.0/24": None,
    }
    routes = sorted(r.inputs["destination"] for r in first.run.records if r.type == "hcloud:index/networkRoute:NetworkRoute")
    assert routes == ["0.0.0.0/0", "10.2.0.0/24", "10.3.0.0/16"]
    servers = [r for r in first.run.records if r.type == "hcloud:index/server:Server"]
    assert {int(r.inputs["networks"][0]["networkId"]) for r in servers} == {4242}
    # The next run converges protection in place; name and labels stay the live ones.
    second = run_stack("helsinki", networkImport=adopting)
    (network,) = [r for r in second.run.records if r.type == "hcloud:index/network:Network"]
    assert network.inputs["deleteProtection"] is True and "deleteProtection" not in network.ignore_changes


def _scraper(result) -> dict:
    return next(r for r in result.run.records if r.type == "hcloud:index/server:Server" and r.name == "scraper")


def test_an_adopted_server_is_resized_only_when_the_topology_opts_in(run_stack, tmp_path) -> None:
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "config" / "topology.yaml").read_text()
    line = "  scraper:          {site: helsinki, task: scraper, type: cpx22,"
    assert line in source
    edited = tmp_path / "topology.yaml"
    edited.write_text(source.replace(line, line.replace("cpx22", "cpx32")))
    kept = _scraper(run_stack("helsinki", topology=edited))
    # The new type is registered, but the engine leaves the running server's type alone.
    assert kept.inputs["serverType"] == "cpx32" and "serverType" in kept.ignore_changes
    opted = tmp_path / "resize.yaml"
    opted.write_text(source.replace(line, line.replace("type: cpx22,", "type: cpx32, resize: true,")))
    opted_run = run_stack("helsinki", topology=opted)
    resized = _scraper(opted_run)
    assert resized.inputs["serverType"] == "cpx32" and "serverType" not in resized.ignore_changes
    # Every other adopted server keeps its type either way.
    others = [r for r in opted_run.run.records
              if r.type == "hcloud:index/server:Server" and r.import_id and r.name != "scraper"]
    assert others and all("serverType" in r.ignore_changes for r in others)


def test_the_default_preview_installs_posthog_and_leaves_pushs_broker_alone(run_stack) -> None:
    from tests.unit.test_local_site import delivered_modes

    result = run_stack("helsinki")
    posthog = result.artifacts["posthog"]
    compose = yaml.safe_load(posthog["/opt/posthog/docker-compose.yml"])
    assert compose["services"]["proxy"]["ports"] == ["10.1.0.30:80:80"]
    assert "POSTGRES_PASSWORD=" in posthog["/etc/unde/secrets/posthog.env"]
    modes = delivered_modes(result, "posthog")
    assert modes["/etc/unde/secrets/posthog.env"] == ("0600", True)
    assert not any(secret for path, (_, secret) in modes.items() if path != "/etc/unde/secrets/posthog.env")
    # posthog is created, so it runs Debian 13: Docker from Debian, no Docker repository or pin.
    assert "/etc/apt/preferences.d/unde-docker" not in posthog and "/etc/apt/sources.list.d/docker.list" not in posthog
    assert "DOCKER_PACKAGES='docker.io docker-cli docker-compose'" in posthog["/usr/local/lib/unde/posthog-setup.env"]
    # push: the exporter's login and its ACL user, nothing of Redis's own configuration.
    push = result.artifacts["push"]
    assert not any(path.startswith("/etc/redis") for path in push)
    assert delivered_modes(result, "push")["/etc/unde/secrets/redis-exporter.env"] == ("0600", True)
    assert "ACL SETUSER" in push["/usr/local/lib/unde/redis-exporter-user"]
