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

import configparser
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..model import LOCAL, Inventory, Server
from ..timings import MAXIMUM_LAG_ON_FAILOVER_BYTES
from .cloud_init import NODE_EXPORTER_PORT, SECRETS_DIR, dump_yaml
from .pgbackrest import INFO_SUCCESS_METRIC, LAST_BACKUP_METRIC, REPO_SIZE_METRIC
from .systemd import timer_unit

# --------------------------------------------------------------------------------------------
# Ports and intervals

POSTGRES_EXPORTER_PORT = 9187
REDIS_EXPORTER_PORT = 9121
# SPEC: "etcd :2379". etcd serves /metrics on its client URL; if the HA renderer ever moves the
# client port to TLS-only, this becomes the plain-HTTP --listen-metrics-urls port (2381).
ETCD_METRICS_PORT = 2379
PATRONI_REST_PORT = 8008
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
GRAFANA_PORT = 3000

SCRAPE_INTERVAL = "15s"  # SPEC
RETENTION = "30d"  # SPEC: Prometheus 30-day retention
TARGET_REFRESH_INTERVAL = "1m"

# --------------------------------------------------------------------------------------------
# Metric names this module agrees on with other renderers.

# postgres_exporter custom queries (rendered by unde_infra/render/postgres_exporter.py): the
# exporter names a metric `<query key>_<column>`; the unit tests check both sides agree.
EMBEDDING_INDEX_METRIC = "unde_embedding_index_size_bytes"
WAL_RETAINED_METRIC = "unde_replication_slot_retained_wal_bytes"
# Built into postgres_exporter 0.11 (Debian 12): the same per-slot retention, so the WAL alert
# still works where the custom query is not deployed (production-db, staging-db).
BUILTIN_WAL_RETAINED_METRIC = "pg_replication_slots_pg_wal_lsn_diff"
# Written by the tunnel collector below (names from SPEC's table plus the handshake age).
VPN_TUNNEL_UP_METRIC = "vpn_tunnel_up"
VPN_TUNNEL_RTT_METRIC = "vpn_tunnel_rtt_ms"
VPN_TUNNEL_HANDSHAKE_AGE_METRIC = "vpn_tunnel_handshake_age_seconds"
# Recording rules named after SPEC's table, so dashboards and alerts speak the plan's language.
SHARD_DISK_USAGE_METRIC = "local_shard_disk_usage_percent"
SHARD_CACHE_HIT_RATIO_METRIC = "local_shard_cache_hit_ratio"
POSTHOG_DISK_USAGE_METRIC = "posthog_clickhouse_disk_usage"
REPLICATION_LAG_METRIC = "unde:shard_replication_lag:bytes"

# --------------------------------------------------------------------------------------------
# Thresholds. Every alert threshold is one of these or derived from one.

GIB = 1024**3
SITE_RTT_MS = 120  # SPEC: Helsinki <-> local RTT baseline
# SPEC's 200 ms leaves 80 ms above the 120 ms baseline, so it does not fire on a healthy link;
# with `for: 5m` a burst of jitter does not page either.
VPN_RTT_ALERT_MS = 200
# WireGuard's REJECT_AFTER_TIME: session keys older than this are dropped, so a handshake older
# than 180 s means no traffic can cross. With a 25 s keepalive a healthy tunnel re-handshakes
# every ~2 min (REKEY_AFTER_TIME = 120 s).
VPN_HANDSHAKE_STALE_SECONDS = 180
TUNNEL_COLLECTOR_INTERVAL_SECONDS = 30
TUNNEL_COLLECTOR_STALE_SECONDS = 10 * TUNNEL_COLLECTOR_INTERVAL_SECONDS
TUNNEL_PING_COUNT = 3
DISK_USAGE_ALERT_PERCENT = 80  # SPEC: local_shard_disk_usage_percent > 80%
CACHE_HIT_RATIO_MIN = 0.90  # SPEC: local_shard_cache_hit_ratio < 90% (cold cache)
EMBEDDING_INDEX_SPLIT_BYTES = 20 * GIB  # SPEC: split trigger, pg_relation_size > 20 GB
WAL_ACCUMULATION_ALERT_BYTES = 20 * GIB  # SPEC: WAL on a primary > 20 GB (Helsinki down)
# Patroni does not promote a replica lagging more than MAXIMUM_LAG_ON_FAILOVER_BYTES: warn at
# half of it, so there is time to act before a failover would be refused.
REPLICATION_LAG_WARNING_FRACTION = 0.5
REPLICATION_LAG_WARNING_BYTES = int(MAXIMUM_LAG_ON_FAILOVER_BYTES * REPLICATION_LAG_WARNING_FRACTION)
REPLICATION_LAG_CRITICAL_BYTES = MAXIMUM_LAG_ON_FAILOVER_BYTES
REDIS_MEMORY_ALERT_FRACTION = 0.80  # SPEC: scale Redis out at memory > 80%
POSTHOG_DISK_USAGE_ALERT_PERCENT = 80  # SPEC: posthog_clickhouse_disk_usage > 80%
PROMETHEUS_HEAD_SERIES_MAX = 500_000  # SPEC: prometheus_tsdb_head_series > 500K
PROMETHEUS_BLOCKS_DISK_FRACTION = 0.80  # SPEC: prometheus_tsdb_storage_blocks_bytes > 80% disk
PROMETHEUS_DATA_MOUNTPOINT = "/"  # /var/lib/prometheus lives on the root filesystem of a CX33
# The etcd mixin alerts when p99 peer RTT > 0.15 s: across sites the baseline is already 0.12 s,
# so that would fire all the time. Twice the site RTT means the link really degraded.
ETCD_PEER_RTT_ALERT_SECONDS = 2 * SITE_RTT_MS / 1000
# A Watchdog notification every minute; the heartbeat service alerts when they stop.
HEARTBEAT_REPEAT_INTERVAL = "1m"

