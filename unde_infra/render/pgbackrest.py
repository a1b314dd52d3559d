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

from ..known import BACKUP_BUCKET
from ..model import Inventory, Server, Shard
from .escape import env_file, ini_file, shell_word, sql_string
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

_RUNNER = r'''#!/usr/bin/python3
"""pgBackRest runner of one stanza. Rendered by unde-infra; edits are overwritten.

  pgbackrest-run is-primary      exit 0 on the node that takes writes, 1 elsewhere
  pgbackrest-run stanza          create the stanza where it does not exist yet
  pgbackrest-run backup TYPE     full|diff|incr, only on the primary; then metrics
  pgbackrest-run metrics         write the textfile-collector metrics

Runs as root; pgBackRest and psql run as the postgres user, with this process's environment
(the repository keys that systemd read from the root-only environment file)."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

SETTINGS = __SETTINGS__


def as_postgres(args, **kwargs):
    prefix = [] if os.geteuid() != 0 else ["runuser", "-u", SETTINGS["os_user"], "--"]
    return subprocess.run(prefix + args, **kwargs)


def pgbackrest(*args, check=True, capture=False):
    cmd = ["pgbackrest", "--config=" + SETTINGS["config"], "--stanza=" + SETTINGS["stanza"], *args]
    return as_postgres(cmd, check=check, text=True, capture_output=capture, timeout=SETTINGS["timeout"])


def info_entry():
    """The stanza's entry of `pgbackrest info`, or None when the repository could not be read."""
    try:
        out = pgbackrest("--output=json", "--log-level-file=off", "info", check=False, capture=True)
        entries = json.loads(out.stdout)
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    return next((e for e in entries if e.get("name") == SETTINGS["stanza"]), None)


def stanza_status():
    """pgBackRest's status code of the stanza (0 ok, 1 missing stanza path, 2 no backup yet,
    3 missing stanza data, ...), or None when the repository could not be read."""
    entry = info_entry()
    return None if entry is None else entry.get("status", {}).get("code")


def ensure_stanza():
    """Create the stanza where it does not exist yet. stanza-create takes the archive lock,
    which the asynchronous archiver holds while it pushes (or retries) WAL: wait for it."""
    for _ in range(20):
        if stanza_status() not in (None, 1, 3):
            return 0
        created = pgbackrest("stanza-create", check=False)
        if created.returncode == 0:
            return 0
        if created.returncode != 50:  # 50: lock held by another pgBackRest process
            return created.returncode
        time.sleep(3)
    return 50


def is_primary():
    api = SETTINGS["patroni_api"]
    if api:
        # Patroni answers 200 on /primary only on the member that holds the leader lock.
        try:
            with urllib.request.urlopen(api + "/primary", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
    out = as_postgres([SETTINGS["psql"], "-h", SETTINGS["socket_dir"], "-p", str(SETTINGS["port"]), "-XAtqc",
                       "SELECT pg_is_in_recovery()"], text=True, capture_output=True, timeout=30)
    return out.returncode == 0 and out.stdout.strip() == "f"


def metrics():
    stanza = SETTINGS["stanza"]
    last = {"full": 0.0, "diff": 0.0, "incr": 0.0}
    size, count, ok = 0, 0, 0
    entry = info_entry()
    if entry is not None:
        ok = 1 if entry.get("status", {}).get("code") in (0, 2) else 0  # 2: no backup yet
        for backup in entry.get("backup", []):
            kind = backup.get("type")
            stop = float(backup.get("timestamp", {}).get("stop", 0))
            if kind in last:
                last[kind] = max(last[kind], stop)
            size += int(backup.get("info", {}).get("repository", {}).get("delta", 0))
            count += 1
    label = 'stanza="%s"' % stanza
    lines = [
        "# HELP __LAST__ Stop time of the newest backup of each type (0 when there is none).",
        "# TYPE __LAST__ gauge",
        *('__LAST__{%s,type="%s"} %.0f' % (label, kind, value) for kind, value in sorted(last.items())),
        "# HELP __SIZE__ Bytes the kept backups occupy in the repository (WAL archive not counted).",
        "# TYPE __SIZE__ gauge",
        "__SIZE__{%s} %d" % (label, size),
        "# HELP __COUNT__ Backups kept in the repository.",
        "# TYPE __COUNT__ gauge",
        "__COUNT__{%s} %d" % (label, count),
        "# HELP __OK__ 1 when pgbackrest info read the stanza.",
        "# TYPE __OK__ gauge",
        "__OK__{%s} %d" % (label, ok),
    ]
    directory = SETTINGS["textfile_dir"]
    if not os.path.isdir(directory):
        return ok
    path = os.path.join(directory, SETTINGS["metrics_file"])
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # node_exporter never reads a half-written file
    return ok


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command = argv[0]
    if command == "is-primary":
        return 0 if is_primary() else 1
    if command == "stanza":
        return ensure_stanza()
    if command == "metrics":
        metrics()
        return 0
    if command == "backup" and len(argv) == 2 and argv[1] in ("full", "diff", "incr"):
        if not is_primary():
            print("not the primary: no backup here", file=sys.stderr)
            metrics()
            return 0
        started = time.time()
        created = ensure_stanza()
        if created != 0:
            return created
        result = pgbackrest("--type=" + argv[1], "backup", check=False)
        metrics()
        print("%s backup of %s: exit %d after %.0f s" % (argv[1], SETTINGS["stanza"], result.returncode,
                                                         time.time() - started), file=sys.stderr)
        return result.returncode
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


def runner_script(stanza: Stanza, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
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
    }
    return (
        _RUNNER.replace("__SETTINGS__", repr(settings))
        .replace("__LAST__", LAST_BACKUP_METRIC)
        .replace("__SIZE__", REPO_SIZE_METRIC)
        .replace("__COUNT__", BACKUP_COUNT_METRIC)
        .replace("__OK__", INFO_SUCCESS_METRIC)
    )


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
        layout.pgbackrest_runner: (runner_script(stanza, layout), "0755", False),
    }
    files.update({path: (text, "0644", False) for path, text in backup_units(stanza, layout).items()})
    return files


def standalone_setup(server: Server, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    """Shell run after the files change: pgBackRest installed, the data directory found, WAL
    archiving switched on with a reload. archive_mode itself takes effect only at PostgreSQL's
    next restart, which this never does on its own: until then the backups fail and the
    BackupFullTooOld alert says so (README: one restart in a maintenance window)."""
    stanza = standalone_stanza(server, layout)
    psql = "runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1"
    archive = f"pgbackrest --config={layout.pgbackrest_config} --stanza={stanza.name} archive-push %p"
    return "\n".join(
        [
            "set -e",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest",
            f"install -d -o postgres -g postgres -m 0750 {layout.pgbackrest_log_dir} {layout.pgbackrest_spool_dir} "
            f"{layout.pgbackrest_lock_dir}",
            f"chown postgres:postgres {STANDALONE_SECRETS_CONF} && chmod 0600 {STANDALONE_SECRETS_CONF}",
            f'data_dir=$({psql} -c "SHOW data_directory")',
            f"printf '[%s]\\npg1-path=%s\\n' {shell_word(stanza.name)} \"$data_dir\" > {STANDALONE_PG_PATH_CONF}",
            f"{psql} -c {shell_word(f'ALTER SYSTEM SET archive_command = {sql_string(archive)}')}",
            f"{psql} -c \"ALTER SYSTEM SET archive_mode = 'on'\" -c 'SELECT pg_reload_conf()'",
            f'if [ "$({psql} -c "SHOW archive_mode")" != on ]; then',
            "  echo 'archive_mode takes effect at the next restart of PostgreSQL: backups wait for it' >&2",
            "fi",
            "systemctl daemon-reload",
            f"systemctl enable --now {' '.join(BACKUP_TIMERS)}",
        ]
    )
