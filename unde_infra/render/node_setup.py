"""Shell run on a server after its files change: install what is missing, then reload.

Day 2 of each role. Idempotent, and reloading rather than restarting wherever the service can
re-read its configuration (a restart of Patroni would cost the shard its leader)."""

from __future__ import annotations

from .escape import shell_command
from .etcd import DEFAULT_ETCD_LAYOUT, LEADER_AFFINITY_UNIT
from .pgbackrest import BACKUP_TIMERS
from .postgres import DEFAULT_LAYOUT, PG_VERSION

PGDG_KEY = "/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc"

# Patroni comes from PyPI at a pinned version, not from Debian: Debian 12 ships 3.0.2, which has
# the double-demote race (patroni issue #3649: two `demote('offline')` start PostgreSQL twice and
# leave pg_control unusable), fixed in 4.0.6 ("Avoid running offline demotion concurrently").
# The failover drill installs this same set with the same commands (tests/conftest.py), so the
# tests run what the servers run.
PATRONI_VERSION = "4.1.5"
PATRONI_REQUIREMENTS = (
    f"patroni[etcd3,psycopg2-binary]=={PATRONI_VERSION}",
    # Everything it pulls in, pinned as well, so that two servers never run different code.
    "certifi==2026.10.18", "charset-normalizer==3.5.2", "click==8.5.1", "dnspython==2.9.2", "idna==3.20",
    "prettytable==3.18.0", "psutil==7.2.2", "psycopg2-binary==2.9.13", "py-consul==1.8.0",
    "python-dateutil==4.0.0", "python-etcd==0.4.5", "PyYAML==6.0.3", "requests==2.34.2", "tzdata==2026.6",
    "urllib3==2.8.0", "wcwidth==0.9.4", "ydiff==1.4.2",
)


def patroni_install(venv: str = DEFAULT_LAYOUT.patroni_venv, python: str = "/usr/bin/python3") -> str:
    """Shell: the pinned Patroni in its own virtualenv, installed only when that exact version
    is not there yet (a reinstall would not restart Patroni, but there is no need for one)."""
    patroni = f"{venv}/bin/patroni"
    requirements = shell_command(PATRONI_REQUIREMENTS)
    return "\n".join(
        [
            f'if [ "$({patroni} --version 2>/dev/null)" != "patroni {PATRONI_VERSION}" ]; then',
            f"  {python} -m venv {venv}",
            f"  {venv}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir {requirements}",
            "fi",
            f'test "$({patroni} --version)" = "patroni {PATRONI_VERSION}"',
        ]
    )


def shard_node_setup(pg_version: int = PG_VERSION) -> str:
    """PostgreSQL from the PGDG repository (Debian 12 ships 15; the plan wants 17 with pgvector),
    Patroni from PyPI (pinned, above), PgBouncer, pgBackRest and postgres_exporter from Debian.
    Debian's own `main` cluster is never created: Patroni owns the data directory."""
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
            "apt-get install -y -q python3-venv curl pgbouncer pgbackrest prometheus-postgres-exporter",
            patroni_install(),
            "systemctl daemon-reload",
            f"systemctl enable patroni pgbouncer prometheus-postgres-exporter {' '.join(BACKUP_TIMERS)}",
            "systemctl reload-or-restart pgbouncer prometheus-postgres-exporter",
            # Started once; afterwards a changed patroni.yml is re-read on reload (SIGHUP).
            "systemctl is-active --quiet patroni && systemctl reload patroni || systemctl start patroni",
            f"systemctl start {' '.join(BACKUP_TIMERS)}",
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
            # The local member's leader affinity (render/etcd.leader_affinity_files), if it has one.
            f"if test -f {DEFAULT_ETCD_LAYOUT.leader_affinity}; then systemctl enable --now {LEADER_AFFINITY_UNIT}.timer; fi",
        ]
    )