DAY = 86400
# Backups (render/pgbackrest.BACKUP_SCHEDULE): a full every week, a diff every other day, each
# started within 30 min of 02:30 and running for up to a few hours.
FULL_BACKUP_MAX_AGE_SECONDS = 8 * DAY
DIFF_BACKUP_MAX_AGE_SECONDS = 30 * 3600
# Hetzner Object Storage's base price includes 1 TB; past it every TB costs extra.
BACKUP_REPO_SIZE_ALERT_BYTES = 1024**4

REAL_FILESYSTEMS = "ext4|xfs|btrfs"

# --------------------------------------------------------------------------------------------
# Settings and secrets


@dataclass(frozen=True)
class AlertingSettings:
    """Non-secret alerting settings (stack config)."""

    telegram_chat_id: int
    slack_channel: str
    # Overridable so that the integration test keeps every notification on loopback.
    telegram_api_url: str = "https://api.telegram.org"


@dataclass(frozen=True)
class MonitoringSecrets:
    """Secret values; `repr` hides them so that they never reach a log or a test report."""

    grafana_admin_password: str = field(repr=False)
    telegram_bot_token: str = field(repr=False)
    slack_webhook_url: str = field(repr=False)
    # A dead man's switch service (e.g. a healthchecks.io ping URL): capability URLs are secrets.
    heartbeat_url: str = field(repr=False)

    def values(self) -> dict[str, str]:
        return {
            "grafana_admin_password": self.grafana_admin_password,
            "telegram_bot_token": self.telegram_bot_token,
            "slack_webhook_url": self.slack_webhook_url,
            "heartbeat_url": self.heartbeat_url,
        }


ALERTMANAGER_UNIT = "prometheus-alertmanager.service"
GRAFANA_UNIT = "grafana-server.service"
# Which service gets which secret (name of the credential -> name of the secret file).
ALERTMANAGER_CREDENTIALS = {
    "telegram_bot_token": "telegram_bot_token",
    "slack_webhook_url": "slack_webhook_url",
    "heartbeat_url": "heartbeat_url",
}
GRAFANA_CREDENTIALS = {"admin_password": "grafana_admin_password"}
# Alertmanager 0.25 (Debian 12) reads only Slack's URL from a file (`api_url_file`);
# `bot_token_file` and webhook `url_file` arrived in 0.26, and amtool 0.25 rejects them. These
# two are filled in at service start from systemd credentials into a runtime copy of the config
# (tmpfs, readable only by the service user); the rendered alertmanager.yml holds placeholders.
# The URL placeholder must be a valid URL, because amtool checks the template too.
ALERTMANAGER_PLACEHOLDERS = {
    "telegram_bot_token": "unde-secret-telegram-bot-token",
    "heartbeat_url": "https://unde-secret.invalid/heartbeat-url",
}


@dataclass(frozen=True)
class MonitoringPaths:
    """Where each file lives on the monitoring server. `root` prefixes every absolute path, so
    that tests put the whole tree, with consistent cross-references, under a temp dir."""

    root: str = "/"

    def _p(self, path: str) -> str:
        return str(PurePosixPath(self.root) / path.lstrip("/"))

    # Prometheus (Debian package layout)
    @property
    def prometheus_config(self) -> str:
        return self._p("/etc/prometheus/prometheus.yml")

    @property
    def prometheus_defaults(self) -> str:
        return self._p("/etc/default/prometheus")

    @property
    def prometheus_storage(self) -> str:
        return self._p("/var/lib/prometheus/metrics2")

    @property
    def file_sd_dir(self) -> str:
        return self._p("/etc/prometheus/file_sd")

    @property
    def rules_dir(self) -> str:
        return self._p("/etc/prometheus/rules")

    # Alertmanager
    @property
    def alertmanager_config(self) -> str:
        return self._p("/etc/prometheus/alertmanager.yml")

    @property
    def alertmanager_runtime_config(self) -> str:
        return self._p("/run/prometheus-alertmanager/alertmanager.yml")

    @property
    def alertmanager_defaults(self) -> str:
        return self._p("/etc/default/prometheus-alertmanager")

    @property
    def alertmanager_storage(self) -> str:
        return self._p("/var/lib/prometheus/alertmanager")

    @property
    def alertmanager_assembler(self) -> str:
        return self._p("/usr/local/lib/unde/alertmanager-config")

    @property
    def alertmanager_dropin(self) -> str:
        return self._p(f"/etc/systemd/system/{ALERTMANAGER_UNIT}.d/unde-secrets.conf")

    # Grafana
    @property
    def grafana_ini(self) -> str:
        return self._p("/etc/grafana/grafana.ini")

    @property
    def grafana_provisioning(self) -> str:
        return self._p("/etc/grafana/provisioning")

    @property
    def grafana_dashboards(self) -> str:
        return self._p("/etc/grafana/dashboards/unde")

    @property
    def grafana_dropin(self) -> str:
        return self._p(f"/etc/systemd/system/{GRAFANA_UNIT}.d/unde-secrets.conf")

    # Secrets: root-only sources, and where systemd exposes them to one service.
    @property
    def secrets_dir(self) -> str:
        return self._p(f"{SECRETS_DIR}/monitoring")

    def secret(self, name: str) -> str:
        return f"{self.secrets_dir}/{name}"

    def credential(self, unit: str, name: str) -> str:
        return self._p(f"/run/credentials/{unit}/{name}")

    # Tunnel collector (on the servers with tunnels)
    @property
    def textfile_dir(self) -> str:
        return self._p("/var/lib/prometheus/node-exporter")  # Debian node_exporter's default

    @property
    def tunnel_collector(self) -> str:
        return self._p("/usr/local/lib/unde/vpn-tunnel-collector")


