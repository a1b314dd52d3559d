"""Secrets the application servers receive, and which server receives which.

Every one of them travels in a root-only file written by a remote command (never in user data):
the Master Encryption Key of user knowledge on a tmpfs, so that it lives in RAM only (SPEC
contradiction 7: in user data the cloud's metadata service would store it), the shard database
credentials of the services that use them, and PostHog's keys."""

from __future__ import annotations

from collections.abc import Mapping

from .cloud_init import RUNTIME_SECRETS_DIR, SECRETS_DIR
from .escape import env_file
from .postgres import APP_DATABASE, APP_USERS

MEK_PATH = f"{RUNTIME_SECRETS_DIR}/master-encryption-key"
SHARD_CREDENTIALS_PATH = f"{SECRETS_DIR}/shard-credentials.env"
POSTHOG_PATH = f"{SECRETS_DIR}/posthog.env"
# SPEC: the MEK is on the shards and the orchestrator; a replica becomes a primary on failover.
MEK_TASKS = frozenset({"orchestrator", "shard", "shard-replica"})
# SPEC: local shard DB passwords of the orchestrator and the persona agent.
APP_DB_USERS = APP_USERS
POSTHOG_INGEST_TASK = "api"  # local-app sends `POST /capture` over the VPN


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


def posthog_server(db_password: str, secret_key: str) -> str:
    return env_file({"POSTGRES_PASSWORD": db_password, "SECRET_KEY": secret_key})
