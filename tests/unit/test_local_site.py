"""The local site: scale-out of stateless tasks and the entry point in front of local-app."""

from __future__ import annotations

from pathlib import Path

import yaml

from unde_infra.model import DEFAULT_TOPOLOGY
from unde_infra.offline import unwrap_secrets


def scaled_topology(tmp_path: Path, **instances: int) -> Path:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    for name, count in instances.items():
        data["servers"][name.replace("_", "-")]["instances"] = count
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def of_type(result, kind: str) -> dict[str, dict]:
    return {r.name: unwrap_secrets(r.inputs) for r in result.run.records if r.type == kind}


def test_one_app_instance_needs_no_load_balancer(run_stack) -> None:
    result = run_stack("local")
    assert of_type(result, "hcloud:index/loadBalancer:LoadBalancer") == {}
    assert result.run.plain_outputs()["entryAddress"].startswith("203.0.113.")  # local-app's own address


def stood_in(result, path: str) -> str:
    """What the preview stood in for a missing setting, as its blocker of a real run says."""
    (blocker,) = [b for b in result.blockers if b.path == path]
    return blocker.stand_in


def test_two_app_instances_on_hcloud_get_a_load_balancer(run_stack, tmp_path: Path) -> None:
    result = run_stack("local", topology=scaled_topology(tmp_path, local_app=2))
    servers = of_type(result, "hcloud:index/server:Server")
    assert servers["local-app-2"]["networks"][0]["ip"] == "10.2.0.65"
    (balancer,) = of_type(result, "hcloud:index/loadBalancer:LoadBalancer").values()
    assert balancer["location"] == "sin" and balancer["loadBalancerType"] == "lb11"
    (service,) = of_type(result, "hcloud:index/loadBalancerService:LoadBalancerService").values()
    # The balancer terminates TLS with a certificate Hetzner manages, and checks each FastAPI.
    assert (service["protocol"], service["listenPort"], service["destinationPort"]) == ("https", 443, 8000)
    (certificate,) = of_type(result, "hcloud:index/managedCertificate:ManagedCertificate").values()
    # The entry record's name, from the preview's stand-in zone.
    assert certificate["domainNames"] == ["api.unde.example"]
    assert service["http"]["redirectHttp"] is True and len(service["http"]["certificates"]) == 1
    check = service["healthCheck"]
    assert (check["protocol"], check["port"], check["http"]["path"]) == ("http", 8000, "/healthz")
    # certbot does not run behind the balancer; it still runs on the standby entry (DNS-01), so
    # the ACME account is asked for all the same.
    assert stood_in(result, "acmeEmail") == "acme@unde.invalid"
    assert "/etc/nginx/conf.d/unde-api.conf" in result.artifacts["standby-api"]
    assert not any(path.startswith("/etc/nginx") for path in result.artifacts.get("local-app", {}))
    server_ids = {r.name: int(r.id) for r in result.run.records if r.type == "hcloud:index/server:Server"}
    targets = of_type(result, "hcloud:index/loadBalancerTarget:LoadBalancerTarget").values()
    assert sorted(int(t["serverId"]) for t in targets) == sorted([server_ids["local-app"], server_ids["local-app-2"]])
    assert all(t["usePrivateIp"] is True for t in targets)
    # Each instance has its own tunnel too.
    assert result.run.plain_outputs()["tunnels"]["local-app-2"]["interface"] == "wg-app-2"


def test_two_app_instances_on_existing_hosts_use_the_entry_hosts_nginx(run_stack, inventory, tmp_path: Path) -> None:
    topology = scaled_topology(tmp_path, local_app=2)
    names = [s.name for s in inventory.site_servers("local")] + ["local-app-2"]
    hosts = {name: {"address": f"192.0.2.{10 + i}"} for i, name in enumerate(names)}
    result = run_stack("local", topology=topology, provider="existing", hosts=hosts)
    upstream = result.artifacts["local-app"]["/etc/nginx/conf.d/unde-api-upstream.conf"]
    assert "server 10.2.0.2:8000 max_fails=3 fail_timeout=10s;  # local-app" in upstream
    assert "server 10.2.0.65:8000 max_fails=3 fail_timeout=10s;  # local-app-2" in upstream
    assert of_type(result, "hcloud:index/loadBalancer:LoadBalancer") == {}
    assert result.run.plain_outputs()["entryAddress"] == "192.0.2.10"
    # The entry host terminates TLS itself: nginx with HTTP/2, certbot for the certificate.
    tls = result.artifacts["local-app"]["/etc/nginx/unde/api-tls.conf"]
    assert "listen 443 ssl http2;" in tls and "ssl_certificate /etc/letsencrypt/live/api.unde.example/fullchain.pem;" in tls
    assert "local-app-2" not in {s for s, files in result.artifacts.items() if "/etc/nginx/unde/api-tls.conf" in files}


