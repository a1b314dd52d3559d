"""Metric names the monitoring renderers agree on with other renderers (and with the
application), and every alert threshold."""

from __future__ import annotations

from ...timings import MAXIMUM_LAG_ON_FAILOVER_BYTES

# --------------------------------------------------------------------------------------------
# Metric names the monitoring renderers agree on with other renderers.

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
# The application's metrics of SPEC's table: the contract the services must export
# (docs/monitoring.md). Routing and catalog cache figures come from the services that use local-redis
# (the `app` scrape job); the PostHog figures from the PostHog server's textfile collector
# (files/posthog_metrics.py, read from ClickHouse), scraped with its node_exporter.
ROUTING_CACHE_MISS_RATE_METRIC = "shard_routing_cache_miss_rate"
CATALOG_CACHE_HIT_RATIO_METRIC = "catalog_cache_hit_ratio"
POSTHOG_EVENTS_INGESTED_METRIC = "posthog_events_ingested_total"
POSTHOG_QUERY_LATENCY_P95_METRIC = "posthog_query_latency_p95"
POSTHOG_METRICS_UNIT = "unde-posthog-metrics"  # the timer that writes the two PostHog figures

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
# ClickHouse's data lives under /var/lib/posthog, on the root filesystem of the CCX33.
POSTHOG_DATA_MOUNTPOINT = "/"
ROUTING_CACHE_MISS_RATE_MAX = 0.05  # SPEC: shard_routing_cache_miss_rate > 5%
CATALOG_CACHE_HIT_RATIO_MIN = 0.80  # SPEC: catalog_cache_hit_ratio < 80%
POSTHOG_QUERY_LATENCY_P95_MAX_SECONDS = 10  # SPEC: posthog_query_latency_p95 > 10 s
# SPEC: posthog_events_ingested_total is "info": it says when ingestion has stopped for an hour
# (local-app sends events all day; an hour without one is the app, the tunnel or PostHog).
POSTHOG_INGESTION_IDLE = "1h"
# A metric of the contract that nobody exports for this long: the application (or the
# collector) is not deployed or lost its /metrics; every alert on it is blind meanwhile.
APP_METRIC_ABSENT_FOR = "30m"
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