@dataclass(frozen=True)
class Endpoints:
    """Listen addresses (host:port) of the monitoring services. Production binds them to the
    monitoring server's private address: never on its public interface."""

    prometheus: str
    alertmanager: str
    grafana_host: str
    grafana_port: int = GRAFANA_PORT

    @classmethod
    def of(cls, server: Server) -> Endpoints:
        return cls(f"{server.ip}:{PROMETHEUS_PORT}", f"{server.ip}:{ALERTMANAGER_PORT}", str(server.ip))


def monitoring_server(inventory: Inventory) -> Server:
    return next(s for s in inventory.servers.values() if s.task == "monitoring")


# --------------------------------------------------------------------------------------------
# Targets


TargetAddress = Callable[[Server, int], str]


def _default_address(server: Server, port: int) -> str:
    return f"{server.ip}:{port}"


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    port: int
    selects: Callable[[Server, Inventory], bool]
    metrics_path: str = "/metrics"


def _is_etcd_member(server: Server, inventory: Inventory) -> bool:
    # Placement decides: under `plan`, etcd-2 is a container on shard-replica-0, whose task is not etcd.
    return any(member.host.name == server.name for member in inventory.etcd)


SCRAPE_JOBS: tuple[ScrapeJob, ...] = (
    ScrapeJob("node", NODE_EXPORTER_PORT, lambda s, inv: True),
    ScrapeJob("postgres", POSTGRES_EXPORTER_PORT, lambda s, inv: "postgres" in s.services),
    ScrapeJob("redis", REDIS_EXPORTER_PORT, lambda s, inv: "redis" in s.services),
    ScrapeJob("etcd", ETCD_METRICS_PORT, _is_etcd_member),
    ScrapeJob("patroni", PATRONI_REST_PORT, lambda s, inv: "patroni" in s.services),
)


def target_labels(server: Server) -> dict[str, str]:
    """Labels every series of a server carries: SPEC's site/task/shard plus the server name.
    `shard` is empty (so absent in Prometheus) on servers outside a shard."""
    return {"server": server.name, "site": server.site, "task": server.task, "shard": server.labels.get("shard", "")}


def file_sd_targets(
    inventory: Inventory, *, target_address: TargetAddress = _default_address
) -> dict[str, list[dict[str, object]]]:
    """Job name -> file_sd target groups (one group per server, so each carries its labels)."""
    jobs: dict[str, list[dict[str, object]]] = {}
    for job in SCRAPE_JOBS:
        groups: list[dict[str, object]] = []
        for server in sorted(inventory.servers.values(), key=lambda s: s.name):
            if job.selects(server, inventory):
                labels = {k: v for k, v in target_labels(server).items() if v}
                groups.append({"targets": [target_address(server, job.port)], "labels": labels})
        jobs[job.name] = groups
    return jobs


# --------------------------------------------------------------------------------------------
# Prometheus


def prometheus_config(inventory: Inventory, paths: MonitoringPaths, endpoints: Endpoints) -> str:
    monitoring = {k: v for k, v in target_labels(monitoring_server(inventory)).items() if v}
    # Instance = server name: alerts and dashboards read "local-shard-0", not "10.2.0.10:9187".
    instance_from_server = [{"source_labels": ["server"], "target_label": "instance"}]
    scrape_configs: list[dict[str, object]] = [
        {
            "job_name": job.name,
            "metrics_path": job.metrics_path,
            "file_sd_configs": [
                {"files": [f"{paths.file_sd_dir}/{job.name}.json"], "refresh_interval": TARGET_REFRESH_INTERVAL}
            ],
            "relabel_configs": instance_from_server,
        }
        for job in SCRAPE_JOBS
    ]
    for name, address in (("prometheus", endpoints.prometheus), ("alertmanager", endpoints.alertmanager)):
        scrape_configs.append(
            {
                "job_name": name,
                "static_configs": [{"targets": [address], "labels": monitoring}],
                "relabel_configs": instance_from_server,
            }
        )
    config = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
            "external_labels": {"monitor": "unde"},
        },
        "rule_files": [f"{paths.rules_dir}/{name}" for name in RULE_FILES],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [endpoints.alertmanager]}]}]},
        "scrape_configs": scrape_configs,
    }
    return dump_yaml(config)


def prometheus_args(paths: MonitoringPaths, endpoints: Endpoints) -> list[str]:
    return [
        f"--config.file={paths.prometheus_config}",
        f"--storage.tsdb.path={paths.prometheus_storage}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={endpoints.prometheus}",
    ]


def _defaults_file(args: list[str], why: str) -> str:
    # Read by the Debian unit as EnvironmentFile and split on whitespace; no argument has spaces.
    return f"# {why}\n# Rendered by unde-infra; edits are overwritten.\nARGS=\"{' '.join(args)}\"\n"


# --------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_: str = "0s"

    def rule(self) -> dict[str, object]:
        rule: dict[str, object] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0s":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        return rule


