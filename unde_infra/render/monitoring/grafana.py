"""Grafana provisioning: data source, dashboards provider, one dashboard, the admin password
through a systemd credential."""

from __future__ import annotations

import configparser
import io
import json

from ..cloud_init import dump_yaml
from .common import GRAFANA_UNIT, Endpoints, MonitoringPaths, _credential_lines
from .metrics import (
    CACHE_HIT_RATIO_MIN,
    CATALOG_CACHE_HIT_RATIO_METRIC,
    CATALOG_CACHE_HIT_RATIO_MIN,
    DISK_USAGE_ALERT_PERCENT,
    EMBEDDING_INDEX_METRIC,
    EMBEDDING_INDEX_SPLIT_BYTES,
    POSTHOG_DISK_USAGE_ALERT_PERCENT,
    POSTHOG_DISK_USAGE_METRIC,
    POSTHOG_EVENTS_INGESTED_METRIC,
    POSTHOG_QUERY_LATENCY_P95_MAX_SECONDS,
    POSTHOG_QUERY_LATENCY_P95_METRIC,
    PROMETHEUS_HEAD_SERIES_MAX,
    REDIS_MEMORY_ALERT_FRACTION,
    REPLICATION_LAG_CRITICAL_BYTES,
    REPLICATION_LAG_METRIC,
    ROUTING_CACHE_MISS_RATE_MAX,
    ROUTING_CACHE_MISS_RATE_METRIC,
    SHARD_CACHE_HIT_RATIO_METRIC,
    SHARD_DISK_USAGE_METRIC,
    VPN_HANDSHAKE_STALE_SECONDS,
    VPN_RTT_ALERT_MS,
    VPN_TUNNEL_HANDSHAKE_AGE_METRIC,
    VPN_TUNNEL_RTT_METRIC,
    VPN_TUNNEL_UP_METRIC,
    WAL_ACCUMULATION_ALERT_BYTES,
    WAL_RETAINED_METRIC,
)
from .prometheus import SCRAPE_INTERVAL

GRAFANA_DATASOURCE_UID = "unde-prometheus"


GRAFANA_CREDENTIALS = {"admin_password": "grafana_admin_password"}


def grafana_ini(paths: MonitoringPaths, endpoints: Endpoints) -> str:
    ini = configparser.ConfigParser(interpolation=None)
    ini["paths"] = {"provisioning": paths.grafana_provisioning}
    ini["server"] = {"http_addr": endpoints.grafana_host, "http_port": str(endpoints.grafana_port)}
    ini["security"] = {
        "admin_user": "admin",
        # Grafana expands $__file{} when it reads the file: the password never is in grafana.ini.
        # It applies when Grafana creates its database; later rotations use grafana-cli.
        "admin_password": f"$__file{{{paths.credential(GRAFANA_UNIT, 'admin_password')}}}",
        "disable_gravatar": "true",
        "cookie_secure": "false",
    }
    ini["users"] = {"allow_sign_up": "false"}
    ini["auth.anonymous"] = {"enabled": "false"}
    ini["analytics"] = {"reporting_enabled": "false", "check_for_updates": "false"}
    out = io.StringIO()
    out.write("; Rendered by unde-infra; edits are overwritten.\n")
    ini.write(out)
    return out.getvalue()


def grafana_datasources(endpoints: Endpoints) -> str:
    return dump_yaml(
        {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Prometheus",
                    "uid": GRAFANA_DATASOURCE_UID,
                    "type": "prometheus",
                    "access": "proxy",
                    "url": f"http://{endpoints.prometheus}",
                    "isDefault": True,
                    "editable": False,
                    "jsonData": {"timeInterval": SCRAPE_INTERVAL},
                }
            ],
        }
    )


def grafana_dashboard_provider(paths: MonitoringPaths) -> str:
    return dump_yaml(
        {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "unde",
                    "folder": "UNDE",
                    "type": "file",
                    "disableDeletion": True,
                    "allowUiUpdates": False,
                    "options": {"path": paths.grafana_dashboards},
                }
            ],
        }
    )


