"""Prometheus, Alertmanager and Grafana for both sites, rendered from the inventory.

Everything here is a pure function from the inventory (and, for the secret files only, from the
secret values) to file contents keyed by absolute path. Nothing imports Pulumi.

What the monitoring server receives:

* `prometheus.yml` scrapes five jobs whose targets live in file_sd JSON files generated from the
  inventory, so that a change of the shard count rewrites target files only, never
  `prometheus.yml` (Prometheus re-reads file_sd files by itself, no reload needed);
* recording and alert rules for SPEC.md's key-metric table and the HA checks;
* Alertmanager with Telegram and Slack receivers plus a heartbeat receiver for the dead man's
  switch. No secret is in any rendered configuration file (see `alertmanager_files`);
* Grafana provisioning (data source, dashboards provider, one dashboard) with the admin password
  read from a file through `$__file{...}`;
* secret files (`monitoring_secret_files`), rendered apart so that the caller delivers them
  root-only; systemd's `LoadCredential=` hands them to the services that run as other users.

Every server with a WireGuard tunnel (local servers, and helsinki-gw in linux mode) also receives
a node_exporter textfile collector (`tunnel_collector_files`), because no exporter reports
tunnel state, handshake age or RTT through the tunnel.
"""

from __future__ import annotations

import json

from ...files import SetupStep
from ...model import Inventory
from ..pgbackrest import INFO_SUCCESS_METRIC, LAST_BACKUP_METRIC, REPO_SIZE_METRIC
from .alertmanager import (
    ALERTMANAGER_CREDENTIALS,
    ALERTMANAGER_PLACEHOLDERS,
    ASSEMBLER_SOURCE,
    alertmanager_args,
    alertmanager_assembler,
    alertmanager_config,
    alertmanager_dropin,
)
from .common import (
    ALERTMANAGER_PORT,
    ALERTMANAGER_UNIT,
    APP_METRICS_PORT,
    APP_METRICS_TASKS,
    DEFAULT_PATHS,
    ETCD_METRICS_PORT,
    GRAFANA_PORT,
    GRAFANA_UNIT,
    PATRONI_REST_PORT,
    POSTGRES_EXPORTER_PORT,
    PROMETHEUS_PORT,
    REDIS_EXPORTER_PORT,
    AlertingSettings,
    Endpoints,
    MonitoringPaths,
    MonitoringSecrets,
    MonitoringView,
    main_view,
    monitoring_server,
    second_monitoring_server,
    second_view,
    view_of,
)
from .grafana import (
    DASHBOARD_PANELS,
    GRAFANA_CREDENTIALS,
    GRAFANA_DATASOURCE_UID,
    grafana_dashboard,
    grafana_dashboard_provider,
    grafana_datasources,
    grafana_dropin,
    grafana_ini,
)
from .metrics import (
    APP_METRIC_ABSENT_FOR,
    BACKUP_REPO_SIZE_ALERT_BYTES,
    BUILTIN_WAL_RETAINED_METRIC,
    CACHE_HIT_RATIO_MIN,
    CATALOG_CACHE_HIT_RATIO_METRIC,
    CATALOG_CACHE_HIT_RATIO_MIN,
    DAY,
    DIFF_BACKUP_MAX_AGE_SECONDS,
    DISK_USAGE_ALERT_PERCENT,
    EMBEDDING_INDEX_METRIC,
    EMBEDDING_INDEX_SPLIT_BYTES,
    ETCD_PEER_RTT_ALERT_SECONDS,
    FULL_BACKUP_MAX_AGE_SECONDS,
    GIB,
    HEARTBEAT_REPEAT_INTERVAL,
    POSTHOG_DATA_MOUNTPOINT,
    POSTHOG_DISK_USAGE_ALERT_PERCENT,
    POSTHOG_DISK_USAGE_METRIC,
    POSTHOG_EVENTS_INGESTED_METRIC,
    POSTHOG_INGESTION_IDLE,
    POSTHOG_METRICS_UNIT,
    POSTHOG_QUERY_LATENCY_P95_MAX_SECONDS,
    POSTHOG_QUERY_LATENCY_P95_METRIC,
    PROMETHEUS_BLOCKS_DISK_FRACTION,
    PROMETHEUS_DATA_MOUNTPOINT,
    PROMETHEUS_HEAD_SERIES_MAX,
    REAL_FILESYSTEMS,
    REDIS_MEMORY_ALERT_FRACTION,
    REPLICATION_LAG_CRITICAL_BYTES,
    REPLICATION_LAG_METRIC,
    REPLICATION_LAG_WARNING_BYTES,
    REPLICATION_LAG_WARNING_FRACTION,
    ROUTING_CACHE_MISS_RATE_MAX,
    ROUTING_CACHE_MISS_RATE_METRIC,
    SHARD_CACHE_HIT_RATIO_METRIC,
    SHARD_DISK_USAGE_METRIC,
    SITE_RTT_MS,
    TUNNEL_COLLECTOR_INTERVAL_SECONDS,
    TUNNEL_COLLECTOR_STALE_SECONDS,
    TUNNEL_PING_COUNT,
    VPN_HANDSHAKE_STALE_SECONDS,
    VPN_RTT_ALERT_MS,
    VPN_TUNNEL_HANDSHAKE_AGE_METRIC,
    VPN_TUNNEL_RTT_METRIC,
    VPN_TUNNEL_UP_METRIC,
    WAL_ACCUMULATION_ALERT_BYTES,
    WAL_RETAINED_METRIC,
)
from .prometheus import (
    HELSINKI_GATEWAY_JOB,
    PEER_ALERTMANAGER_JOB,
    PEER_PROMETHEUS_JOB,
    RETENTION,
    SCRAPE_INTERVAL,
    SCRAPE_JOBS,
    TARGET_REFRESH_INTERVAL,
    ScrapeJob,
    TargetAddress,
    _default_address,
    _defaults_file,
    file_sd_targets,
    prometheus_args,
    prometheus_config,
    target_labels,
)
from .rules import (
    ALSO_SENT_BY,
    APP_METRIC_CONTRACT,
    MAIN_PATH_HEALTHY,
    PEER_JOBS,
    POSTHOG_SELECTOR,
    ROUTING_WATCHER_STALE_SECONDS,
    RULE_FILES,
    Alert,
    alerts,
    recording_rules,
    rule_files,
)
from .tunnels import (
    TUNNEL_COLLECTOR_SOURCE,
    TUNNEL_COLLECTOR_UNIT,
    TUNNEL_METRICS_FILE,
    tunnel_collector_files,
    tunnel_collector_settings,
    tunnels_seen_from,
)

