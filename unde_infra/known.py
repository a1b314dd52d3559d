"""Names the program knows and looks things up by: the tasks it builds (a closed set), the
servers it needs by task, the backups bucket.

The topology's `tasks:` section describes each task (what it is, what runs there), but it cannot
invent one. Components look several tasks up by name (the gateway, the monitoring server,
PostHog, the API entry point, the shards, etcd); a task the code does not know would build a
server nobody configures, and a renamed one would leave the code looking for a server that is
not there. A new task is added here together with what builds it.

Some traits are facts the program relies on, not choices of the topology: a data task holds
user or catalog data (never public, never an entry point), a stateful task holds state (never
replaced). The topology may give these traits to more tasks; it cannot take them away.
"""

from __future__ import annotations

GATEWAY = "gateway"
MONITORING = "monitoring"
# The second alert path on the local site, alerting while Helsinki is down (SPEC scenario 3).
MONITORING_LOCAL = "monitoring-local"
POSTHOG = "posthog"
API = "api"
ETCD = "etcd"
SHARD = "shard"
SHARD_REPLICA = "shard-replica"
# SPEC scenario 2's warm standby in Helsinki: the entry point DNS fails over to, its orchestrator.
STANDBY_API = "standby-api"
STANDBY_ORCHESTRATOR = "standby-orchestrator"

# Built by their own components, looked up by name.
BUILT_BY_NAME = frozenset({GATEWAY, MONITORING, MONITORING_LOCAL, POSTHOG, API, ETCD, SHARD, SHARD_REPLICA, STANDBY_API, STANDBY_ORCHESTRATOR})
# Built as plain batch (Helsinki) or agent (local) hosts with the base files.
GENERIC = frozenset({
    "scraper", "batch-redis", "model-generator", "tryon", "catalog-db", "apify", "collage", "recognition",
    "photo-downloader", "ximilar-sync", "ximilar-gw", "llm-reranker", "staging-db", "orchestrator", "redis",
    "mood", "persona", "context", "voice",
})  # fmt: skip
KNOWN_TASKS = BUILT_BY_NAME | GENERIC

DATA_TASKS = frozenset({"catalog-db", "staging-db", SHARD, SHARD_REPLICA})
STATEFUL_TASKS = DATA_TASKS | frozenset({"batch-redis", ETCD, POSTHOG, MONITORING, MONITORING_LOCAL, "redis"})

# Servers the program needs by task: (task, site, how many). "one" is exactly one, "some" at
# least one.
REQUIRED_SERVERS: tuple[tuple[str, str, str, str], ...] = (
    (GATEWAY, "helsinki", "one", "helsinki-gw: the tunnels' far end and the jump host of Helsinki"),
    (MONITORING, "helsinki", "one", "Prometheus, Alertmanager and Grafana of both sites"),
    (POSTHOG, "helsinki", "one", "local-app sends its events there"),
    (API, "local", "some", "the entry point of the users (local-app)"),
)

# pgBackRest's repository (render/pgbackrest.py): the topology must have this bucket.
BACKUP_BUCKET = "unde-backups"
