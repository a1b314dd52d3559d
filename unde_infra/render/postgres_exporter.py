"""postgres_exporter of a shard node: custom queries, including the shard split trigger.

SPEC: split a shard when `pg_relation_size('idx_messages_embedding') > 20 GB`. The exporter's
metric name is `<query key>_<column>`, so the key and column below make EMBEDDING_INDEX_METRIC.
"""

from __future__ import annotations

from .cloud_init import dump_yaml
from .escape import env_file
from .postgres import APP_DATABASE, DEFAULT_LAYOUT, EXPORTER_USER, NodeLayout, ShardSecrets

EMBEDDING_INDEX = "idx_messages_embedding"
EMBEDDING_INDEX_METRIC = "unde_embedding_index_size_bytes"
WAL_RETAINED_METRIC = "unde_replication_slot_retained_wal_bytes"
ENV_FILE_NAME = "postgres_exporter.env"


def custom_queries() -> dict[str, object]:
    return {
        "unde_embedding_index": {
            # to_regclass is NULL (size 0) where the index does not exist yet, instead of an error
            # that would fail the whole scrape.
            "query": (
                f"SELECT coalesce(pg_relation_size(to_regclass('{EMBEDDING_INDEX}')), 0) AS size_bytes"
            ),
            "master": True,
            "metrics": [{"size_bytes": {"usage": "GAUGE", "description": f"size of {EMBEDDING_INDEX} in bytes (split above 20 GB)"}}],
        },
        "unde_replication_slot": {
            # WAL a primary keeps for each slot: grows while Helsinki is unreachable (SPEC alert 20 GB).
            "query": (
                "SELECT slot_name, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0) AS retained_wal_bytes "
                "FROM pg_replication_slots WHERE NOT pg_is_in_recovery()"
            ),
            "master": True,
            "metrics": [
                {"slot_name": {"usage": "LABEL", "description": "replication slot"}},
                {"retained_wal_bytes": {"usage": "GAUGE", "description": "WAL retained for the slot, bytes"}},
            ],
        },
        "unde_cache": {
            "query": (
                "SELECT coalesce(sum(heap_blks_hit)::float / nullif(sum(heap_blks_hit) + sum(heap_blks_read), 0), 1) "
                "AS hit_ratio FROM pg_statio_user_tables"
            ),
            "master": True,
            "metrics": [{"hit_ratio": {"usage": "GAUGE", "description": "heap cache hit ratio of user tables"}}],
        },
    }


def queries_yaml() -> str:
    return dump_yaml(custom_queries())


def exporter_env(secrets: ShardSecrets, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    """SECRET: the exporter's connection, read by systemd for the exporter's unit."""
    return env_file(
        {
            # The shard's own database: the embedding index lives there, not in `postgres`.
            "DATA_SOURCE_URI": f"127.0.0.1:{layout.pg_port}/{APP_DATABASE}?sslmode=disable",
            "DATA_SOURCE_USER": EXPORTER_USER,
            "DATA_SOURCE_PASS": secrets.exporter_password,
            "PG_EXPORTER_EXTEND_QUERY_PATH": f"{layout.exporter_dir}/queries.yaml",
            "PG_EXPORTER_WEB_LISTEN_ADDRESS": f":{layout.exporter_port}",
        }
    )