__all__ = [
    "ALSO_SENT_BY",
    "HELSINKI_GATEWAY_JOB",
    "MAIN_PATH_HEALTHY",
    "MonitoringView",
    "PEER_ALERTMANAGER_JOB",
    "PEER_PROMETHEUS_JOB",
    "PEER_JOBS",
    "POSTHOG_SELECTOR",
    "ROUTING_WATCHER_STALE_SECONDS",
    "main_view",
    "second_monitoring_server",
    "second_view",
    "view_of",
    "ALERTMANAGER_CREDENTIALS",
    "ALERTMANAGER_PLACEHOLDERS",
    "ALERTMANAGER_PORT",
    "ALERTMANAGER_UNIT",
    "APP_METRICS_PORT",
    "APP_METRICS_TASKS",
    "APP_METRIC_ABSENT_FOR",
    "APP_METRIC_CONTRACT",
    "ASSEMBLER_SOURCE",
    "Alert",
    "AlertingSettings",
    "BACKUP_REPO_SIZE_ALERT_BYTES",
    "BUILTIN_WAL_RETAINED_METRIC",
    "CACHE_HIT_RATIO_MIN",
    "CATALOG_CACHE_HIT_RATIO_METRIC",
    "CATALOG_CACHE_HIT_RATIO_MIN",
    "DASHBOARD_PANELS",
    "DAY",
    "DEFAULT_PATHS",
    "DIFF_BACKUP_MAX_AGE_SECONDS",
    "DISK_USAGE_ALERT_PERCENT",
    "EMBEDDING_INDEX_METRIC",
    "EMBEDDING_INDEX_SPLIT_BYTES",
    "ETCD_METRICS_PORT",
    "ETCD_PEER_RTT_ALERT_SECONDS",
    "Endpoints",
    "FULL_BACKUP_MAX_AGE_SECONDS",
    "GIB",
    "GRAFANA_CREDENTIALS",
    "GRAFANA_DATASOURCE_UID",
    "GRAFANA_PORT",
    "GRAFANA_UNIT",
    "HEARTBEAT_REPEAT_INTERVAL",
    "INFO_SUCCESS_METRIC",
    "LAST_BACKUP_METRIC",
    "MonitoringPaths",
    "MonitoringSecrets",
    "PATRONI_REST_PORT",
    "POSTGRES_EXPORTER_PORT",
    "POSTHOG_DATA_MOUNTPOINT",
    "POSTHOG_DISK_USAGE_ALERT_PERCENT",
    "POSTHOG_DISK_USAGE_METRIC",
    "POSTHOG_EVENTS_INGESTED_METRIC",
    "POSTHOG_INGESTION_IDLE",
    "POSTHOG_METRICS_UNIT",
    "POSTHOG_QUERY_LATENCY_P95_MAX_SECONDS",
    "POSTHOG_QUERY_LATENCY_P95_METRIC",
    "PROMETHEUS_BLOCKS_DISK_FRACTION",
    "PROMETHEUS_DATA_MOUNTPOINT",
    "PROMETHEUS_HEAD_SERIES_MAX",
    "PROMETHEUS_PORT",
    "REAL_FILESYSTEMS",
    "REDIS_EXPORTER_PORT",
    "REDIS_MEMORY_ALERT_FRACTION",
    "REPLICATION_LAG_CRITICAL_BYTES",
    "REPLICATION_LAG_METRIC",
    "REPLICATION_LAG_WARNING_BYTES",
    "REPLICATION_LAG_WARNING_FRACTION",
    "REPO_SIZE_METRIC",
    "RETENTION",
    "ROUTING_CACHE_MISS_RATE_MAX",
    "ROUTING_CACHE_MISS_RATE_METRIC",
    "RULE_FILES",
    "SCRAPE_INTERVAL",
    "SCRAPE_JOBS",
    "SHARD_CACHE_HIT_RATIO_METRIC",
    "SHARD_DISK_USAGE_METRIC",
    "SITE_RTT_MS",
    "ScrapeJob",
    "TARGET_REFRESH_INTERVAL",
    "TUNNEL_COLLECTOR_INTERVAL_SECONDS",
    "TUNNEL_COLLECTOR_SOURCE",
    "TUNNEL_COLLECTOR_STALE_SECONDS",
    "TUNNEL_COLLECTOR_UNIT",
    "TUNNEL_METRICS_FILE",
    "TUNNEL_PING_COUNT",
    "TargetAddress",
    "VPN_HANDSHAKE_STALE_SECONDS",
    "VPN_RTT_ALERT_MS",
    "VPN_TUNNEL_HANDSHAKE_AGE_METRIC",
    "VPN_TUNNEL_RTT_METRIC",
    "VPN_TUNNEL_UP_METRIC",
    "WAL_ACCUMULATION_ALERT_BYTES",
    "WAL_RETAINED_METRIC",
    "alertmanager_args",
    "alertmanager_assembler",
    "alertmanager_config",
    "alertmanager_dropin",
    "alerts",
    "file_sd_targets",
    "grafana_dashboard",
    "grafana_dashboard_provider",
    "grafana_datasources",
    "grafana_dropin",
    "grafana_ini",
    "monitoring_files",
    "monitoring_setup",
    "GRAFANA_KEYRING",
    "MONITORING_SERVICES",
    "monitoring_secret_files",
    "monitoring_server",
    "prometheus_args",
    "prometheus_config",
    "recording_rules",
    "rule_files",
    "target_labels",
    "tunnel_collector_files",
    "tunnel_collector_settings",
    "tunnels_seen_from",
]