def _fmt(value: float) -> str:
    """A threshold as PromQL text: integers without a trailing .0."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _gib(value: int) -> str:
    return f"{value / GIB:g} GiB"


def _disk_usage_percent(selector: str) -> str:
    return (
        f'100 * (1 - node_filesystem_avail_bytes{{{selector}, fstype=~"{REAL_FILESYSTEMS}"}}'
        f' / node_filesystem_size_bytes{{{selector}, fstype=~"{REAL_FILESYSTEMS}"}})'
    )


def recording_rules() -> list[dict[str, object]]:
    by = "server, site, task, shard"
    shard_pg = 'job="postgres", task="shard"'
    return [
        {
            "name": "unde-recording",
            "rules": [
                {"record": SHARD_DISK_USAGE_METRIC, "expr": _disk_usage_percent('job="node", task="shard"')},
                {
                    # A 5-minute window (not the cumulative ratio since the stats reset) so that a
                    # cold cache after a restart or failover shows up, and recovers, in the ratio.
                    "record": SHARD_CACHE_HIT_RATIO_METRIC,
                    "expr": (
                        f"sum by ({by}) (rate(pg_stat_database_blks_hit{{{shard_pg}}}[5m]))"
                        f" / (sum by ({by}) (rate(pg_stat_database_blks_hit{{{shard_pg}}}[5m]))"
                        f" + sum by ({by}) (rate(pg_stat_database_blks_read{{{shard_pg}}}[5m])))"
                    ),
                },
                {
                    # ClickHouse runs on the single PostHog server, so its disk is the server's disk.
                    "record": POSTHOG_DISK_USAGE_METRIC,
                    "expr": _disk_usage_percent('job="node", task="posthog"'),
                },
                {
                    # Patroni's own view: bytes between the shard leader's WAL position and what each
                    # replica received, the quantity maximum_lag_on_failover is compared with.
                    "record": REPLICATION_LAG_METRIC,
                    "expr": (
                        'max by (shard) (patroni_xlog_location{job="patroni"} and on (server) patroni_primary == 1)'
                        " - on (shard) group_right ()"
                        ' max by (shard, server, site) (patroni_xlog_received_location{job="patroni"}'
                        " and on (server) patroni_replica == 1)"
                    ),
                },
            ],
        }
    ]


def _tunnel_collector_hosts_selector(inventory: Inventory) -> str:
    selectors = [f'up{{job="node", site="{LOCAL}"}} == 1']
    if inventory.network.wireguard.mode == "linux":
        selectors.append('up{job="node", task="gateway"} == 1')
    return " or ".join(selectors)


def alerts(inventory: Inventory) -> dict[str, list[Alert]]:
    """Rule group name -> alerts. Thresholds come from the constants above."""
    lag_warn = REPLICATION_LAG_WARNING_BYTES
    collector_file = 'file=~"(.*/)?unde_vpn_tunnel.prom"'
    return {
        "unde-meta": [
            Alert(
                "Watchdog",
                "vector(1)",
                "none",
                "Dead man's switch: always firing",
                "Routed to the heartbeat receiver; the heartbeat service alerts when it stops arriving.",
            ),
            Alert(
                "ServerDown",
                'up{job="node"} == 0',
                "critical",
                "Server unreachable from the monitoring server",
                "node_exporter on {{ $labels.server }} ({{ $labels.site }}) has not answered for 2 minutes.",
                "2m",
            ),
            Alert(
                "ExporterDown",
                'up{job!="node"} == 0',
                "warning",
                "Exporter unreachable",
                "{{ $labels.job }} on {{ $labels.server }} has not answered for 5 minutes.",
                "5m",
            ),
        ],
        "unde-network": [
            Alert(
                "VpnTunnelDown",
                f"min by (tunnel) ({VPN_TUNNEL_UP_METRIC}) == 0",
                "critical",
                "WireGuard tunnel down",
                "The tunnel of {{ $labels.tunnel }} to helsinki-gw carries no ping for 2 minutes.",
                "2m",
            ),
            Alert(
                "VpnTunnelRttHigh",
                f"max by (tunnel) ({VPN_TUNNEL_RTT_METRIC}) > {VPN_RTT_ALERT_MS}",
                "warning",
                f"Tunnel RTT above {VPN_RTT_ALERT_MS} ms (baseline {SITE_RTT_MS} ms)",
                "The tunnel of {{ $labels.tunnel }} has had high RTT for 5 minutes.",
                "5m",
            ),
            Alert(
                "VpnTunnelHandshakeStale",
                f"max by (tunnel) ({VPN_TUNNEL_HANDSHAKE_AGE_METRIC}) > {VPN_HANDSHAKE_STALE_SECONDS}",
                "critical",
                f"WireGuard handshake older than {VPN_HANDSHAKE_STALE_SECONDS} s",
                "The tunnel of {{ $labels.tunnel }} has no valid session keys.",
                "1m",
            ),
            Alert(
                "VpnTunnelCollectorStale",
                f"time() - node_textfile_mtime_seconds{{{collector_file}}} > {TUNNEL_COLLECTOR_STALE_SECONDS}"
                f" or on (server) (({_tunnel_collector_hosts_selector(inventory)})"
                f" unless on (server) node_textfile_mtime_seconds{{{collector_file}}})",
                "warning",
                "Tunnel metrics are not being collected",
                "The WireGuard tunnel collector on {{ $labels.server }} has not written its metrics recently.",
                "5m",
            ),
        ],
        "unde-shards": [
            Alert(
                "ShardDiskUsageHigh",
                f"{SHARD_DISK_USAGE_METRIC} > {DISK_USAGE_ALERT_PERCENT}",
                "warning",
                f"Shard disk more than {DISK_USAGE_ALERT_PERCENT}% full",
                "{{ $labels.mountpoint }} on {{ $labels.server }} is filling up.",
                "10m",
            ),
            Alert(
                "ShardCacheHitRatioLow",
                f"{SHARD_CACHE_HIT_RATIO_METRIC} < {_fmt(CACHE_HIT_RATIO_MIN)}",
                "warning",
                f"Shard cache hit ratio below {CACHE_HIT_RATIO_MIN:.0%} (cold cache)",
                "{{ $labels.server }} reads from disk more than its working set allows.",
                "30m",
            ),
            Alert(
                "ShardSplitTrigger",
                f'max by (server, site, task, shard) ({EMBEDDING_INDEX_METRIC}{{task="shard"}})'
                f" > {EMBEDDING_INDEX_SPLIT_BYTES}",
                "info",
                f"Embedding index above {_gib(EMBEDDING_INDEX_SPLIT_BYTES)}: plan a shard split",
                "idx_messages_embedding on {{ $labels.server }} has passed the split trigger; add a shard.",
                "15m",
            ),
            Alert(
                "WalAccumulation",
                f"max by (server, site, task, shard) ({WAL_RETAINED_METRIC}) > {WAL_ACCUMULATION_ALERT_BYTES}"
                f" or max by (server, site, task, shard) ({BUILTIN_WAL_RETAINED_METRIC})"
                f" > {WAL_ACCUMULATION_ALERT_BYTES}",
                "critical",
                f"More than {_gib(WAL_ACCUMULATION_ALERT_BYTES)} of WAL retained",
                "{{ $labels.server }} keeps WAL for a replica that does not consume it (is Helsinki down?).",
                "5m",
            ),
            Alert(
                "ReplicationLagNearFailoverLimit",
                f"{REPLICATION_LAG_METRIC} > {lag_warn}",
                "warning",
                f"Replica lag above {REPLICATION_LAG_WARNING_FRACTION:.0%} of maximum_lag_on_failover",
                "{{ $labels.server }} (shard {{ $labels.shard }}) is close to the lag at which Patroni "
                "refuses to promote it.",
                "2m",
            ),
            Alert(
                "ReplicationLagAboveFailoverLimit",
                f"{REPLICATION_LAG_METRIC} > {REPLICATION_LAG_CRITICAL_BYTES}",
                "critical",
                "Replica lag above maximum_lag_on_failover: no automatic failover",
                "Patroni would not promote {{ $labels.server }} (shard {{ $labels.shard }}) now.",
                "2m",
            ),
            Alert(
                "WalArchiveFailing",
                "increase(pg_stat_archiver_failed_count[10m]) > 0",
                "warning",
                "WAL archiving fails",
                "archive_command (pgBackRest) keeps failing on {{ $labels.server }}; backups fall behind "
                "and WAL accumulates.",
                "5m",
            ),
            Alert(
                "ShardNoPrimary",
                'max by (shard) (patroni_primary{job="patroni"}) == 0',
                "critical",
                "Shard has no primary",
                "No Patroni member of shard {{ $labels.shard }} holds the leader lock: writes fail.",
                "1m",
            ),
        ],
        "unde-backups": [
            Alert(
                "BackupFullTooOld",
                f'time() - max by (stanza) ({LAST_BACKUP_METRIC}{{type="full"}}) > {FULL_BACKUP_MAX_AGE_SECONDS}',
                "critical",
                f"No full backup for more than {FULL_BACKUP_MAX_AGE_SECONDS // DAY} days",
                "Stanza {{ $labels.stanza }} has no recent full backup: point-in-time recovery and the "
                "retention of old WAL depend on it (unde-pgbackrest-backup@full.service).",
                "30m",
            ),
            Alert(
                "BackupDiffTooOld",
                f'time() - max by (stanza) ({LAST_BACKUP_METRIC}{{type=~"full|diff"}}) > {DIFF_BACKUP_MAX_AGE_SECONDS}',
                "warning",
                f"No full or differential backup for more than {DIFF_BACKUP_MAX_AGE_SECONDS // 3600} hours",
                "The daily backup of stanza {{ $labels.stanza }} did not complete (unde-pgbackrest-backup@diff.service).",
                "30m",
            ),
            Alert(
                "BackupRepositoryUnreadable",
                f"max by (stanza) ({INFO_SUCCESS_METRIC}) == 0",
                "warning",
                "pgBackRest cannot read the repository",
                "pgbackrest info fails for stanza {{ $labels.stanza }}: bucket, keys or cipher pass.",
                "30m",
            ),
            Alert(
                "BackupRepositoryLarge",
                f"sum(max by (stanza) ({REPO_SIZE_METRIC})) > {BACKUP_REPO_SIZE_ALERT_BYTES}",
                "info",
                "Backups occupy more than 1 TiB of object storage",
                "Past the 1 TB included in Hetzner Object Storage's base price every TB costs extra; "
                "check retention.",
                "1h",
            ),
        ],
        "unde-etcd": [
            Alert(
                "EtcdNoLeader",
                'etcd_server_has_leader{job="etcd"} == 0',
                "critical",
                "etcd member has no leader",
                "etcd on {{ $labels.server }} sees no leader: its partition has lost quorum.",
                "1m",
            ),
            Alert(
                "EtcdQuorumLost",
                'sum(up{job="etcd"}) < floor(count(up{job="etcd"}) / 2) + 1',
                "critical",
                "etcd quorum lost",
                "Fewer than a majority of etcd members answer: Patroni demotes every primary.",
                "1m",
            ),
            Alert(
                "EtcdQuorumAtRisk",
                'sum(up{job="etcd"}) == floor(count(up{job="etcd"}) / 2) + 1'
                ' and count(up{job="etcd"}) > 1',
                "warning",
                "etcd one failure away from losing quorum",
                "Only a bare majority of etcd members answers.",
                "5m",
            ),
            Alert(
                "EtcdPeerRttHigh",
                "histogram_quantile(0.99, sum by (server, le)"
                ' (rate(etcd_network_peer_round_trip_time_seconds_bucket{job="etcd"}[5m])))'
                f" > {_fmt(ETCD_PEER_RTT_ALERT_SECONDS)}",
                "warning",
                f"etcd peer RTT p99 above {ETCD_PEER_RTT_ALERT_SECONDS * 1000:.0f} ms",
                "etcd on {{ $labels.server }} reaches its peers slowly; elections may follow.",
                "10m",
            ),
        ],
        "unde-redis": [
            Alert(
                "RedisMemoryHigh",
                f"redis_memory_used_bytes / (redis_memory_max_bytes > 0) > {_fmt(REDIS_MEMORY_ALERT_FRACTION)}",
                "warning",
                f"Redis memory above {REDIS_MEMORY_ALERT_FRACTION:.0%} of maxmemory",
                "Redis on {{ $labels.server }} nears maxmemory: scale out (SPEC: Sentinel, 2 nodes).",
                "10m",
            ),
        ],
        "unde-posthog": [
            Alert(
                "PosthogDiskUsageHigh",
                f"{POSTHOG_DISK_USAGE_METRIC} > {POSTHOG_DISK_USAGE_ALERT_PERCENT}",
                "warning",
                f"PostHog (ClickHouse) disk more than {POSTHOG_DISK_USAGE_ALERT_PERCENT}% full",
                "{{ $labels.mountpoint }} on {{ $labels.server }} is filling up.",
                "10m",
            ),
        ],
        "unde-monitoring": [
            Alert(
                "PrometheusHeadSeriesHigh",
                f'prometheus_tsdb_head_series{{job="prometheus"}} > {PROMETHEUS_HEAD_SERIES_MAX}',
                "warning",
                f"Prometheus holds more than {PROMETHEUS_HEAD_SERIES_MAX:,} series",
                "Memory on the monitoring server follows the series count; check new labels.",
                "15m",
            ),
            Alert(
                "PrometheusStorageNearDiskSize",
                'prometheus_tsdb_storage_blocks_bytes{job="prometheus"} / on (server) group_left ()'
                f' max by (server) (node_filesystem_size_bytes{{job="node", mountpoint="{PROMETHEUS_DATA_MOUNTPOINT}"}})'
                f" > {_fmt(PROMETHEUS_BLOCKS_DISK_FRACTION)}",
                "warning",
                f"Prometheus blocks use more than {PROMETHEUS_BLOCKS_DISK_FRACTION:.0%} of the disk",
                "Shorten retention or grow the disk of {{ $labels.server }}.",
                "30m",
            ),
            Alert(
                "AlertmanagerNotificationsFailing",
                'sum by (integration) (increase(alertmanager_notifications_failed_total{job="alertmanager"}[10m])) > 0',
                "warning",
                "Alertmanager fails to deliver notifications",
                "Notifications through {{ $labels.integration }} fail; the other integration still delivers.",
            ),
        ],
    }


RULE_FILES = ("unde-recording.yml", "unde-alerts.yml")


def rule_files(inventory: Inventory) -> dict[str, str]:
    """Rule file name -> content (Prometheus rule-file YAML)."""
    groups = [{"name": name, "rules": [a.rule() for a in group]} for name, group in alerts(inventory).items()]
    return {
        RULE_FILES[0]: dump_yaml({"groups": recording_rules()}),
        RULE_FILES[1]: dump_yaml({"groups": groups}),
    }


# --------------------------------------------------------------------------------------------
# Alertmanager


def alertmanager_config(settings: AlertingSettings, paths: MonitoringPaths) -> str:
    """alertmanager.yml without any secret: Slack's URL is a file, the Telegram token and the
    heartbeat URL are placeholders that `alertmanager-config` replaces at service start."""
    slack_url_file = paths.credential(ALERTMANAGER_UNIT, "slack_webhook_url")
    config = {
        "route": {
            "receiver": "team",
            "group_by": ["alertname", "site", "shard"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": ['alertname = "Watchdog"'],
                    "receiver": "heartbeat",
                    "group_wait": "0s",
                    "group_interval": HEARTBEAT_REPEAT_INTERVAL,
                    "repeat_interval": HEARTBEAT_REPEAT_INTERVAL,
                }
            ],
        },
        "inhibit_rules": [
            # A server that is down explains every other alert about it.
            {
                "source_matchers": ['alertname = "ServerDown"'],
                "target_matchers": ['alertname != "ServerDown"'],
                "equal": ["server"],
            },
            {
                "source_matchers": ['severity = "critical"'],
                "target_matchers": ['severity = "warning"'],
                "equal": ["alertname", "server"],
            },
        ],
        "receivers": [
            {
                "name": "team",
                "telegram_configs": [
                    {
                        "api_url": settings.telegram_api_url,
                        "bot_token": ALERTMANAGER_PLACEHOLDERS["telegram_bot_token"],
                        "chat_id": settings.telegram_chat_id,
                        "send_resolved": True,
                    }
                ],
                "slack_configs": [
                    {"api_url_file": slack_url_file, "channel": settings.slack_channel, "send_resolved": True}
                ],
            },
            {
                "name": "heartbeat",
                "webhook_configs": [{"url": ALERTMANAGER_PLACEHOLDERS["heartbeat_url"], "send_resolved": False}],
            },
        ],
    }
    return dump_yaml(config)


_ASSEMBLER = '''#!/usr/bin/python3
"""Write Alertmanager's runtime configuration: the rendered template with the secrets that
Alertmanager 0.25 cannot read from files, taken from systemd credentials. Rendered by unde-infra."""
import json
import os
import sys

TEMPLATE = __TEMPLATE__
OUTPUT = __OUTPUT__
PLACEHOLDERS = __PLACEHOLDERS__


def main() -> int:
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not credentials:
        print("CREDENTIALS_DIRECTORY is not set (LoadCredential= missing?)", file=sys.stderr)
        return 1
    with open(TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    for name, placeholder in PLACEHOLDERS.items():
        with open(os.path.join(credentials, name), encoding="utf-8") as f:
            value = f.read().strip()
        if not value:
            print(f"credential {name} is empty", file=sys.stderr)
            return 1
        # The placeholder is a whole plain YAML scalar; a JSON string is a valid YAML
        # double-quoted scalar, whatever characters the secret holds.
        line = ": " + placeholder + "\\n"
        if text.count(line) != 1:
            print(f"placeholder for {name} not found once in {TEMPLATE}", file=sys.stderr)
            return 1
        text = text.replace(line, ": " + json.dumps(value) + "\\n")
    tmp = OUTPUT + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def alertmanager_assembler(paths: MonitoringPaths) -> str:
    return (
        _ASSEMBLER.replace("__TEMPLATE__", json.dumps(paths.alertmanager_config))
        .replace("__OUTPUT__", json.dumps(paths.alertmanager_runtime_config))
        .replace("__PLACEHOLDERS__", json.dumps(ALERTMANAGER_PLACEHOLDERS))
    )


def alertmanager_args(paths: MonitoringPaths, endpoints: Endpoints) -> list[str]:
    return [
        f"--config.file={paths.alertmanager_runtime_config}",
        f"--storage.path={paths.alertmanager_storage}",
        f"--web.listen-address={endpoints.alertmanager}",
        # One Alertmanager: no gossip port open on the network.
        "--cluster.listen-address=",
    ]


def _credential_lines(credentials: Mapping[str, str], paths: MonitoringPaths) -> list[str]:
    # Sources stay root-only (0600); systemd copies each into a directory only the service user reads.
    return [f"LoadCredential={name}:{paths.secret(source)}" for name, source in credentials.items()]


def alertmanager_dropin(paths: MonitoringPaths) -> str:
    # Credentials are read once at start: a changed secret needs a restart, a changed config a reload.
    lines = [
        "# Rendered by unde-infra: secrets for Alertmanager through systemd credentials.",
        "[Service]",
        *_credential_lines(ALERTMANAGER_CREDENTIALS, paths),
        "RuntimeDirectory=prometheus-alertmanager",
        "RuntimeDirectoryMode=0700",
        f"ExecStartPre=/usr/bin/python3 {paths.alertmanager_assembler}",
        "ExecReload=",
        f"ExecReload=/usr/bin/python3 {paths.alertmanager_assembler}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Grafana

GRAFANA_DATASOURCE_UID = "unde-prometheus"


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


# --------------------------------------------------------------------------------------------
# Everything the monitoring server receives


def monitoring_files(
    inventory: Inventory,
    settings: AlertingSettings,
    *,
    paths: MonitoringPaths = MonitoringPaths(),
    endpoints: Endpoints | None = None,
    target_address: TargetAddress = _default_address,
) -> dict[str, str]:
    """Every non-secret file of the monitoring server, keyed by absolute path.

    `paths` relocates the whole tree (tests); `endpoints` the listen addresses (default: the
    monitoring server's private address); `target_address(server, port)` the scrape addresses
    (default: the server's private address)."""
    endpoints = endpoints or Endpoints.of(monitoring_server(inventory))
    files: dict[str, str] = {
        paths.prometheus_config: prometheus_config(inventory, paths, endpoints),
        paths.prometheus_defaults: _defaults_file(
            prometheus_args(paths, endpoints), "Prometheus: 30-day retention is a command-line flag."
        ),
        paths.alertmanager_config: alertmanager_config(settings, paths),
        paths.alertmanager_defaults: _defaults_file(
            alertmanager_args(paths, endpoints),
            "Alertmanager reads the runtime copy that alertmanager-config writes at start.",
        ),
        paths.alertmanager_assembler: alertmanager_assembler(paths),
        paths.alertmanager_dropin: alertmanager_dropin(paths),
        paths.grafana_ini: grafana_ini(paths, endpoints),
        f"{paths.grafana_provisioning}/datasources/unde.yaml": grafana_datasources(endpoints),
        f"{paths.grafana_provisioning}/dashboards/unde.yaml": grafana_dashboard_provider(paths),
        f"{paths.grafana_dashboards}/overview.json": grafana_dashboard(),
        paths.grafana_dropin: grafana_dropin(paths),
    }
    for job, groups in file_sd_targets(inventory, target_address=target_address).items():
        files[f"{paths.file_sd_dir}/{job}.json"] = json.dumps(groups, indent=2) + "\n"
    for name, text in rule_files(inventory).items():
        files[f"{paths.rules_dir}/{name}"] = text
    return files


def monitoring_secret_files(secrets: MonitoringSecrets, *, paths: MonitoringPaths = MonitoringPaths()) -> dict[str, str]:
    """SECRET: the secret files of the monitoring server, keyed by absolute path. Deliver them
    root:root 0600 (in a 0700 directory); systemd's LoadCredential hands each one to its service."""
    return {paths.secret(name): value + "\n" for name, value in secrets.values().items()}


# --------------------------------------------------------------------------------------------
# WireGuard tunnel collector (node_exporter textfile collector)

TUNNEL_COLLECTOR_UNIT = "unde-vpn-tunnel-collector"
TUNNEL_METRICS_FILE = "unde_vpn_tunnel.prom"

_COLLECTOR = '''#!/usr/bin/python3
"""WireGuard tunnel metrics for node_exporter's textfile collector. Rendered by unde-infra.

For each tunnel: vpn_tunnel_up (1 when the far end's tunnel address answers ping, i.e. traffic
crosses), vpn_tunnel_rtt_ms (average ping RTT), vpn_tunnel_handshake_age_seconds (+Inf when no
handshake ever happened). The peer of a tunnel is found by its allowed IPs, so the collector
does not depend on interface names on helsinki-gw."""
import argparse
import ipaddress
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

TUNNELS = __TUNNELS__
OUTPUT_DIR = __OUTPUT_DIR__
FILE_NAME = __FILE_NAME__
PING_COUNT = __PING_COUNT__


def wg_peers():
    """(interface, allowed networks, latest handshake) of every peer of every interface."""
    out = subprocess.run(["wg", "show", "all", "dump"], capture_output=True, text=True, timeout=10)
    peers = []
    for line in out.stdout.splitlines():
        fields = line.split("\\t")
        if len(fields) != 9:  # interface lines have 5 fields, peer lines 9
            continue
        networks = [ipaddress.ip_network(n, strict=False) for n in fields[4].split(",") if n and n != "(none)"]
        peers.append((fields[0], networks, int(fields[5])))
    return peers


def ping(address):
    """(replies received, average RTT in ms or None)."""
    try:
        out = subprocess.run(
            ["ping", "-n", "-q", "-c", str(PING_COUNT), "-i", "0.2", "-W", "1", address],
            capture_output=True, text=True, timeout=PING_COUNT + 5,
        ).stdout
    except subprocess.TimeoutExpired:
        return 0, None
    received = re.search(r"(\\d+) (?:packets )?received", out)
    rtt = re.search(r"= [\\d.]+/([\\d.]+)/", out)
    return (int(received.group(1)) if received else 0), (float(rtt.group(1)) if rtt else None)


def label(value):
    return value.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    args = parser.parse_args()
    try:
        peers = wg_peers()
    except (OSError, subprocess.SubprocessError):
        peers = []
    now = time.time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        pings = list(pool.map(lambda t: ping(t["peer_ip"]), TUNNELS))
    metrics = {"up": [], "rtt": [], "age": []}
    for tunnel, (received, rtt) in zip(TUNNELS, pings):
        address = ipaddress.ip_address(tunnel["peer_ip"])
        match = next((p for p in peers if any(address in n for n in p[1])), None)
        interface = match[0] if match else ""
        labels = f'tunnel="{label(tunnel["tunnel"])}",interface="{label(interface)}",peer_ip="{tunnel["peer_ip"]}"'
        metrics["up"].append(f"vpn_tunnel_up{{{labels}}} {1 if received > 0 else 0}")
        if rtt is not None:
            metrics["rtt"].append(f"vpn_tunnel_rtt_ms{{{labels}}} {rtt}")
        age = "+Inf" if not match or match[2] == 0 else str(max(0.0, round(now - match[2], 3)))
        metrics["age"].append(f"vpn_tunnel_handshake_age_seconds{{{labels}}} {age}")
    lines = [
        "# HELP vpn_tunnel_up 1 when the far end of the WireGuard tunnel answers ping through it.",
        "# TYPE vpn_tunnel_up gauge", *metrics["up"],
        "# HELP vpn_tunnel_rtt_ms Average ping RTT through the tunnel, milliseconds.",
        "# TYPE vpn_tunnel_rtt_ms gauge", *metrics["rtt"],
        "# HELP vpn_tunnel_handshake_age_seconds Seconds since the latest WireGuard handshake.",
        "# TYPE vpn_tunnel_handshake_age_seconds gauge", *metrics["age"],
    ]
    # Atomic replace: node_exporter must never read a half-written file.
    path = os.path.join(args.output_dir, FILE_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\\n".join(lines) + "\\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
'''


def tunnels_seen_from(server: Server, inventory: Inventory) -> list[dict[str, str]]:
    """The tunnels a server measures: a local server its own (far end: helsinki-gw's tunnel
    address), helsinki-gw every tunnel (far end: the local server's tunnel address). Empty for
    other servers, and for helsinki-gw in routeros mode (RouterOS terminates the tunnels)."""
    if server.tunnel is not None:
        return [{"tunnel": server.name, "peer_ip": str(server.tunnel.helsinki_ip)}]
    if server.task == "gateway" and inventory.network.wireguard.mode == "linux":
        return [{"tunnel": s.name, "peer_ip": str(t.local_ip)} for s, t in sorted(inventory.tunnels(), key=lambda x: x[0].name)]
    return []


def tunnel_collector_script(tunnels: list[dict[str, str]], paths: MonitoringPaths = MonitoringPaths()) -> str:
    return (
        _COLLECTOR.replace("__TUNNELS__", json.dumps(tunnels))
        .replace("__OUTPUT_DIR__", json.dumps(paths.textfile_dir))
        .replace("__FILE_NAME__", json.dumps(TUNNEL_METRICS_FILE))
        .replace("__PING_COUNT__", str(TUNNEL_PING_COUNT))
    )


def tunnel_collector_files(
    server: Server, inventory: Inventory, *, paths: MonitoringPaths = MonitoringPaths()
) -> dict[str, str]:
    """The collector script and its systemd service and timer, keyed by absolute path; empty for
    a server without tunnels. Runs as root: `wg show` needs CAP_NET_ADMIN."""
    tunnels = tunnels_seen_from(server, inventory)
    if not tunnels:
        return {}
    unit_dir = str(PurePosixPath(paths.root) / "etc/systemd/system")
    service = "\n".join(
        [
            "[Unit]",
            "Description=WireGuard tunnel metrics for node_exporter (unde-infra)",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart=/usr/bin/python3 {paths.tunnel_collector}",
            "",
        ]
    )
    timer = timer_unit(
        "Collect WireGuard tunnel metrics (unde-infra)",
        ["OnBootSec=15s", f"OnUnitActiveSec={TUNNEL_COLLECTOR_INTERVAL_SECONDS}s", "AccuracySec=1s"],
    )
    return {
        paths.tunnel_collector: tunnel_collector_script(tunnels, paths),
        f"{unit_dir}/{TUNNEL_COLLECTOR_UNIT}.service": service,
        f"{unit_dir}/{TUNNEL_COLLECTOR_UNIT}.timer": timer,
    }