def test_routeros_mode_uploads_one_script_with_every_tunnel(run_stack, tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["network"]["wireguard"]["mode"] = "routeros"
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    result = run_stack("local", topology=topology, routerosPrivateInterface="ether5")
    script = result.artifacts["helsinki-gw"]["/unde-wireguard.rsc"]
    for interface in ("wg-app", "wg-orch", "wg-shard0", "wg-etcd"):
        assert f'name="{interface}"' in script or f"name={interface}" in script, interface
    assert "ether5" in script
    # No per-tunnel wg-quick files on the gateway in this mode; the local ends are unchanged.
    assert not any(path.startswith("/etc/wireguard/") for path in result.artifacts["helsinki-gw"])
    assert "/etc/wireguard/wg-app.conf" in result.artifacts["local-app"]
    (upload,) = [r for r in result.run.records if r.type == "command:remote:CopyToRemote"]
    assert "source" in upload.secret_paths and upload.export()["inputs"]["source"] == "[secret]"
    (apply,) = [r for r in result.run.records if r.name == "helsinki-gw:apply:routeros"]
    assert apply.inputs["create"].startswith("/import file-name=unde-wireguard.rsc")


def test_a_shard_without_ipv4_is_firewalled_on_its_ipv6(run_stack) -> None:
    result = run_stack("local")
    servers = of_type(result, "hcloud:index/server:Server")
    assert servers["local-shard-0"]["publicNets"] == [{"ipv4Enabled": False, "ipv6Enabled": True}]
    assert servers["shard-replica-0"]["publicNets"] == [{"ipv4Enabled": False, "ipv6Enabled": False}]
    ids = {r.name: int(r.id) for r in result.run.records if r.type == "hcloud:index/server:Server"}
    (base,) = [a for name, a in of_type(result, "hcloud:index/firewallAttachment:FirewallAttachment").items() if name == "unde-local-base"]
    attached = {int(i) for i in base["serverIds"]}
    assert ids["local-shard-0"] in attached and ids["shard-replica-0"] not in attached
    assert attached == {ids[n] for n in ids if n.startswith("local-")}


def delivered_modes(result, server: str) -> dict[str, tuple[str, bool]]:
    """path -> (the `install` command's mode, whether the content is a secret) for one server."""
    import re

    modes = {}
    for record in result.run.records:
        if record.type == "command:remote:Command" and record.name.startswith(f"{server}:/"):
            mode = re.search(r"install -D -m (\d{4}) ", record.inputs["create"])
            if mode:
                modes[record.name.split(":", 1)[1]] = (mode.group(1), "stdin" in record.secret_paths)
    return modes


def test_the_default_preview_installs_redis_and_the_tls_entry_point(run_stack) -> None:
    from unde_infra.render.delivery import apply_when_pending, marker_path

    result = run_stack("local")
    redis = result.artifacts["local-redis"]
    assert "maxmemory 2200mb\n" in redis["/etc/redis/unde-redis.conf"]
    assert "user default off" in redis["/etc/redis/users.acl"]
    modes = delivered_modes(result, "local-redis")
    for path in ("/etc/redis/users.acl", "/etc/unde/secrets/redis-exporter.env", "/etc/unde/secrets/redis-admin.env"):
        assert modes[path] == ("0600", True), path
    assert modes["/usr/local/lib/unde/redis-setup"] == ("0755", False)
    # The hot-path Redis's clients: each its own user and password, root-only.
    for server, user in (("local-app", "app"), ("local-orchestrator", "orchestrator")):
        assert delivered_modes(result, server)["/etc/unde/secrets/redis.env"] == ("0600", True)
        assert f"REDIS_USERNAME={user}\n" in result.artifacts[server]["/etc/unde/secrets/redis.env"]
    app = result.artifacts["local-app"]
    assert "listen 443 ssl http2;" in app["/etc/nginx/unde/api-tls.conf"]
    assert "server 10.2.0.2:8000 max_fails=3 fail_timeout=10s;  # local-app" in app["/etc/nginx/conf.d/unde-api-upstream.conf"]
    assert "DOMAIN=api.unde.example\n" in app["/usr/local/lib/unde/entry-setup.env"]  # the preview's stand-in
    assert stood_in(result, "dnsZone") == "unde.example"
    assert stood_in(result, "acmeEmail") == "acme@unde.invalid"
    # The setup steps that run after delivery are the package's scripts.
    applies = {r.name: r.inputs["create"] for r in result.run.records if r.name.endswith((":apply:entry", ":apply:redis"))}
    assert applies["local-redis:apply:redis"] == apply_when_pending(
        "/usr/local/lib/unde/redis-setup", marker_path("unde.local.AgentHost.redis"))
    assert applies["local-app:apply:entry"] == apply_when_pending(
        "/usr/local/lib/unde/entry-setup", marker_path("unde.local.EntryPoint.entry"))