# --------------------------------------------------------------------------------------------
# Everything the monitoring server receives


def monitoring_files(
    inventory: Inventory,
    settings: AlertingSettings,
    *,
    paths: MonitoringPaths = DEFAULT_PATHS,
    endpoints: Endpoints | None = None,
    target_address: TargetAddress = _default_address,
    view: MonitoringView | None = None,
) -> dict[str, str]:
    """Every non-secret file of one monitoring server (`view`; default: the main path in
    Helsinki), keyed by absolute path. The second path runs Prometheus and Alertmanager only.

    `paths` relocates the whole tree (tests); `endpoints` the listen addresses (default: the
    monitoring server's private address); `target_address(server, port)` the scrape addresses
    (default: the server's private address)."""
    view = view or main_view(inventory)
    endpoints = endpoints or Endpoints.of(view.server)
    files: dict[str, str] = {
        paths.prometheus_config: prometheus_config(inventory, paths, endpoints, view, target_address),
        paths.prometheus_defaults: _defaults_file(
            prometheus_args(paths, endpoints), "Prometheus: 30-day retention is a command-line flag."
        ),
        paths.alertmanager_config: alertmanager_config(settings, paths, view),
        paths.alertmanager_defaults: _defaults_file(
            alertmanager_args(paths, endpoints),
            "Alertmanager reads the runtime copy that alertmanager-config writes at start.",
        ),
        **alertmanager_assembler(paths),
        paths.alertmanager_dropin: alertmanager_dropin(paths),
    }
    if view.main:
        files.update({
            paths.grafana_ini: grafana_ini(paths, endpoints),
            f"{paths.grafana_provisioning}/datasources/unde.yaml": grafana_datasources(endpoints),
            f"{paths.grafana_provisioning}/dashboards/unde.yaml": grafana_dashboard_provider(paths),
            f"{paths.grafana_dashboards}/overview.json": grafana_dashboard(),
            paths.grafana_dropin: grafana_dropin(paths),
        })
    for job, groups in file_sd_targets(inventory, target_address=target_address, view=view).items():
        files[f"{paths.file_sd_dir}/{job}.json"] = json.dumps(groups, indent=2) + "\n"
    for name, text in rule_files(inventory, view).items():
        files[f"{paths.rules_dir}/{name}"] = text
    return files


