"""Secrets the application servers receive, and which server receives which.

Every one of them travels in a root-only file written by a remote command (never in user data):
the Master Encryption Key of user knowledge on a tmpfs, so that it lives in RAM only (SPEC
contradiction 7: in user data the cloud's metadata service would store it), the shard database
credentials of the services that use them, and PostHog's keys."""

from __future__ import annotations

from collections.abc import Mapping

from ..files import shell_settings, source
from ..model import LOCAL, Inventory, Server
from .cloud_init import RUNTIME_SECRETS_DIR, SECRETS_DIR
from .escape import env_file
from .postgres import APP_DATABASE, APP_USERS
from .systemd import timer_unit

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
# A reboot empties the tmpfs: this collector tells monitoring whether the key is there.
MEK_PRESENCE_UNIT = "unde-mek-presence"
MEK_PRESENCE_SCRIPT = "/usr/local/lib/unde/mek-presence"
MEK_PRESENCE_METRIC = "unde_master_encryption_key_present"
MEK_PRESENCE_TEXTFILE = "/var/lib/prometheus/node-exporter/unde_mek_presence.prom"
MEK_PRESENCE_INTERVAL = "1min"


# libpq tries the hosts in order and keeps the first one that takes writes (`SHOW
# transaction_read_only` through PgBouncer), so a client lands on the writable member whichever
# side Patroni has made primary; a dead first host costs it this long before the next.
TARGET_SESSION_ATTRS = "read-write"
CONNECT_TIMEOUT_SECONDS = 3
# A primary that dies mid-statement answers nothing: without these a client waits on its
# connection forever and never tries the promoted member (the lab's primary-failure drill found
# its writer hung so). libpq's own parameters: unacknowledged data gives up after
# TCP_USER_TIMEOUT_MS, an idle connection is probed after KEEPALIVES_IDLE seconds, every
# KEEPALIVES_INTERVAL, KEEPALIVES_COUNT times. Well below the failover's ~25 s, well above the
# 120 ms round trip to Helsinki.
TCP_USER_TIMEOUT_MS = 5000
KEEPALIVES = {"KEEPALIVES": "1", "KEEPALIVES_IDLE": "5", "KEEPALIVES_INTERVAL": "2", "KEEPALIVES_COUNT": "3"}


def shard_hosts(inventory: Inventory, server: Server) -> list[tuple[int, str]]:
    """Each shard's hosts as a client on `server` tries them (a libpq multi-host list): the
    shard's member on the client's own site first (the local primary; in Helsinki the replica,
    which the standby orchestrator uses once the local site is down and it has been promoted),
    then the other one. The one place that decides a client's shard host."""
    hosts = []
    for s in inventory.shards:
        own, other = (s.primary, s.replica) if server.site == LOCAL else (s.replica, s.primary)
        hosts.append((s.index, f"{own.ip},{other.ip}"))
    return hosts


def shard_credentials(passwords: Mapping[tuple[int, str], str], *, user: str, shards: list[tuple[int, str]]) -> str:
    """The DSN parts of one application user for every shard: PgBouncer on each of the shard's
    hosts, the writable one chosen by libpq (`target_session_attrs`). local-redis's routing
    entry (`endpoint:shardN`) names the current primary; a client that puts it first saves
    itself the try of a dead host."""
    values: dict[str, str] = {}
    for index, hosts in shards:
        values[f"SHARD{index}_HOST"] = hosts
        values[f"SHARD{index}_PORT"] = "6432"  # libpq: one port for every host
        values[f"SHARD{index}_TARGET_SESSION_ATTRS"] = TARGET_SESSION_ATTRS
        values[f"SHARD{index}_CONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_SECONDS)
        values[f"SHARD{index}_TCP_USER_TIMEOUT"] = str(TCP_USER_TIMEOUT_MS)
        values.update({f"SHARD{index}_{key}": value for key, value in KEEPALIVES.items()})
        values[f"SHARD{index}_USER"] = user
        values[f"SHARD{index}_DATABASE"] = APP_DATABASE
        values[f"SHARD{index}_PASSWORD"] = passwords[(index, user)]
    return env_file(values)


def posthog_ingest(api_key: str, host: str) -> str:
    return env_file({"POSTHOG_API_KEY": api_key, "POSTHOG_HOST": host})



def mek_presence_files(key_file: str = MEK_PATH, textfile: str = MEK_PRESENCE_TEXTFILE,
                       script: str = MEK_PRESENCE_SCRIPT) -> dict[str, str]:
    """On a server that holds the key (MEK_TASKS): the textfile collector (files/mek_presence.sh)
    with its parameters, its oneshot service and timer. Nothing secret: it reads only whether the
    key file is there."""
    service = "\n".join([
        "[Unit]",
        "Description=Whether the Master Encryption Key is in RAM, for node_exporter (unde-infra)",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={script}",
        "",
    ])
    timer = timer_unit("Check the Master Encryption Key's presence (unde-infra)",
                       ["OnBootSec=30s", f"OnUnitActiveSec={MEK_PRESENCE_INTERVAL}"])
    return {
        script: source("mek_presence.sh"),
        f"{script}.env": shell_settings({"KEY_FILE": key_file, "TEXTFILE": textfile}),
        f"/etc/systemd/system/{MEK_PRESENCE_UNIT}.service": service,
        f"/etc/systemd/system/{MEK_PRESENCE_UNIT}.timer": timer,
    }


def mek_presence_setup() -> str:
    return "\n".join(["set -e", "systemctl daemon-reload", f"systemctl enable --now {MEK_PRESENCE_UNIT}.timer",
                      f"systemctl start {MEK_PRESENCE_UNIT}.service"])
