"""Secrets the application servers receive, and which server receives which.

Every one of them travels in a root-only file written by a remote command (never in user data):
the Master Encryption Key of user knowledge on a tmpfs, so that it lives in RAM only (SPEC
contradiction 7: in user data the cloud's metadata service would store it), the shard database
credentials of the services that use them, and PostHog's keys."""

from __future__ import annotations

from collections.abc import Mapping

from ..model import LOCAL, Inventory, Server
from .cloud_init import RUNTIME_SECRETS_DIR, SECRETS_DIR
from .escape import env_file
from .postgres import APP_DATABASE, APP_USERS

MEK_PATH = f"{RUNTIME_SECRETS_DIR}/master-encryption-key"
SHARD_CREDENTIALS_PATH = f"{SECRETS_DIR}/shard-credentials.env"
POSTHOG_PATH = f"{SECRETS_DIR}/posthog.env"
# SPEC: the MEK is on the shards and the orchestrator; a replica becomes a primary on failover,
# and the warm-standby orchestrator serves from the replicas then.
MEK_TASKS = frozenset({"orchestrator", "standby-orchestrator", "shard", "shard-replica"})
# SPEC: local shard DB passwords of the orchestrator and the persona agent.
APP_DB_USERS = APP_USERS
# The database user each client task logs in as (the standby orchestrator is the orchestrator).
DB_USER_OF_TASK = {"orchestrator": "orchestrator", "persona": "persona", "standby-orchestrator": "orchestrator"}
POSTHOG_INGEST_TASK = "api"  # local-app sends `POST /capture` over the VPN


def shard_hosts(inventory: Inventory, server: Server) -> list[tuple[int, str]]:
    """Each shard's address as a client on `server` starts with: the shard's member on the
    client's own site (the local primary; in Helsinki, the replica, which the standby
    orchestrator uses only once the local site is down and every replica has been promoted)."""
    return [(s.index, str((s.primary if server.site == LOCAL else s.replica).ip)) for s in inventory.shards]


def shard_credentials(passwords: Mapping[tuple[int, str], str], *, user: str, shards: list[tuple[int, str]]) -> str:
    """The DSN parts of one application user for every shard: PgBouncer on the shard's address."""
    values: dict[str, str] = {}
    for index, address in shards:
        values[f"SHARD{index}_HOST"] = address
        values[f"SHARD{index}_PORT"] = "6432"
        values[f"SHARD{index}_USER"] = user
        values[f"SHARD{index}_DATABASE"] = APP_DATABASE
        values[f"SHARD{index}_PASSWORD"] = passwords[(index, user)]
    return env_file(values)


def posthog_ingest(api_key: str, host: str) -> str:
    return env_file({"POSTHOG_API_KEY": api_key, "POSTHOG_HOST": host})