GRAFANA_KEYRING = "/etc/apt/keyrings/grafana.gpg"
MONITORING_SERVICES = ("prometheus", "prometheus-alertmanager", "grafana-server")


def monitoring_setup(paths: MonitoringPaths = DEFAULT_PATHS, grafana: bool = True) -> SetupStep:
    """files/monitoring_setup.sh: Debian's Prometheus and Alertmanager, Grafana from its own apt
    repository (the main path only), prometheus.yml checked by promtool before anything reloads."""
    # Alerting's services; Grafana's, where it runs, the script handles after them.
    services = tuple(s for s in MONITORING_SERVICES if s != "grafana-server")
    return SetupStep("/usr/local/lib/unde/monitoring-setup", "monitoring_setup.sh", {
        "GRAFANA_KEY_URL": "https://apt.grafana.com/gpg.key" if grafana else "", "GRAFANA_KEYRING": GRAFANA_KEYRING,
        "GRAFANA_SOURCE": f"deb [signed-by={GRAFANA_KEYRING}] https://apt.grafana.com stable main" if grafana else "",
        "PROMETHEUS_CONFIG": paths.prometheus_config, "SERVICES": " ".join(services),
    })


def monitoring_secret_files(secrets: MonitoringSecrets, *, paths: MonitoringPaths = DEFAULT_PATHS) -> dict[str, str]:
    """SECRET: the secret files of the monitoring server, keyed by absolute path. Deliver them
    root:root 0600 (in a 0700 directory); systemd's LoadCredential hands each one to its service."""
    return {paths.secret(name): value + "\n" for name, value in secrets.values().items()}


