"""Prometheus recording and alert rules: SPEC.md's key-metric table and the HA checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...model import LOCAL, SHARD_REPLICA_TASK, SHARD_TASK, Inventory
from ..app_secrets import MEK_PRESENCE_METRIC, MEK_TASKS
from ..cloud_init import dump_yaml
from ..pgbackrest import INFO_SUCCESS_METRIC, LAST_BACKUP_METRIC, REPO_SIZE_METRIC
from ..shard_routing import TEXTFILE_NAME as ROUTING_TEXTFILE
from .common import APP_METRICS_PORT, MonitoringView, main_view
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
    TUNNEL_COLLECTOR_STALE_SECONDS,
    VPN_HANDSHAKE_STALE_SECONDS,
    VPN_RTT_ALERT_MS,
    VPN_TUNNEL_HANDSHAKE_AGE_METRIC,
    VPN_TUNNEL_RTT_METRIC,
    VPN_TUNNEL_UP_METRIC,
    WAL_ACCUMULATION_ALERT_BYTES,
    WAL_RETAINED_METRIC,
)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_: str = "0s"
    # Needs series from both sites (the replicas, every etcd member, Helsinki's servers): only the
    # main path, which scrapes everything, can decide it.
    main_only: bool = False
    labels: tuple[tuple[str, str], ...] = ()

    def rule(self) -> dict[str, object]:
        rule: dict[str, object] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0s":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity, **dict(self.labels)}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        return rule


# The other monitoring server's jobs (prometheus.py) and the second path's probe of helsinki-gw:
# their own alerts speak for them, not ExporterDown.
PEER_PROMETHEUS_JOB, PEER_ALERTMANAGER_JOB, HELSINKI_GATEWAY_JOB = "peer-prometheus", "peer-alertmanager", "helsinki"
PEER_JOBS = (PEER_PROMETHEUS_JOB, PEER_ALERTMANAGER_JOB, HELSINKI_GATEWAY_JOB)
# The routing watcher writes its file every poll (1 s); a minute without it is a stopped watcher.
ROUTING_WATCHER_STALE_SECONDS = 60


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
                    # ClickHouse runs in Docker on the single PostHog server with its data under
                    # /var/lib/posthog: node_exporter's figures for the filesystem that holds it.
                    "record": POSTHOG_DISK_USAGE_METRIC,
                    "expr": _disk_usage_percent(f'job="node", task="posthog", mountpoint="{POSTHOG_DATA_MOUNTPOINT}"'),
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


def _site_alerts(inventory: Inventory) -> dict[str, list[Alert]]:
    """Rule group name -> the alerts on what the sites' servers report."""
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
                f'up{{job!~"node|{"|".join(PEER_JOBS)}"}} == 0',
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
                main_only=True,
            ),
            Alert(
                "ReplicationLagAboveFailoverLimit",
                f"{REPLICATION_LAG_METRIC} > {REPLICATION_LAG_CRITICAL_BYTES}",
                "critical",
                "Replica lag above maximum_lag_on_failover: no automatic failover",
                "Patroni would not promote {{ $labels.server }} (shard {{ $labels.shard }}) now.",
                "2m",
                main_only=True,
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
                main_only=True,
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
                main_only=True,
            ),
            Alert(
                "EtcdQuorumAtRisk",
                'sum(up{job="etcd"}) == floor(count(up{job="etcd"}) / 2) + 1'
                ' and count(up{job="etcd"}) > 1',
                "warning",
                "etcd one failure away from losing quorum",
                "Only a bare majority of etcd members answers.",
                "5m",
                main_only=True,
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
            Alert(
                "RedisDown",
                'redis_up{job="redis"} == 0',
                "critical",
                "Redis does not answer its exporter",
                "Redis on {{ $labels.server }} is down, or refuses the exporter's login (its ACL user).",
                "2m",
            ),
            Alert(
                "RedisSnapshotFailing",
                'redis_rdb_last_bgsave_status{job="redis"} == 0',
                "warning",
                "Redis cannot write its RDB snapshot",
                "Redis on {{ $labels.server }} keeps serving, but a restart would come back cold (disk full?).",
                "15m",
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
            Alert(
                "PosthogNoEventsIngested",
                f"increase({POSTHOG_EVENTS_INGESTED_METRIC}{{task=\"posthog\"}}[{POSTHOG_INGESTION_IDLE}]) == 0",
                "info",
                f"PostHog has ingested no event for {POSTHOG_INGESTION_IDLE}",
                "ClickHouse on {{ $labels.server }} received no event: is local-app sending them (tunnel, API key)?",
                "15m",
            ),
            Alert(
                "PosthogQueryLatencyHigh",
                f"max by (server, site, task) ({POSTHOG_QUERY_LATENCY_P95_METRIC}{{task=\"posthog\"}})"
                f" > {POSTHOG_QUERY_LATENCY_P95_MAX_SECONDS}",
                "warning",
                f"PostHog query latency p95 above {POSTHOG_QUERY_LATENCY_P95_MAX_SECONDS} s",
                "ClickHouse on {{ $labels.server }} answers slowly: SPEC's next step is a separate ClickHouse server.",
                "15m",
            ),
        ],
        "unde-app": [
            Alert(
                "ShardRoutingCacheMissRateHigh",
                f"max by (server, site, task) ({ROUTING_CACHE_MISS_RATE_METRIC}{{job=\"app\"}})"
                f" > {_fmt(ROUTING_CACHE_MISS_RATE_MAX)}",
                "warning",
                f"Shard routing cache misses above {ROUTING_CACHE_MISS_RATE_MAX:.0%}",
                "{{ $labels.server }} looks up shard routing in production-db across the 120 ms link: is local-redis "
                "cold or evicting?",
                "10m",
            ),
            Alert(
                "CatalogCacheHitRatioLow",
                f"min by (server, site, task) ({CATALOG_CACHE_HIT_RATIO_METRIC}{{job=\"app\"}})"
                f" < {_fmt(CATALOG_CACHE_HIT_RATIO_MIN)}",
                "warning",
                f"Catalog cache hit ratio below {CATALOG_CACHE_HIT_RATIO_MIN:.0%}",
                "{{ $labels.server }} fetches the catalog from Helsinki for more than one request in five.",
                "30m",
            ),
            *(
                Alert(
                    f"{name}Absent",
                    f"absent({metric}{{{selector}}})",
                    "warning",
                    f"Nobody exports {metric}",
                    f"{metric} has not been scraped for {APP_METRIC_ABSENT_FOR}: {exporter}; the alerts on it are "
                    "blind.",
                    APP_METRIC_ABSENT_FOR,
                    main_only=selector == POSTHOG_SELECTOR,
                )
                for name, metric, selector, exporter in APP_METRIC_CONTRACT
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


POSTHOG_SELECTOR = 'task="posthog"'
# Each metric of the application contract (docs/monitoring.md): alert name stem, metric, the
# selector that says where it must come from, and who exports it.
APP_METRIC_CONTRACT = (
    ("ShardRoutingCacheMissRate", ROUTING_CACHE_MISS_RATE_METRIC, 'job="app"',
     f"local-app and local-orchestrator export it on :{APP_METRICS_PORT}/metrics"),
    ("CatalogCacheHitRatio", CATALOG_CACHE_HIT_RATIO_METRIC, 'job="app"',
     f"local-orchestrator exports it on :{APP_METRICS_PORT}/metrics"),
    ("PosthogEventsIngested", POSTHOG_EVENTS_INGESTED_METRIC, POSTHOG_SELECTOR,
     f"the PostHog server's textfile collector ({POSTHOG_METRICS_UNIT}.timer) writes it"),
    ("PosthogQueryLatencyP95", POSTHOG_QUERY_LATENCY_P95_METRIC, POSTHOG_SELECTOR,
     f"the PostHog server's textfile collector ({POSTHOG_METRICS_UNIT}.timer) writes it"),
)

def _own_alerts(inventory: Inventory) -> dict[str, list[Alert]]:
    """What the shard nodes' own collectors report: the routing entry (files/shard_routing.py)
    and the Master Encryption Key on every server that holds it."""
    routing_file = f'file=~"(.*/)?{ROUTING_TEXTFILE}"'
    routing_hosts = "|".join(sorted({SHARD_TASK, SHARD_REPLICA_TASK}))
    key_holders = "|".join(sorted(MEK_TASKS))
    return {
        "unde-routing": [
            Alert(
                "ShardRoutingNotFollowing",
                "unde_shard_routing_leader == 1 and on (server) unde_shard_routing_entry_ok == 0",
                "warning",
                "The shard's primary cannot point local-redis's routing entry at itself",
                "{{ $labels.server }} is the primary of shard {{ $labels.shard }} but endpoint:shard{{ $labels.shard }} "
                "in local-redis does not name it (local-redis unreachable, or a newer timeline holds the entry): "
                "local clients try the other member first (docs/failures.md: Routing follows the primary).",
                "2m",
            ),
            Alert(
                "ShardRoutingWatcherDown",
                f"time() - node_textfile_mtime_seconds{{{routing_file}}} > {ROUTING_WATCHER_STALE_SECONDS}"
                f' or on (server) (up{{job="node", task=~"{routing_hosts}"}} == 1'
                f" unless on (server) node_textfile_mtime_seconds{{{routing_file}}})",
                "warning",
                "The routing watcher does not run",
                "unde-shard-routing on {{ $labels.server }} has not reported for a while: should this node become "
                "the primary, local-redis's routing entry would not follow.",
                "5m",
            ),
        ],
        "unde-keys": [
            Alert(
                "MasterEncryptionKeyMissing",
                f"{MEK_PRESENCE_METRIC} == 0"
                f' or on (server) (up{{job="node", task=~"{key_holders}"}} == 1 unless on (server) {MEK_PRESENCE_METRIC})',
                "critical",
                "The Master Encryption Key is not in RAM",
                "{{ $labels.server }} holds no Master Encryption Key (it lives on a tmpfs: after a reboot it must be "
                "delivered again, `unde-infra ops redeliver-mek --server {{ $labels.server }}`), or does not report "
                "it. On the standby orchestrator, a failover would find it unable to read user knowledge.",
                "5m",
            ),
        ],
    }


def _peer_alerts(view: MonitoringView) -> list[Alert]:
    if view.peer is None:
        return []
    if view.main:
        why = ("the local site's second alert path is blind; while Helsinki is down, nobody would be told "
               "(its own heartbeat check says the same)")
    else:
        why = "this server is the only alert path now"
    return [
        Alert(
            "PeerMonitoringDown",
            f'up{{job="{PEER_PROMETHEUS_JOB}"}} == 0',
            "critical",
            "The other monitoring server's Prometheus is down",
            "Prometheus on {{ $labels.server }} has not answered for 5 minutes: " + why + ".",
            "5m",
        ),
        Alert(
            "PeerAlertmanagerDown",
            f'up{{job="{PEER_ALERTMANAGER_JOB}"}} == 0',
            "warning",
            "The other monitoring server's Alertmanager is down",
            "Alertmanager on {{ $labels.server }} has not answered for 5 minutes: " + why + ".",
            "5m",
        ),
    ]


# The second path's own alert that, while it fires, keeps its duplicates of the main path's
# alerts quiet (alertmanager.py: the inhibition). Never notified.
MAIN_PATH_HEALTHY = "MainAlertPathHealthy"
# Put on every alert the second path evaluates that the main path evaluates too.
ALSO_SENT_BY = "also_sent_by"


def _second_path_alerts(inventory: Inventory, view: MonitoringView) -> list[Alert]:
    peer = view.peer.name if view.peer else "Helsinki"
    return [
        Alert(
            "HelsinkiUnreachable",
            'max(up{site="helsinki"}) == 0',
            "critical",
            "Helsinki is unreachable from the local site",
            f"Neither {inventory.gateway.name} nor Prometheus and Alertmanager on {peer} have answered over the "
            "tunnels for 2 minutes: Helsinki is down or the link between the sites is cut (SPEC scenario 3). "
            "The local site keeps serving; replicas and backups pause and WAL accumulates on every primary "
            f"(WalAccumulation above {_gib(WAL_ACCUMULATION_ALERT_BYTES)}); this server now sends every alert "
            "about the local site.",
            "2m",
        ),
        Alert(
            MAIN_PATH_HEALTHY,
            # Both answer, and the Alertmanager's notifications do not fail (Telegram and Slack
            # unreachable from Helsinki would silence both paths otherwise).
            f'min(up{{job=~"{PEER_PROMETHEUS_JOB}|{PEER_ALERTMANAGER_JOB}"}}) == 1'
            f' unless on () sum(increase(alertmanager_notifications_failed_total{{job="{PEER_ALERTMANAGER_JOB}"}}[10m]))'
            " > 0",
            "none",
            f"{peer}'s Prometheus and Alertmanager answer and deliver: they send the local site's alerts",
            "Inhibits this server's copies of the alerts the main path sends (never notified).",
        ),
    ]


def alerts(inventory: Inventory, view: MonitoringView | None = None) -> dict[str, list[Alert]]:
    """Rule group name -> alerts of one monitoring server (default: the main path). Thresholds
    come from the constants above. The second path keeps the alerts the local site's own series
    decide, each marked as one the main path sends too, plus its own."""
    view = view or main_view(inventory)
    groups = {**_site_alerts(inventory), **_own_alerts(inventory)}
    if view.main:
        return {**groups, **({"unde-peer": _peer_alerts(view)} if view.peer else {})}
    also = ((ALSO_SENT_BY, view.peer.name if view.peer else ""),)
    shared: dict[str, list[Alert]] = {}
    for name, group in groups.items():
        kept = [a if a.name == "Watchdog" else replace(a, labels=a.labels + also) for a in group if not a.main_only]
        if kept and name != "unde-posthog":
            shared[name] = kept
    return {**shared, "unde-peer": _peer_alerts(view), "unde-second-path": _second_path_alerts(inventory, view)}


RULE_FILES = ("unde-recording.yml", "unde-alerts.yml")


def rule_files(inventory: Inventory, view: MonitoringView | None = None) -> dict[str, str]:
    """Rule file name -> content (Prometheus rule-file YAML) of one monitoring server."""
    groups = [{"name": name, "rules": [a.rule() for a in group]} for name, group in alerts(inventory, view).items()]
    return {
        RULE_FILES[0]: dump_yaml({"groups": recording_rules()}),
        RULE_FILES[1]: dump_yaml({"groups": groups}),
    }