# (title, PromQL, unit, threshold or None): SPEC's key metrics, one panel each.
DASHBOARD_PANELS: tuple[tuple[str, str, str, float | None], ...] = (
    ("Targets up by site and job", "sum by (site, job) (up)", "short", None),
    ("WireGuard tunnel up", f"min by (tunnel) ({VPN_TUNNEL_UP_METRIC})", "short", None),
    ("WireGuard tunnel RTT", f"max by (tunnel) ({VPN_TUNNEL_RTT_METRIC})", "ms", VPN_RTT_ALERT_MS),
    (
        "WireGuard handshake age",
        f"max by (tunnel) ({VPN_TUNNEL_HANDSHAKE_AGE_METRIC})",
        "s",
        VPN_HANDSHAKE_STALE_SECONDS,
    ),
    ("Shard disk usage", SHARD_DISK_USAGE_METRIC, "percent", DISK_USAGE_ALERT_PERCENT),
    ("Shard cache hit ratio", SHARD_CACHE_HIT_RATIO_METRIC, "percentunit", CACHE_HIT_RATIO_MIN),
    ("Embedding index size (split trigger)", EMBEDDING_INDEX_METRIC, "bytes", EMBEDDING_INDEX_SPLIT_BYTES),
    ("WAL retained per slot", WAL_RETAINED_METRIC, "bytes", WAL_ACCUMULATION_ALERT_BYTES),
    ("Replication lag vs maximum_lag_on_failover", REPLICATION_LAG_METRIC, "bytes", REPLICATION_LAG_CRITICAL_BYTES),
    ("etcd has leader", 'etcd_server_has_leader{job="etcd"}', "short", None),
    ("Redis memory used", "redis_memory_used_bytes / (redis_memory_max_bytes > 0)", "percentunit",
     REDIS_MEMORY_ALERT_FRACTION),
    ("PostHog disk usage", POSTHOG_DISK_USAGE_METRIC, "percent", POSTHOG_DISK_USAGE_ALERT_PERCENT),
    ("Shard routing cache miss rate", f"max by (server) ({ROUTING_CACHE_MISS_RATE_METRIC})", "percentunit",
     ROUTING_CACHE_MISS_RATE_MAX),
    ("Catalog cache hit ratio", f"min by (server) ({CATALOG_CACHE_HIT_RATIO_METRIC})", "percentunit",
     CATALOG_CACHE_HIT_RATIO_MIN),
    ("PostHog events ingested per minute", f"60 * rate({POSTHOG_EVENTS_INGESTED_METRIC}[5m])", "short", None),
    ("PostHog query latency p95", POSTHOG_QUERY_LATENCY_P95_METRIC, "s", POSTHOG_QUERY_LATENCY_P95_MAX_SECONDS),
    ("Prometheus head series", 'prometheus_tsdb_head_series{job="prometheus"}', "short", PROMETHEUS_HEAD_SERIES_MAX),
    ("Alertmanager failed notifications",
     'sum by (integration) (increase(alertmanager_notifications_failed_total{job="alertmanager"}[10m]))',
     "short", None),
)


def grafana_dashboard() -> str:
    datasource = {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID}
    panels = []
    for i, (title, expr, unit, threshold) in enumerate(DASHBOARD_PANELS):
        steps: list[dict[str, object]] = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {
                    "defaults": {
                        "unit": unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "custom": {"thresholdsStyle": {"mode": "line" if threshold is not None else "off"}},
                    },
                    "overrides": [],
                },
                "targets": [{"refId": "A", "datasource": datasource, "expr": expr, "legendFormat": "__auto"}],
            }
        )
    dashboard = {
        "uid": "unde-overview",
        "title": "UNDE overview",
        "tags": ["unde"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }
    return json.dumps(dashboard, indent=2) + "\n"


def grafana_dropin(paths: MonitoringPaths) -> str:
    lines = [
        "# Rendered by unde-infra: the admin password for Grafana through a systemd credential.",
        "[Service]",
        *_credential_lines(GRAFANA_CREDENTIALS, paths),
        "",
    ]
    return "\n".join(lines)


