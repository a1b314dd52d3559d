"""Patroni of each shard node, and every file a shard node receives.

Model: autobase's patroni.yml template (every knob named), reduced to what UNDE's two-site
shards need. One Patroni cluster (scope) per shard, all shards sharing the etcd quorum of the
chosen placement. `patroni.yml` carries no password: Patroni reads PATRONI_*_PASSWORD from a
root-only environment file that systemd loads, so the configuration can be shown in previews,
diffs and test output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import timings
from ..files import shell_settings, source
from ..model import Inventory, Server, Shard
from . import pgbackrest, pgbouncer, postgres_exporter
from .cloud_init import dump_yaml
from .escape import env_file
from .etcd import DEFAULT_ETCD_LAYOUT, EtcdLayout, patroni_hosts
from .postgres import (
    APP_DATABASE,
    APP_USERS,
    DEFAULT_LAYOUT,
    EXPORTER_USER,
    PGBOUNCER_USER,
    REPLICATION_USER,
    REWIND_USER,
    SUPERUSER,
    NodeLayout,
    ShardSecrets,
    cluster_parameters,
    node_parameters,
    pg_hba,
    restore_command,
)

Node = Literal["primary", "replica"]
NAMESPACE = "/unde/"
# With asynchronous replication a local restart loses nothing and a failover may; give a
# crashed PostgreSQL this long to come back before the replica takes over.
PRIMARY_START_TIMEOUT = 60
POST_BOOTSTRAP_SCRIPT = "post_bootstrap.sh"
# Patroni's on_role_change callback and what it touches (files/pgbouncer_role_change.sh): a root
# path unit restarts PgBouncer on every role change, so clients see the node's new role.
ROLE_CHANGE_SCRIPT = "pgbouncer_role_change.sh"
ROLE_CHANGE_FILE = "/run/postgresql/unde-role-change"
ROLE_CHANGE_UNIT = "unde-pgbouncer-role-change"
POST_BOOTSTRAP_SQL = "post_bootstrap.sql"
POST_BOOTSTRAP_SETTINGS = f"{POST_BOOTSTRAP_SCRIPT}.env"  # beside the script, which sources it as "$0.env"
PATRONI_ENV = "patroni.env"


@dataclass(frozen=True)
class PatroniTimings:
    ttl: int = timings.PATRONI_TTL
    loop_wait: int = timings.PATRONI_LOOP_WAIT
    retry_timeout: int = timings.PATRONI_RETRY_TIMEOUT
    maximum_lag_on_failover: int = timings.MAXIMUM_LAG_ON_FAILOVER_BYTES

    def __post_init__(self) -> None:
        if not timings.patroni_rule_holds(self.ttl, self.loop_wait, self.retry_timeout):
            raise ValueError(
                f"Patroni timings break loop_wait + 2 * retry_timeout <= ttl: "
                f"{self.loop_wait} + 2 * {self.retry_timeout} > {self.ttl}"
            )


DEFAULT_TIMINGS = PatroniTimings()


@dataclass(frozen=True)
class RenderedFile:
    content: str
    owner: str = "root"
    group: str = "root"
    mode: str = "0644"
    secret: bool = False


def node_server(shard: Shard, node: Node) -> Server:
    if node == "primary":
        return shard.primary
    if node == "replica":
        return shard.replica
    raise ValueError(f"node must be 'primary' or 'replica', got {node!r}")


def patroni_config(
    shard: Shard,
    node: Node,
    inventory: Inventory,
    *,
    layout: NodeLayout = DEFAULT_LAYOUT,
    etcd_layout: EtcdLayout = DEFAULT_ETCD_LAYOUT,
    patroni_timings: PatroniTimings = DEFAULT_TIMINGS,
) -> dict[str, object]:
    server = node_server(shard, node)
    hba = pg_hba(shard, inventory)
    return {
        "scope": shard.scope,
        "namespace": NAMESPACE,
        "name": server.name,
        "log": {"dir": layout.patroni_log_dir, "level": "INFO", "file_num": 10, "file_size": 26214400},
        "restapi": {
            "listen": f"{server.ip}:{layout.patroni_port}",
            "connect_address": f"{server.ip}:{layout.patroni_port}",
        },
        "etcd3": {"hosts": patroni_hosts(inventory, etcd_layout), "protocol": "http"},
        "bootstrap": {
            "dcs": {
                "ttl": patroni_timings.ttl,
                "loop_wait": patroni_timings.loop_wait,
                "retry_timeout": patroni_timings.retry_timeout,
                "maximum_lag_on_failover": patroni_timings.maximum_lag_on_failover,
                "primary_start_timeout": PRIMARY_START_TIMEOUT,
                # Keeps a primary writable through an etcd outage as long as it reaches every
                # Patroni member; it cannot help when the other member is cut off too.
                "failsafe_mode": True,
                # sync shards: a commit is acknowledged only once the replica has it. Not strict:
                # when the replica is gone, Patroni drops it from synchronous_standby_names (and
                # from the members it may promote) and writes go on unreplicated.
                "synchronous_mode": shard.synchronous,
                "synchronous_mode_strict": False,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": cluster_parameters(shard, layout),
                },
            },
            # pg_rewind needs checksums (or wal_log_hints); checksums also catch disk corruption.
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
            "pg_hba": list(hba),
            "post_bootstrap": f"{layout.patroni_dir}/{POST_BOOTSTRAP_SCRIPT}",
        },
        "postgresql": {
            "listen": f"{server.ip},127.0.0.1:{layout.pg_port}",
            "connect_address": f"{server.ip}:{layout.pg_port}",
            "data_dir": layout.data_dir,
            "bin_dir": layout.bin_dir,
            "pgpass": layout.pgpass,
            # Passwords come from PATRONI_SUPERUSER_PASSWORD etc. (patroni.env).
            "authentication": {
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
                "rewind": {"username": REWIND_USER},
            },
            "parameters": {**node_parameters(server), "unix_socket_directories": layout.socket_dir},
            "pg_hba": hba,
            "callbacks": {"on_role_change": f"{layout.patroni_dir}/{ROLE_CHANGE_SCRIPT}"},
            "use_pg_rewind": True,
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
            # A new Helsinki replica restores from the bucket next door instead of pulling the
            # whole shard across the 120 ms link; basebackup is the fallback (empty repository).
            "create_replica_methods": ["pgbackrest", "basebackup"],
            "pgbackrest": {
                "command": f"pgbackrest --config={layout.pgbackrest_config} --stanza={shard.scope} --delta restore",
                "keep_data": True,
                "no_params": True,
            },
            "basebackup": {"checkpoint": "fast", "max-rate": "200M"},
            "recovery_conf": {"restore_command": restore_command(shard, layout)},
        },
        # A watchdog reboots a node whose Patroni hangs while PostgreSQL still takes writes;
        # "automatic" uses it where the device exists and runs without it elsewhere.
        "watchdog": {"mode": "automatic", "device": "/dev/watchdog", "safety_margin": 5},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def patroni_yaml(
    shard: Shard,
    node: Node,
    inventory: Inventory,
    *,
    layout: NodeLayout = DEFAULT_LAYOUT,
    etcd_layout: EtcdLayout = DEFAULT_ETCD_LAYOUT,
    patroni_timings: PatroniTimings = DEFAULT_TIMINGS,
) -> str:
    config = patroni_config(
        shard, node, inventory, layout=layout, etcd_layout=etcd_layout, patroni_timings=patroni_timings
    )
    return dump_yaml(config)


def patroni_env(secrets: ShardSecrets) -> str:
    """SECRET: the environment Patroni starts with (it hands UNDE_* on to the post-bootstrap
    script; PostgreSQL itself never sees PATRONI_* variables)."""
    values = {
        "PATRONI_SUPERUSER_PASSWORD": secrets.superuser_password,
        "PATRONI_REPLICATION_PASSWORD": secrets.replication_password,
        "PATRONI_REWIND_PASSWORD": secrets.rewind_password,
        "UNDE_PGBOUNCER_PASSWORD": secrets.pgbouncer_password,
        "UNDE_EXPORTER_PASSWORD": secrets.exporter_password,
        "UNDE_ORCHESTRATOR_PASSWORD": secrets.orchestrator_password,
        "UNDE_PERSONA_PASSWORD": secrets.persona_password,
    }
    return env_file(values)


def post_bootstrap_settings(layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    """The parameters of files/post_bootstrap.sh (`post_bootstrap.env` beside it)."""
    return shell_settings({
        "PGBACKREST_RUNNER": layout.pgbackrest_runner,
        "PSQL": f"{layout.bin_dir}/psql",
        "POST_BOOTSTRAP_SQL": f"{layout.patroni_dir}/{POST_BOOTSTRAP_SQL}",
    })


def post_bootstrap_sql(layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    per_database = [
        f"CREATE SCHEMA IF NOT EXISTS pgbouncer AUTHORIZATION {SUPERUSER};",
        f"GRANT USAGE ON SCHEMA pgbouncer TO {PGBOUNCER_USER};",
        # PgBouncer's auth_query: reads pg_shadow for one user without making pgbouncer a superuser.
        "CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text) RETURNS TABLE(usename name, passwd text)",
        "  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog",
        "  AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = p_usename $$;",
        "REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;",
        f"GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO {PGBOUNCER_USER};",
    ]
    per_database += [f"CREATE EXTENSION IF NOT EXISTS {name};" for name in layout.extensions]
    lines = [
        "\\getenv pgbouncer_password UNDE_PGBOUNCER_PASSWORD",
        "\\getenv exporter_password UNDE_EXPORTER_PASSWORD",
        *(f"\\getenv {user}_password UNDE_{user.upper()}_PASSWORD" for user in APP_USERS),
        f"CREATE ROLE {PGBOUNCER_USER} LOGIN PASSWORD :'pgbouncer_password';",
        f"CREATE ROLE {EXPORTER_USER} LOGIN PASSWORD :'exporter_password' IN ROLE pg_monitor;",
        *(f"CREATE ROLE {user} LOGIN PASSWORD :'{user}_password';" for user in APP_USERS),
        # template1 too, so every database created later (the shard's own) inherits them.
        *per_database,
        "\\connect template1",
        *per_database,
        f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USERS[0]};",
        *(f"GRANT CONNECT, TEMPORARY ON DATABASE {APP_DATABASE} TO {user};" for user in APP_USERS[1:]),
        "",
    ]
    return "\n".join(lines)


def patroni_unit(shard: Shard, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    """Patroni's own unit (it replaces the one Debian's package ships): Debian's /usr/bin/patroni
    on Debian 13, the pinned virtualenv's on Debian 12 (layout.patroni_bin)."""
    return "\n".join(
        [
            "[Unit]",
            f"Description=Patroni: PostgreSQL HA of {shard.scope} (unde-infra)",
            "After=network-online.target",
            "Wants=network-online.target",
            f"ConditionPathExists={layout.patroni_config}",
            "",
            "[Service]",
            "Type=simple",
            "User=postgres",
            "Group=postgres",
            # systemd reads these root-only files before it drops to the postgres user.
            f"EnvironmentFile={layout.secrets_dir}/{PATRONI_ENV}",
            f"EnvironmentFile={layout.secrets_dir}/{pgbackrest.ENV_FILE_NAME}",
            # Where the on_role_change callback tells the root path unit (ROLE_CHANGE_UNIT).
            f"Environment=UNDE_ROLE_CHANGE_FILE={ROLE_CHANGE_FILE}",
            # Directories the postgres user writes to but cannot create itself.
            f"ExecStartPre=+/usr/bin/install -d -o postgres -g postgres -m 0750 {layout.patroni_log_dir} "
            f"{layout.pgbackrest_log_dir} {layout.pgbackrest_spool_dir}",
            f"ExecStart={layout.patroni_bin} {layout.patroni_config}",
            "ExecReload=/bin/kill -HUP $MAINPID",
            # Patroni stops PostgreSQL itself; killing the whole group would skip its shutdown.
            "KillMode=process",
            "TimeoutSec=30",
            # A crashed Patroni comes back by itself and rejoins as whatever the DCS says.
            "Restart=on-failure",
            "RestartSec=5",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def exporter_unit_dropin(layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    """Debian's prometheus-postgres-exporter unit, given the root-only connection settings."""
    return "\n".join(
        ["[Service]", f"EnvironmentFile={layout.secrets_dir}/{postgres_exporter.ENV_FILE_NAME}", ""]
    )


def shard_node_bundle(
    shard: Shard,
    node: Node,
    inventory: Inventory,
    secrets: ShardSecrets,
    *,
    layout: NodeLayout = DEFAULT_LAYOUT,
    etcd_layout: EtcdLayout = DEFAULT_ETCD_LAYOUT,
    patroni_timings: PatroniTimings = DEFAULT_TIMINGS,
    repo: pgbackrest.S3Repo | pgbackrest.PosixRepo | None = None,
) -> dict[str, RenderedFile]:
    """Every file one shard node receives: absolute path -> content with owner, mode and
    whether it carries a secret. Secrets appear only in files marked secret."""
    return {
        **shard_node_config_files(
            shard, node, inventory, layout=layout, etcd_layout=etcd_layout, patroni_timings=patroni_timings, repo=repo
        ),
        **shard_node_secret_files(secrets, inventory, layout=layout, repo=repo),
    }


def role_change_path_unit() -> str:
    return "\n".join([
        "[Unit]",
        "Description=PgBouncer follows its node's role changes (unde-infra)",
        "",
        "[Path]",
        f"PathChanged={ROLE_CHANGE_FILE}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def role_change_service_unit() -> str:
    return "\n".join([
        "[Unit]",
        "Description=Restart PgBouncer after its node's role changed (unde-infra)",
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=/usr/bin/systemctl try-restart pgbouncer.service",
        "",
    ])


def _pg(content: str, mode: str = "0640") -> RenderedFile:
    return RenderedFile(content, owner="postgres", group="postgres", mode=mode)


def _root_only_secret(content: str) -> RenderedFile:
    return RenderedFile(content, owner="root", group="root", mode="0600", secret=True)


def shard_node_config_files(
    shard: Shard,
    node: Node,
    inventory: Inventory,
    *,
    layout: NodeLayout = DEFAULT_LAYOUT,
    etcd_layout: EtcdLayout = DEFAULT_ETCD_LAYOUT,
    patroni_timings: PatroniTimings = DEFAULT_TIMINGS,
    repo: pgbackrest.S3Repo | pgbackrest.PosixRepo | None = None,
) -> dict[str, RenderedFile]:
    """The files of a shard node that carry no secret: they need no secret value to render."""
    server = node_server(shard, node)
    repo = repo or pgbackrest.default_repo(inventory)
    files: dict[str, RenderedFile] = {
        layout.patroni_config: _pg(
            patroni_yaml(
                shard, node, inventory, layout=layout, etcd_layout=etcd_layout, patroni_timings=patroni_timings
            )
        ),
        f"{layout.patroni_dir}/{POST_BOOTSTRAP_SCRIPT}": _pg(source(POST_BOOTSTRAP_SCRIPT), mode="0750"),
        f"{layout.patroni_dir}/{POST_BOOTSTRAP_SETTINGS}": _pg(post_bootstrap_settings(layout)),
        f"{layout.patroni_dir}/{POST_BOOTSTRAP_SQL}": _pg(post_bootstrap_sql(layout)),
        f"{layout.systemd_dir}/patroni.service": RenderedFile(patroni_unit(shard, layout)),
        f"{layout.patroni_dir}/{ROLE_CHANGE_SCRIPT}": _pg(source(ROLE_CHANGE_SCRIPT), mode="0750"),
        f"{layout.systemd_dir}/{ROLE_CHANGE_UNIT}.path": RenderedFile(role_change_path_unit()),
        f"{layout.systemd_dir}/{ROLE_CHANGE_UNIT}.service": RenderedFile(role_change_service_unit()),
        layout.pgbackrest_config: _pg(pgbackrest.pgbackrest_conf(shard, repo, layout)),
        f"{layout.pgbouncer_dir}/pgbouncer.ini": _pg(pgbouncer.pgbouncer_ini(server, layout)),
        f"{layout.exporter_dir}/queries.yaml": RenderedFile(postgres_exporter.queries_yaml()),
        f"{layout.systemd_dir}/prometheus-postgres-exporter.service.d/unde.conf": RenderedFile(
            exporter_unit_dropin(layout)
        ),
    }
    stanza = pgbackrest.shard_stanza(shard, server, layout)
    for path, content in pgbackrest.runner_files(stanza, layout).items():
        files[path] = RenderedFile(content, mode="0755" if path == layout.pgbackrest_runner else "0644")
    for path, content in pgbackrest.backup_units(stanza, layout).items():
        files[path] = RenderedFile(content)
    return files


def shard_node_secret_files(
    secrets: ShardSecrets,
    inventory: Inventory,
    *,
    layout: NodeLayout = DEFAULT_LAYOUT,
    repo: pgbackrest.S3Repo | pgbackrest.PosixRepo | None = None,
) -> dict[str, RenderedFile]:
    """The files of a shard node that carry its secrets (the same on both nodes)."""
    repo = repo or pgbackrest.default_repo(inventory)
    return {
        f"{layout.secrets_dir}/{PATRONI_ENV}": _root_only_secret(patroni_env(secrets)),
        f"{layout.secrets_dir}/{pgbackrest.ENV_FILE_NAME}": _root_only_secret(pgbackrest.pgbackrest_env(secrets, repo)),
        f"{layout.pgbouncer_dir}/userlist.txt": RenderedFile(
            # PgBouncer (running as postgres) re-reads this file on reload, so it is the one
            # secret file the postgres user owns.
            pgbouncer.userlist(secrets), owner="postgres", group="postgres", mode="0600", secret=True
        ),
        f"{layout.secrets_dir}/{postgres_exporter.ENV_FILE_NAME}": _root_only_secret(
            postgres_exporter.exporter_env(secrets, layout)
        ),
    }


def shard_node_files(
    shard: Shard,
    node: Node,
    inventory: Inventory,
    secrets: ShardSecrets,
    *,
    layout: NodeLayout = DEFAULT_LAYOUT,
    etcd_layout: EtcdLayout = DEFAULT_ETCD_LAYOUT,
    patroni_timings: PatroniTimings = DEFAULT_TIMINGS,
    repo: pgbackrest.S3Repo | pgbackrest.PosixRepo | None = None,
) -> dict[str, str]:
    """Absolute path -> content of every file of one shard node; `secret_paths` says which
    of them carry secrets."""
    bundle = shard_node_bundle(
        shard, node, inventory, secrets, layout=layout, etcd_layout=etcd_layout,
        patroni_timings=patroni_timings, repo=repo,
    )
    return {path: f.content for path, f in bundle.items()}


def secret_paths(layout: NodeLayout = DEFAULT_LAYOUT) -> frozenset[str]:
    """The files of a shard node that carry secrets (root-only, except PgBouncer's userlist)."""
    return frozenset(
        {
            f"{layout.secrets_dir}/{PATRONI_ENV}",
            f"{layout.secrets_dir}/{pgbackrest.ENV_FILE_NAME}",
            f"{layout.secrets_dir}/{postgres_exporter.ENV_FILE_NAME}",
            f"{layout.pgbouncer_dir}/userlist.txt",
        }
    )


def is_secret(path: str, layout: NodeLayout = DEFAULT_LAYOUT) -> bool:
    return path in secret_paths(layout)
