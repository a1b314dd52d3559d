"""pgBackRest of a shard node: WAL archive and backups in the `unde-backups` bucket.

The configuration file carries no key: S3 keys and the repository cipher pass live in a
root-only environment file that systemd reads for Patroni (so PostgreSQL's archive_command and
restore_command inherit them) and for the backup timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Inventory, Shard
from .postgres import DEFAULT_LAYOUT, SUPERUSER, NodeLayout, ShardSecrets

BACKUP_BUCKET = "unde-backups"
ENV_FILE_NAME = "pgbackrest.env"
BACKUP_SERVICE = "unde-pgbackrest-backup.service"
BACKUP_TIMER = "unde-pgbackrest-backup.timer"


@dataclass(frozen=True)
class S3Repo:
    endpoint: str
    bucket: str
    region: str
    path: str = "/pgbackrest"


@dataclass(frozen=True)
class PosixRepo:
    """A repository on a local path; the failover drill uses it instead of the bucket."""

    path: str


def default_repo(inventory: Inventory) -> S3Repo:
    storage = inventory.object_storage
    if BACKUP_BUCKET not in storage.buckets:
        raise ValueError(f"object_storage.buckets has no {BACKUP_BUCKET!r}; pgBackRest needs it")
    return S3Repo(endpoint=storage.endpoint, bucket=BACKUP_BUCKET, region=storage.region)


def _ini(sections: dict[str, dict[str, str | int]]) -> str:
    out: list[str] = []
    for name, options in sections.items():
        out.append(f"[{name}]")
        out += [f"{key}={value}" for key, value in options.items()]
        out.append("")
    return "\n".join(out)


def pgbackrest_conf(shard: Shard, repo: S3Repo | PosixRepo, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    repo_options: dict[str, str | int]
    if isinstance(repo, S3Repo):
        repo_options = {
            "repo1-type": "s3",
            "repo1-s3-endpoint": repo.endpoint,
            "repo1-s3-bucket": repo.bucket,
            "repo1-s3-region": repo.region,
            # Hetzner Object Storage serves both styles; path style needs no wildcard DNS.
            "repo1-s3-uri-style": "path",
            "repo1-path": repo.path,
        }
    else:
        repo_options = {"repo1-type": "posix", "repo1-path": repo.path}
    global_options: dict[str, str | int] = {
        **repo_options,
        "repo1-cipher-type": "aes-256-cbc",
        "repo1-retention-full": 2,
        "repo1-retention-diff": 7,
        "compress-type": "zst",
        "process-max": 2,
        # Pushing WAL asynchronously keeps a slow 120 ms object store round trip off the
        # primary's archiver; the spool holds WAL while the upload runs.
        "archive-async": "y",
        "spool-path": layout.pgbackrest_spool_dir,
        "log-path": layout.pgbackrest_log_dir,
        "log-level-console": "info",
        "log-level-file": "detail",
        "start-fast": "y",
        "delta": "y",
    }
    stanza: dict[str, str | int] = {
        "pg1-path": layout.data_dir,
        "pg1-port": layout.pg_port,
        "pg1-socket-path": layout.socket_dir,
        "pg1-user": SUPERUSER,
    }
    return _ini({"global": global_options, shard.scope: stanza})


def pgbackrest_env(secrets: ShardSecrets, repo: S3Repo | PosixRepo) -> str:
    """SECRET: pgBackRest reads PGBACKREST_* variables as options."""
    lines = [f"PGBACKREST_REPO1_CIPHER_PASS={secrets.repo_cipher_pass}"]
    if isinstance(repo, S3Repo):
        lines += [f"PGBACKREST_REPO1_S3_KEY={secrets.s3_access_key}", f"PGBACKREST_REPO1_S3_KEY_SECRET={secrets.s3_secret_key}"]
    return "\n".join(lines) + "\n"


def backup_units(shard: Shard, layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, str]:
    """A daily full-or-diff backup that runs only where the shard's primary is, so both nodes
    carry the same units and a failover needs no change."""
    check_primary = (
        f"/bin/sh -c 'test \"$$(psql -h {layout.socket_dir} -p {layout.pg_port} -Atc "
        "\"select pg_is_in_recovery()\")\" = f'"
    )
    service = "\n".join(
        [
            "[Unit]",
            f"Description=pgBackRest backup of {shard.scope} (unde-infra)",
            "After=patroni.service",
            "",
            "[Service]",
            "Type=oneshot",
            f"User={SUPERUSER}",
            f"EnvironmentFile={layout.secrets_dir}/{ENV_FILE_NAME}",
            f"ExecCondition={check_primary}",
            f"ExecStart=/usr/bin/pgbackrest --config={layout.pgbackrest_config} --stanza={shard.scope} backup",
            "",
        ]
    )
    timer = "\n".join(
        [
            "[Unit]",
            f"Description=Daily pgBackRest backup of {shard.scope}",
            "",
            "[Timer]",
            "OnCalendar=*-*-* 03:30:00",
            "RandomizedDelaySec=30min",
            "Persistent=true",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return {f"{layout.systemd_dir}/{BACKUP_SERVICE}": service, f"{layout.systemd_dir}/{BACKUP_TIMER}": timer}
