"""Monitoring renderer: targets per server and their labels, secrets kept out of configuration,
thresholds from SPEC.md and the HA timings, and the metric names other renderers must match."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest
import yaml

from unde_infra import timings
from unde_infra.files import source
from unde_infra.model import DEFAULT_TOPOLOGY, Inventory, build_inventory, load_server_types, load_topology
from unde_infra.render import monitoring as m

SETTINGS = m.AlertingSettings(telegram_chat_id=-1001234567890, slack_channel="#unde-alerts")
SECRETS = m.MonitoringSecrets(
    grafana_admin_password="Gr4fana-admin-known-value",
    telegram_bot_token="987654:telegram-known-token",
    slack_webhook_url="https://hooks.slack.com/services/T000/B000/known-slack-secret",
    heartbeat_url="https://hc-ping.example/known-heartbeat-uuid",
)


def targets(inventory: Inventory, job: str) -> dict[str, dict[str, object]]:
    return {g["labels"]["server"]: g for g in m.file_sd_targets(inventory)[job]}  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# Targets


@pytest.mark.parametrize("shards", [1, 4, 16])
def test_every_server_is_a_node_exporter_target(shards: int) -> None:
    inventory = load_topology(shards=shards)
    node = targets(inventory, "node")
    assert set(node) == set(inventory.servers)
    for name, group in node.items():
        assert group["targets"] == [f"{inventory.servers[name].ip}:9100"]


@pytest.mark.parametrize("shards", [1, 16])
def test_service_targets_follow_the_services_of_each_server(shards: int) -> None:
    inventory = load_topology(shards=shards)
    shard_servers = {s.name for shard in inventory.shards for s in (shard.primary, shard.replica)}
    assert len(shard_servers) == 2 * shards
    assert set(targets(inventory, "postgres")) == {"staging-db", "production-db"} | shard_servers
    assert set(targets(inventory, "patroni")) == shard_servers
    assert set(targets(inventory, "redis")) == {"push", "local-redis"}
    # The application's metrics contract (docs/monitoring.md): the services that use local-redis's caches.
    assert {name: g["targets"] for name, g in targets(inventory, "app").items()} == {
        "local-app": ["10.2.0.2:9464"], "local-orchestrator": ["10.2.0.17:9464"]}
    assert targets(inventory, "postgres")["production-db"]["targets"] == ["10.1.1.2:9187"]
    assert targets(inventory, "redis")["local-redis"]["targets"] == ["10.2.0.4:9121"]
    assert targets(inventory, "patroni")["shard-replica-0"]["targets"] == [f"{inventory.servers['shard-replica-0'].ip}:8008"]


@pytest.mark.parametrize(
    ("placement", "members"),
    [("three-sites", {"local-etcd-1", "etcd-3", "etcd-witness"}), ("plan", {"local-etcd-1", "shard-replica-0", "etcd-3"})],
)
def test_etcd_targets_are_the_members_of_the_placement(placement: str, members: set[str]) -> None:
    inventory = load_topology(placement=placement)
    etcd = targets(inventory, "etcd")
    assert set(etcd) == members
    # Under `plan`, etcd-2 runs on shard-replica-0 whose task is shard-replica, not etcd.
    for name in members:
        assert etcd[name]["targets"] == [f"{inventory.servers[name].ip}:2379"]


def test_target_labels_are_site_task_shard_and_server(inventory: Inventory) -> None:
    node = targets(inventory, "node")
    assert node["local-shard-0"]["labels"] == {"server": "local-shard-0", "site": "local", "task": "shard", "shard": "0"}
    assert node["shard-replica-0"]["labels"] == {
        "server": "shard-replica-0", "site": "helsinki", "task": "shard-replica", "shard": "0"}
    # No empty `shard` label off the shards: Prometheus would reject nothing, but dashboards group on it.
    assert node["etcd-witness"]["labels"] == {"server": "etcd-witness", "site": "witness", "task": "etcd"}
    assert node["production-db"]["labels"]["task"] == "catalog-db"


def test_target_addresses_can_be_rewritten(inventory: Inventory) -> None:
    groups = m.file_sd_targets(inventory, target_address=lambda server, port: f"127.0.0.1:{port + 1}")
    assert {t for g in groups["node"] for t in g["targets"]} == {"127.0.0.1:9101"}  # type: ignore[union-attr]


def test_prometheus_yml_does_not_change_with_the_shard_count() -> None:
    """Scaling the local stack rewrites target files only (file_sd), never prometheus.yml."""
    one = m.monitoring_files(load_topology(shards=1), SETTINGS)
    many = m.monitoring_files(load_topology(shards=16), SETTINGS)
    prometheus_yml = "/etc/prometheus/prometheus.yml"
    assert one[prometheus_yml] == many[prometheus_yml]
    assert one["/etc/prometheus/file_sd/node.json"] != many["/etc/prometheus/file_sd/node.json"]


def test_prometheus_config_scrapes_every_job_from_file_sd(inventory: Inventory) -> None:
    config = yaml.safe_load(m.monitoring_files(inventory, SETTINGS)["/etc/prometheus/prometheus.yml"])
    assert config["global"]["scrape_interval"] == "15s"  # SPEC
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The peer jobs scrape the second alert path's Prometheus and Alertmanager (and it scrapes these).
    assert set(jobs) == {"node", "postgres", "redis", "etcd", "patroni", "app", "prometheus", "alertmanager",
                         "peer-prometheus", "peer-alertmanager"}
    assert jobs["peer-prometheus"]["static_configs"][0]["targets"] == ["10.2.0.7:9090"]
    for name in ("node", "postgres", "redis", "etcd", "patroni", "app"):
        assert jobs[name]["file_sd_configs"][0]["files"] == [f"/etc/prometheus/file_sd/{name}.json"]
    assert jobs["patroni"]["metrics_path"] == "/metrics"
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.1.0.7:9093"]
    assert config["rule_files"] == ["/etc/prometheus/rules/unde-recording.yml", "/etc/prometheus/rules/unde-alerts.yml"]


def test_retention_is_30_days_on_the_command_line(inventory: Inventory) -> None:
    defaults = m.monitoring_files(inventory, SETTINGS)["/etc/default/prometheus"]
    args = next(line for line in defaults.splitlines() if line.startswith("ARGS="))
    assert "--storage.tsdb.retention.time=30d" in args
    assert "--web.listen-address=10.1.0.7:9090" in args  # the private address, never 0.0.0.0


# --------------------------------------------------------------------------------------------
# Secrets


def test_no_secret_in_any_configuration_file(inventory: Inventory) -> None:
    files = m.monitoring_files(inventory, SETTINGS)
    for server in inventory.servers.values():
        files.update(m.tunnel_collector_files(server, inventory))
    secret_files = m.monitoring_secret_files(SECRETS)
    leaks = [(path, name) for path, text in files.items() for name, value in SECRETS.values().items() if value in text]
    assert leaks == []
    # ... while the secret files do carry every value, each in its own root-only file.
    assert sorted(secret_files) == sorted(f"/etc/unde/secrets/monitoring/{name}" for name in SECRETS.values())
    for name, value in SECRETS.values().items():
        assert secret_files[f"/etc/unde/secrets/monitoring/{name}"] == value + "\n"
    assert not set(secret_files) & set(files)


def test_secret_values_do_not_show_in_repr() -> None:
    text = repr(SECRETS)
    assert not any(value in text for value in SECRETS.values().values())


def test_services_read_secrets_through_systemd_credentials(inventory: Inventory) -> None:
    files = m.monitoring_files(inventory, SETTINGS)
    am = yaml.safe_load(files["/etc/prometheus/alertmanager.yml"])
    team = next(r for r in am["receivers"] if r["name"] == "team")
    assert team["slack_configs"][0]["api_url_file"] == (
        "/run/credentials/prometheus-alertmanager.service/slack_webhook_url")
    assert team["telegram_configs"][0]["bot_token"] == m.ALERTMANAGER_PLACEHOLDERS["telegram_bot_token"]
    assert team["telegram_configs"][0]["chat_id"] == SETTINGS.telegram_chat_id
    dropin = files["/etc/systemd/system/prometheus-alertmanager.service.d/unde-secrets.conf"]
    for name in ("telegram_bot_token", "slack_webhook_url", "heartbeat_url"):
        assert f"LoadCredential={name}:/etc/unde/secrets/monitoring/{name}" in dropin.splitlines()
    assert "ExecStartPre=/usr/bin/python3 /usr/local/lib/unde/alertmanager-config" in dropin.splitlines()
    defaults = files["/etc/default/prometheus-alertmanager"]
    assert "--config.file=/run/prometheus-alertmanager/alertmanager.yml" in defaults

    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(files["/etc/grafana/grafana.ini"])
    assert ini["security"]["admin_password"] == "$__file{/run/credentials/grafana-server.service/admin_password}"
    assert "LoadCredential=admin_password:/etc/unde/secrets/monitoring/grafana_admin_password" in (
        files["/etc/systemd/system/grafana-server.service.d/unde-secrets.conf"].splitlines())


def test_the_dead_mans_switch_goes_to_the_heartbeat_receiver(inventory: Inventory) -> None:
    am = yaml.safe_load(m.monitoring_files(inventory, SETTINGS)["/etc/prometheus/alertmanager.yml"])
    route = am["route"]["routes"][0]
    assert route["matchers"] == ['alertname = "Watchdog"'] and route["receiver"] == "heartbeat"
    assert route["repeat_interval"] == m.HEARTBEAT_REPEAT_INTERVAL
    heartbeat = next(r for r in am["receivers"] if r["name"] == "heartbeat")
    assert heartbeat["webhook_configs"][0]["url"] == m.ALERTMANAGER_PLACEHOLDERS["heartbeat_url"]
    watchdog = m.alerts(inventory)["unde-meta"][0]
    assert (watchdog.name, watchdog.expr, watchdog.for_) == ("Watchdog", "vector(1)", "0s")


# --------------------------------------------------------------------------------------------
# Grafana


def test_grafana_is_provisioned_with_prometheus_and_a_dashboard(inventory: Inventory) -> None:
    files = m.monitoring_files(inventory, SETTINGS)
    datasources = yaml.safe_load(files["/etc/grafana/provisioning/datasources/unde.yaml"])["datasources"]
    assert datasources == [
        {"name": "Prometheus", "uid": m.GRAFANA_DATASOURCE_UID, "type": "prometheus", "access": "proxy",
         "url": "http://10.1.0.7:9090", "isDefault": True, "editable": False, "jsonData": {"timeInterval": "15s"}}
    ]
    provider = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/unde.yaml"])["providers"][0]
    dashboard_file = f"{provider['options']['path']}/overview.json"
    dashboard = json.loads(files[dashboard_file])
    assert dashboard["uid"] == "unde-overview"
    exprs = [p["targets"][0]["expr"] for p in dashboard["panels"]]
    assert m.VPN_TUNNEL_RTT_METRIC in " ".join(exprs) and m.EMBEDDING_INDEX_METRIC in exprs
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {m.GRAFANA_DATASOURCE_UID}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# --------------------------------------------------------------------------------------------
# Thresholds


def alert(inventory: Inventory, name: str) -> m.Alert:
    return next(a for group in m.alerts(inventory).values() for a in group if a.name == name)


def test_thresholds_from_spec(inventory: Inventory) -> None:
    assert alert(inventory, "VpnTunnelRttHigh").expr.endswith("> 200")
    assert alert(inventory, "ShardDiskUsageHigh").expr == "local_shard_disk_usage_percent > 80"
    assert alert(inventory, "ShardCacheHitRatioLow").expr == "local_shard_cache_hit_ratio < 0.9"
    assert alert(inventory, "ShardSplitTrigger").expr.endswith(f"> {20 * 1024**3}")
    assert alert(inventory, "WalAccumulation").expr.count(f"> {20 * 1024**3}") == 2
    assert alert(inventory, "PrometheusHeadSeriesHigh").expr.endswith("> 500000")
    assert alert(inventory, "PrometheusStorageNearDiskSize").expr.endswith("> 0.8")
    assert alert(inventory, "RedisMemoryHigh").expr.endswith("> 0.8")
    assert alert(inventory, "PosthogDiskUsageHigh").expr.endswith("> 80")


def test_thresholds_leave_room_above_the_cross_site_rtt() -> None:
    """A threshold at or near the 120 ms baseline would fire forever."""
    assert m.VPN_RTT_ALERT_MS >= m.SITE_RTT_MS * 1.5
    assert m.ETCD_PEER_RTT_ALERT_SECONDS * 1000 >= m.SITE_RTT_MS * 1.5
    assert m.ETCD_PEER_RTT_ALERT_SECONDS > 0.15  # the etcd mixin's default, too low across sites


def test_replication_lag_thresholds_follow_patroni(inventory: Inventory) -> None:
    assert m.REPLICATION_LAG_CRITICAL_BYTES == timings.MAXIMUM_LAG_ON_FAILOVER_BYTES
    assert 0 < m.REPLICATION_LAG_WARNING_BYTES < timings.MAXIMUM_LAG_ON_FAILOVER_BYTES
    assert alert(inventory, "ReplicationLagAboveFailoverLimit").expr.endswith(
        f"> {timings.MAXIMUM_LAG_ON_FAILOVER_BYTES}")
    assert alert(inventory, "ReplicationLagNearFailoverLimit").expr.endswith(f"> {m.REPLICATION_LAG_WARNING_BYTES}")


def test_every_alert_has_a_known_severity_and_annotations(inventory: Inventory) -> None:
    names = [a.name for group in m.alerts(inventory).values() for a in group]
    assert len(names) == len(set(names))
    for group in m.alerts(inventory).values():
        for a in group:
            assert a.severity in {"none", "info", "warning", "critical"}
            assert a.summary and a.description


# --------------------------------------------------------------------------------------------
# Metric names agreed with other renderers


def test_postgres_exporter_queries_produce_the_metrics_the_rules_read() -> None:
    from unde_infra.render import postgres_exporter

    produced = {
        f"{key}_{column}"
        for key, query in postgres_exporter.custom_queries().items()
        for metric in query["metrics"]  # type: ignore[index, attr-defined]
        for column, spec in metric.items()
        if spec["usage"] != "LABEL"
    }
    assert m.EMBEDDING_INDEX_METRIC in produced
    assert m.WAL_RETAINED_METRIC in produced
    assert postgres_exporter.EMBEDDING_INDEX_METRIC == m.EMBEDDING_INDEX_METRIC


# --------------------------------------------------------------------------------------------
# Tunnel collector placement


def test_tunnel_collector_on_local_servers_and_the_gateway(inventory: Inventory) -> None:
    with_collector = {s.name for s in inventory.servers.values() if m.tunnel_collector_files(s, inventory)}
    assert with_collector == {s.name for s, _ in inventory.tunnels()} | {"helsinki-gw"}
    local_app = m.tunnels_seen_from(inventory.servers["local-app"], inventory)
    assert local_app == [{"tunnel": "local-app", "peer_ip": "10.3.0.100"}]
    gateway = m.tunnels_seen_from(inventory.gateway, inventory)
    assert {t["tunnel"]: t["peer_ip"] for t in gateway}["local-shard-0"] == "10.3.10.1"
    assert len(gateway) == len(inventory.tunnels())
    files = m.tunnel_collector_files(inventory.servers["local-app"], inventory)
    timer = files["/etc/systemd/system/unde-vpn-tunnel-collector.timer"]
    assert f"OnUnitActiveSec={m.TUNNEL_COLLECTOR_INTERVAL_SECONDS}s" in timer
    settings = json.loads(files["/usr/local/lib/unde/vpn-tunnel-collector.json"])
    assert settings == {"tunnels": local_app, "output_dir": "/var/lib/prometheus/node-exporter",
                        "file_name": m.TUNNEL_METRICS_FILE, "ping_count": 3}
    # The script itself is the package's file, unchanged: its parameters are all in the JSON.
    assert files["/usr/local/lib/unde/vpn-tunnel-collector"] == source(m.TUNNEL_COLLECTOR_SOURCE)


def test_no_gateway_collector_when_routeros_terminates_the_tunnels() -> None:
    data = yaml.safe_load(Path(DEFAULT_TOPOLOGY).read_text())
    data["network"]["wireguard"]["mode"] = "routeros"
    inventory = build_inventory(data, source="test", server_types=load_server_types())
    assert m.tunnel_collector_files(inventory.gateway, inventory) == {}
    stale = alert(inventory, "VpnTunnelCollectorStale").expr
    assert 'task="gateway"' not in stale and 'site="local"' in stale


def test_the_package_re_exports_every_public_name_of_its_modules() -> None:
    """render/monitoring/ is split by tool; callers import everything from the package."""
    import ast

    package = Path(m.__file__).parent
    for module in sorted(package.glob("*.py")):
        if module.name == "__init__.py":
            continue
        defined = set()
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined |= {target.id for target in node.targets if isinstance(target, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
        missing = sorted(n for n in defined if not n.startswith("_") and n not in m.__all__)
        assert not missing, f"{module.name}: not re-exported by unde_infra.render.monitoring: {missing}"


# --------------------------------------------------------------------------------------------
# The second alert path (local-monitoring) and what both paths have in common


def test_two_monitoring_servers_each_watching_the_other(inventory: Inventory) -> None:
    main, second = m.main_view(inventory), m.second_view(inventory)
    assert second is not None
    assert (main.server.name, main.peer and main.peer.name) == ("monitoring", "local-monitoring")
    assert (second.server.name, second.peer and second.peer.name, second.sites) == (
        "local-monitoring", "monitoring", frozenset({"local"}))
    assert m.view_of(inventory, inventory.servers["local-monitoring"]) == second
    with pytest.raises(ValueError):
        m.view_of(inventory, inventory.servers["local-app"])
    # The second path scrapes the local site only; the main path every server, the second one included.
    for job, groups in m.file_sd_targets(inventory, view=second).items():
        assert {g["labels"]["site"] for g in groups} <= {"local"}, job  # type: ignore[index]
    assert {g["labels"]["server"] for g in m.file_sd_targets(inventory, view=second)["postgres"]} == {  # type: ignore[index]
        "local-shard-0"}
    assert "local-monitoring" in targets(inventory, "node")


def test_the_second_path_evaluates_what_local_series_decide_marked_as_copies(inventory: Inventory) -> None:
    second = m.second_view(inventory)
    assert second is not None
    main_alerts = {a.name: a for g in m.alerts(inventory).values() for a in g}
    second_alerts = {a.name: a for g in m.alerts(inventory, second).values() for a in g}
    # What needs both sites' series stays on the main path (a local view alone would misjudge it).
    for name in ("ShardNoPrimary", "EtcdQuorumLost", "EtcdQuorumAtRisk", "ReplicationLagAboveFailoverLimit",
                 "PosthogDiskUsageHigh", "PosthogEventsIngestedAbsent"):
        assert name in main_alerts and name not in second_alerts, name
    # SPEC scenario 3's WAL alert, the tunnels, Redis, the shards' own health: evaluated locally,
    # as copies of the main path's (the inhibition keeps them quiet while Helsinki answers).
    for name in ("WalAccumulation", "VpnTunnelDown", "RedisDown", "ServerDown", "EtcdNoLeader",
                 "ShardRoutingNotFollowing", "MasterEncryptionKeyMissing"):
        assert dict(second_alerts[name].labels) == {m.ALSO_SENT_BY: "monitoring"}, name
        assert second_alerts[name].expr == main_alerts[name].expr
    # Its own: the dead man's switch, the peer and Helsinki's reachability; never copies.
    for name in ("Watchdog", "PeerMonitoringDown", "PeerAlertmanagerDown", "HelsinkiUnreachable", m.MAIN_PATH_HEALTHY):
        assert second_alerts[name].labels == (), name
    assert second_alerts[m.MAIN_PATH_HEALTHY].severity == "none"
    rules = yaml.safe_load(m.rule_files(inventory, second)["unde-alerts.yml"])
    wal = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "WalAccumulation")
    assert wal["labels"] == {"severity": "critical", "also_sent_by": "monitoring"}
    assert "20 GiB" in wal["annotations"]["summary"]  # SPEC: above 20 GB while Helsinki is down


def test_the_second_path_has_no_grafana_and_its_own_heartbeat(inventory: Inventory) -> None:
    second = m.second_view(inventory)
    assert second is not None
    files = m.monitoring_files(inventory, SETTINGS, view=second)
    assert not any("grafana" in path for path in files)
    prometheus = yaml.safe_load(files["/etc/prometheus/prometheus.yml"])
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.2.0.7:9093"]
    assert "--web.listen-address=10.2.0.7:9090" in files["/etc/default/prometheus"]
    setup = m.monitoring_setup(grafana=False)
    assert setup.settings["SERVICES"] == "prometheus prometheus-alertmanager" and setup.settings["GRAFANA_SOURCE"] == ""
    # The main path's Grafana is set up after alerting, from its own repository (the script's last part).
    main = m.monitoring_setup()
    assert main.settings["SERVICES"] == "prometheus prometheus-alertmanager" and "apt.grafana.com" in main.settings["GRAFANA_SOURCE"]
    script = main.files()[main.path]
    assert script.index("systemctl reload-or-restart $SERVICES") < script.index('"$APT_INSTALL" grafana')
    assert "systemctl reload-or-restart grafana-server" in script
    local = m.MonitoringSecrets(None, "1:t", "https://hooks.slack.com/x", "https://hc.example/local")
    assert sorted(local.values()) == ["heartbeat_url", "slack_webhook_url", "telegram_bot_token"]


def test_helsinki_gw_lets_the_second_path_read_its_node_exporter_through_its_tunnel(inventory: Inventory) -> None:
    from ipaddress import ip_network

    from unde_infra.render.wireguard import gateway_nftables

    rules = gateway_nftables(inventory, [ip_network("198.51.100.0/24")])
    assert ('iifname "wg-mon" ip saddr 10.2.0.7 tcp dport 9100 accept '
            'comment "node_exporter for the second alert path (local-monitoring)"') in rules
    # No other local server reaches it.
    assert rules.count("tcp dport 9100") == 2
