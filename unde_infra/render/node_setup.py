"""Shell run on a server after its files change: install what is missing, then reload.

Day 2 of each role. Idempotent, and reloading rather than restarting wherever the service can
re-read its configuration (a restart of Patroni would cost the shard its leader)."""

from __future__ import annotations

from .pgbackrest import BACKUP_TIMER
from .postgres import PG_VERSION

PGDG_KEY = "/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc"


def shard_node_setup(pg_version: int = PG_VERSION) -> str:
    """PostgreSQL from the PGDG repository (Debian 12 ships 15; the plan wants 17 with pgvector),
    Patroni, PgBouncer, pgBackRest and postgres_exporter from Debian. Debian's own `main`
    cluster is never created: Patroni owns the data directory."""
    return "\n".join(
        [
            "set -e",
            "export DEBIAN_FRONTEND=noninteractive",
            "install -d -m 0755 /etc/postgresql-common/createcluster.d",
            "echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/unde-no-main.conf",
            f"if ! test -x /usr/lib/postgresql/{pg_version}/bin/postgres; then",
            f"  install -d -m 0755 {PGDG_KEY.rsplit('/', 1)[0]}",
            f"  curl -fsSL -o {PGDG_KEY} https://www.postgresql.org/media/keys/ACCC4CF8.asc",
            f"  echo 'deb [signed-by={PGDG_KEY}] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main'"
            " > /etc/apt/sources.list.d/pgdg.list",
            "  apt-get update -q",
            f"  apt-get install -y -q postgresql-{pg_version} postgresql-{pg_version}-pgvector",
            "fi",
            "apt-get install -y -q patroni pgbouncer pgbackrest prometheus-postgres-exporter",
            "systemctl daemon-reload",
            f"systemctl enable patroni pgbouncer prometheus-postgres-exporter {BACKUP_TIMER}",
            "systemctl reload-or-restart pgbouncer prometheus-postgres-exporter",
            # Started once; afterwards a changed patroni.yml is re-read on reload (SIGHUP).
            "systemctl is-active --quiet patroni && systemctl reload patroni || systemctl start patroni",
            f"systemctl start {BACKUP_TIMER}",
        ]
    )


def etcd_member_setup() -> str:
    """etcd from Debian, configured by its config file (the unit drop-in)."""
    return "\n".join(
        [
            "set -e",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server",
            "systemctl daemon-reload",
            "systemctl enable etcd",
            # A member re-reads its configuration only on start; members restart one per stack
            # run, so the two others keep the quorum meanwhile.
            "systemctl restart etcd",
        ]
    )
