"""pgBackRest: WAL archive and backups in the `unde-backups` bucket, for the shards and for the
PostgreSQL servers this program does not run itself (production-db, staging-db).

The configuration file carries no key: S3 keys and the repository cipher pass live in a
root-only environment file that systemd reads for Patroni (so PostgreSQL's archive_command and
restore_command inherit them) and for the backup units.

What runs, per stanza:
* the stanza is created at bootstrap (Patroni's post_bootstrap) and again, idempotently, before
  every backup, so a repository that was unreachable at bootstrap is set up on the next run;
* a full backup every week and a differential one on the other days, by systemd timers present
  on every node of a shard: the backup runs only where the primary is (Patroni's REST API says
  so), so a failover needs no change;
* retention expires old backups after each backup (pgBackRest's own expire), and the WAL older
  than the oldest kept full backup with them;
* archive-push is asynchronous with a spool, so a short repository outage delays nothing on
  the primary;
* a metrics collector writes the age of the last full and differential backup and the size of
  the repository for node_exporter's textfile collector.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..files import SetupStep, python_script
from ..known import BACKUP_BUCKET
from ..model import Inventory, Server, Shard
from .escape import env_file, ini_file
from .postgres import DEFAULT_LAYOUT, SUPERUSER, NodeLayout, ShardSecrets
from .systemd import timer_unit

ENV_FILE_NAME = "pgbackrest.env"
BACKUP_SERVICE_TEMPLATE = "unde-pgbackrest-backup@.service"
METRICS_SERVICE = "unde-pgbackrest-metrics.service"
# Timer name -> (backup type, OnCalendar). Sunday's full backup replaces that day's diff.
BACKUP_SCHEDULE = {
    "unde-pgbackrest-full.timer": ("full", "Sun *-*-* 02:30:00"),
    "unde-pgbackrest-diff.timer": ("diff", "Mon..Sat *-*-* 02:30:00"),
}
METRICS_TIMER = "unde-pgbackrest-metrics.timer"
BACKUP_TIMERS = (*BACKUP_SCHEDULE, METRICS_TIMER)
METRICS_INTERVAL_SECONDS = 300
METRICS_FILE = "unde_pgbackrest.prom"
# Two weekly fulls: point-in-time recovery reaches 7-14 days back; a diff for every other day.
RETENTION_FULL = 2
# How often a full backup runs (BACKUP_SCHEDULE's full timer: one day a week); the oldest kept
# full is (RETENTION_FULL - 1) to RETENTION_FULL of these old (`runbook restore` estimates with it).
FULL_BACKUP_INTERVAL_DAYS = 7
RETENTION_DIFF = 7
# While the repository is unreachable the spool holds WAL; past this much pgBackRest drops it
# (the archive gets a gap, the primary's disk stays safe). The same bound as the replication
# slot's (postgres.MAX_SLOT_WAL_KEEP_SIZE): either guard gives up only long after the alerts.
ARCHIVE_PUSH_QUEUE_MAX = "40GiB"
# The metric names the collector writes; render/monitoring.py alerts on them.
LAST_BACKUP_METRIC = "unde_pgbackrest_last_backup_timestamp_seconds"
REPO_SIZE_METRIC = "unde_pgbackrest_repo_size_bytes"
INFO_SUCCESS_METRIC = "unde_pgbackrest_info_success"
BACKUP_COUNT_METRIC = "unde_pgbackrest_backups"


@dataclass(frozen=True)
class S3Repo:
    endpoint: str
    bucket: str
    region: str
    path: str = "/pgbackrest"
    # Only the restore drill sets these: its S3 server listens on a port of its own with a
    # certificate from a throw-away CA.
    port: int | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class PosixRepo:
    """A repository on a local path; the failover drill uses it instead of the bucket."""

    path: str


Repo = S3Repo | PosixRepo


@dataclass(frozen=True)
class Stanza:
    """One PostgreSQL cluster backed up into the repository."""

    name: str
    # None: found on the server at set-up time (an existing server's data directory).
    data_dir: str | None
    port: int
    socket_dir: str
    # Where to ask whether this node is the primary: Patroni's REST API, else PostgreSQL itself.
    patroni_api: str | None


def default_repo(inventory: Inventory, path: str = "/pgbackrest") -> S3Repo:
    storage = inventory.object_storage
    if BACKUP_BUCKET not in storage.buckets:
        raise ValueError(f"object_storage.buckets has no {BACKUP_BUCKET!r}; pgBackRest needs it")
    return S3Repo(endpoint=storage.endpoint, bucket=BACKUP_BUCKET, region=storage.region, path=path)


def standalone_repo(inventory: Inventory, server: Server) -> S3Repo:
    """An existing PostgreSQL server's repository: the same bucket, under the server's own prefix."""
    return default_repo(inventory, path=f"/{server.name}/pgbackrest")


def shard_stanza(shard: Shard, server: Server, layout: NodeLayout = DEFAULT_LAYOUT) -> Stanza:
    return Stanza(
        name=shard.scope, data_dir=layout.data_dir, port=layout.pg_port, socket_dir=layout.socket_dir,
        patroni_api=f"http://{server.ip}:{layout.patroni_port}",
    )


def standalone_stanza(server: Server, layout: NodeLayout = DEFAULT_LAYOUT) -> Stanza:
    return Stanza(name=server.name, data_dir=None, port=layout.pg_port, socket_dir=layout.socket_dir, patroni_api=None)


def repo_options(repo: Repo) -> dict[str, str | int]:
    if isinstance(repo, PosixRepo):
        return {"repo1-type": "posix", "repo1-path": repo.path}
    options: dict[str, str | int] = {
        "repo1-type": "s3",
        "repo1-s3-endpoint": repo.endpoint,
        "repo1-s3-bucket": repo.bucket,
        "repo1-s3-region": repo.region,
        # Hetzner Object Storage serves both styles; path style needs no wildcard DNS.
        "repo1-s3-uri-style": "path",
        "repo1-path": repo.path,
    }
    if repo.port is not None:
        options["repo1-storage-port"] = repo.port
    if repo.ca_file is not None:
        options["repo1-storage-ca-file"] = repo.ca_file
    return options


def stanza_conf(stanza: Stanza, repo: Repo, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    global_options: dict[str, str | int] = {
        **repo_options(repo),
        "repo1-cipher-type": "aes-256-cbc",
        "repo1-retention-full": RETENTION_FULL,
        "repo1-retention-diff": RETENTION_DIFF,
        "compress-type": "zst",
        "process-max": 2,
        # Pushing WAL asynchronously keeps a slow 120 ms object store round trip off the
        # primary's archiver; the spool holds WAL while the upload runs.
        "archive-async": "y",
        "archive-push-queue-max": ARCHIVE_PUSH_QUEUE_MAX,
        "spool-path": layout.pgbackrest_spool_dir,
        "lock-path": layout.pgbackrest_lock_dir,
        "log-path": layout.pgbackrest_log_dir,
        "log-level-console": "info",
        "log-level-file": "detail",
        "start-fast": "y",
        "delta": "y",
    }
    section: dict[str, str | int] = {}
    if stanza.data_dir is not None:
        section["pg1-path"] = stanza.data_dir
    section.update({"pg1-port": stanza.port, "pg1-socket-path": stanza.socket_dir, "pg1-user": SUPERUSER})
    return ini_file({"global": global_options, stanza.name: section})


def pgbackrest_conf(shard: Shard, repo: Repo, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    return stanza_conf(shard_stanza(shard, shard.primary, layout), repo, layout)


def pgbackrest_env(secrets: ShardSecrets, repo: Repo) -> str:
    """SECRET: pgBackRest reads PGBACKREST_* variables as options."""
    return repo_env(secrets.repo_cipher_pass, secrets.s3_access_key, secrets.s3_secret_key, repo)


def repo_env(cipher_pass: str, s3_key: str, s3_secret: str, repo: Repo) -> str:
    """SECRET: the repository's cipher pass and, for S3, its keys."""
    values = {"PGBACKREST_REPO1_CIPHER_PASS": cipher_pass}
    if isinstance(repo, S3Repo):
        values.update({"PGBACKREST_REPO1_S3_KEY": s3_key, "PGBACKREST_REPO1_S3_KEY_SECRET": s3_secret})
    _require_one_line(values)
    return env_file(values)


def _require_one_line(values: dict[str, str]) -> None:
    """A secret that reaches a line-based file must be one non-empty line, or it adds lines."""
    for name, value in values.items():
        if not value or any(c in value for c in "\n\r\0"):
            raise ValueError(f"{name} must be one non-empty line")


# --------------------------------------------------------------------------------------------
# The runner: one script for the timers, the drills and people (`pgbackrest-run backup full`).

RUNNER_SOURCE = "pgbackrest_run.py"


def runner_files(stanza: Stanza, layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, str]:
    """pgbackrest-run (files/pgbackrest_run.py) and its parameters beside it."""
    settings = {
        "stanza": stanza.name,
        "config": layout.pgbackrest_config,
        "patroni_api": stanza.patroni_api,
        "psql": f"{layout.bin_dir}/psql" if stanza.data_dir is not None else "psql",
        "socket_dir": stanza.socket_dir,
        "port": stanza.port,
        "os_user": "postgres",
        "textfile_dir": layout.textfile_dir,
        "metrics_file": METRICS_FILE,
        # A full backup of a 32 GB shard over the 120 ms link to the bucket: hours, not days.
        "timeout": 12 * 3600,
        "metrics": {
            "last": LAST_BACKUP_METRIC, "size": REPO_SIZE_METRIC, "count": BACKUP_COUNT_METRIC, "ok": INFO_SUCCESS_METRIC,
        },
    }
    return python_script(layout.pgbackrest_runner, RUNNER_SOURCE, settings)


def backup_units(stanza: Stanza, layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, str]:
    """The backup and metrics units of a node. Every node of a shard has them; the runner
    decides on each run whether this node is the primary. An existing server keeps its keys in
    a pgBackRest configuration file instead (standalone_files), so its units need no environment."""
    env = f"EnvironmentFile={layout.secrets_dir}/{ENV_FILE_NAME}" if stanza.patroni_api else ""
    after = "After=patroni.service" if stanza.patroni_api else "After=postgresql.service"
    service = "\n".join(
        [
            "[Unit]",
            f"Description=pgBackRest %i backup of {stanza.name} (unde-infra)",
            after,
            "",
            "[Service]",
            "Type=oneshot",
            env,
            f"ExecStart=/usr/bin/python3 {layout.pgbackrest_runner} backup %i",
            "",
        ]
    )
    metrics_service = "\n".join(
        [
            "[Unit]",
            f"Description=pgBackRest metrics of {stanza.name} for node_exporter (unde-infra)",
            "",
            "[Service]",
            "Type=oneshot",
            env,
            f"ExecStart=/usr/bin/python3 {layout.pgbackrest_runner} metrics",
            "",
        ]
    )
    files = {
        f"{layout.systemd_dir}/{BACKUP_SERVICE_TEMPLATE}": service,
        f"{layout.systemd_dir}/{METRICS_SERVICE}": metrics_service,
        f"{layout.systemd_dir}/{METRICS_TIMER}": timer_unit(
            f"pgBackRest metrics of {stanza.name} (unde-infra)",
            ["OnBootSec=60s", f"OnUnitActiveSec={METRICS_INTERVAL_SECONDS}s"], METRICS_SERVICE,
        ),
    }
    for timer, (kind, calendar) in BACKUP_SCHEDULE.items():
        files[f"{layout.systemd_dir}/{timer}"] = timer_unit(
            f"{kind} pgBackRest backup of {stanza.name} (unde-infra)",
            [f"OnCalendar={calendar}", "RandomizedDelaySec=30min", "Persistent=true"],
            BACKUP_SERVICE_TEMPLATE.replace("@", f"@{kind}"),
        )
    return files


# --------------------------------------------------------------------------------------------
# Existing PostgreSQL servers (production-db, staging-db): Debian's PostgreSQL, not Patroni.

STANDALONE_CONFIG_DIR = "/etc/pgbackrest/conf.d"
STANDALONE_SECRETS_CONF = f"{STANDALONE_CONFIG_DIR}/unde-secrets.conf"
STANDALONE_PG_PATH_CONF = f"{STANDALONE_CONFIG_DIR}/unde-pg1-path.conf"


def standalone_secrets_conf(cipher_pass: str, s3_key: str, s3_secret: str) -> str:
    """SECRET: the repository keys as pgBackRest options, in a file only the postgres user reads.
    PostgreSQL's archive_command on these servers starts without systemd's help, and giving it an
    environment would mean restarting a running production database."""
    values = {"repo1-cipher-pass": cipher_pass, "repo1-s3-key": s3_key, "repo1-s3-key-secret": s3_secret}
    _require_one_line(values)
    return ini_file({"global": dict(values)})


def standalone_files(server: Server, inventory: Inventory, cipher_pass: str, s3_key: str, s3_secret: str,
                     layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, tuple[str, str, bool]]:
    """path -> (content, mode, secret) of an existing PostgreSQL server's backups."""
    stanza = standalone_stanza(server, layout)
    files = {
        layout.pgbackrest_config: (stanza_conf(stanza, standalone_repo(inventory, server), layout), "0644", False),
        STANDALONE_SECRETS_CONF: (standalone_secrets_conf(cipher_pass, s3_key, s3_secret), "0600", True),
    }
    for path, text in runner_files(stanza, layout).items():
        files[path] = (text, "0755" if path == layout.pgbackrest_runner else "0644", False)
    files.update({path: (text, "0644", False) for path, text in backup_units(stanza, layout).items()})
    return files


def standalone_setup(server: Server, layout: NodeLayout = DEFAULT_LAYOUT) -> SetupStep:
    """files/standalone_backup_setup.sh: pgBackRest installed, the data directory found, WAL
    archiving switched on with a reload (never a restart of the running database)."""
    stanza = standalone_stanza(server, layout)
    settings: dict[str, str | int] = {
        "CONFIG": layout.pgbackrest_config, "SECRETS_CONF": STANDALONE_SECRETS_CONF,
        "PG_PATH_CONF": STANDALONE_PG_PATH_CONF, "STANZA": stanza.name, "LOG_DIR": layout.pgbackrest_log_dir,
        "SPOOL_DIR": layout.pgbackrest_spool_dir, "LOCK_DIR": layout.pgbackrest_lock_dir,
        "BACKUP_TIMERS": " ".join(BACKUP_TIMERS),
    }
    if any("'" in str(value) for value in settings.values()):
        raise ValueError("a quote in the archive command's parts would break its SQL")
    return SetupStep(f"{layout.tools_dir}/standalone-backup-setup", "standalone_backup_setup.sh", settings)
