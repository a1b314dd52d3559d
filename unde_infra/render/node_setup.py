"""The setup steps run on a server after its files change: install what is missing, then reload.

Day 2 of each role. Idempotent, and reloading rather than restarting wherever the service can
re-read its configuration (a restart of Patroni would cost the shard its leader). The scripts
are files of unde_infra/files/, delivered with their parameters beside them."""

from __future__ import annotations

from ..files import SetupStep
from ..model import CREATED_OS, OS_CODENAMES
from .etcd import DEFAULT_ETCD_LAYOUT, LEADER_AFFINITY_UNIT
from .patroni import ROLE_CHANGE_UNIT
from .pgbackrest import BACKUP_TIMERS
from .postgres import DEFAULT_LAYOUT, PG_VERSION

PGDG_KEY = "/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc"

# On Debian 13 (the servers the program creates) everything comes from Debian's own archive:
# PostgreSQL 17, pgvector 0.8, Patroni 4.0.7 (it has the 4.0.6 fix below), PgBouncer, pgBackRest,
# postgres_exporter. python3-etcd is named because Patroni's package may be satisfied by
# python3-consul alone (its DCS dependency is a list of alternatives), and its etcd3 DCS imports
# python-etcd.
TRIXIE_SHARD_PACKAGES = (
    f"postgresql-{PG_VERSION}", f"postgresql-{PG_VERSION}-pgvector", "patroni", "python3-etcd",
    "pgbouncer", "pgbackrest", "prometheus-postgres-exporter",
)
BOOKWORM_SHARD_PACKAGES = ("python3-venv", "curl", "pgbouncer", "pgbackrest", "prometheus-postgres-exporter")
# On Debian 12 (adopted hosts) PostgreSQL 17 and pgvector come from PGDG (Debian 12 ships 15 and
# no pgvector), and Patroni from PyPI at a pinned version, not from Debian: Debian 12 ships 3.0.2,
# which has the double-demote race (patroni issue #3649: two `demote('offline')` start PostgreSQL twice and
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


TOOLS_DIR = DEFAULT_LAYOUT.tools_dir
PATRONI_INSTALL_PATH = f"{TOOLS_DIR}/patroni-install"
PGDG_KEY_URL = "https://www.postgresql.org/media/keys/ACCC4CF8.asc"
SHARD_NODE_SERVICES = ("pgbouncer", "prometheus-postgres-exporter")  # reloaded or restarted; Patroni never


def patroni_install(venv: str = DEFAULT_LAYOUT.patroni_venv, python: str = "/usr/bin/python3",
                    path: str = PATRONI_INSTALL_PATH) -> SetupStep:
    """files/patroni_install.sh: the pinned Patroni in its own virtualenv."""
    return SetupStep(path, "patroni_install.sh", {
        "PATRONI_VENV": venv, "PATRONI_VERSION": PATRONI_VERSION,
        "PATRONI_REQUIREMENTS": " ".join(PATRONI_REQUIREMENTS), "PYTHON": python,
    })


def shard_node_setup(os: str = CREATED_OS, pg_version: int = PG_VERSION) -> SetupStep:
    """files/shard_node_setup.sh for a node running `os`: from Debian alone on Debian 13; on
    Debian 12 PostgreSQL from PGDG and the pinned Patroni by patroni_install() (delivered beside
    it). The script refuses to run on another system than the one it was rendered for."""
    codename = OS_CODENAMES[os]
    settings: dict[str, str | int] = {"CODENAME": codename, "PG_VERSION": pg_version}
    if codename == "trixie":
        settings |= {"PGDG_KEY": "", "PGDG_KEY_URL": "", "PGDG_SOURCE": "", "PACKAGES": " ".join(TRIXIE_SHARD_PACKAGES),
                     "PATRONI_INSTALL": "", "PATRONI_VENV": ""}
    else:
        settings |= {
            "PGDG_KEY": PGDG_KEY, "PGDG_KEY_URL": PGDG_KEY_URL,
            "PGDG_SOURCE": f"deb [signed-by={PGDG_KEY}] https://apt.postgresql.org/pub/repos/apt {codename}-pgdg main",
            "PACKAGES": " ".join(BOOKWORM_SHARD_PACKAGES),
            "PATRONI_INSTALL": PATRONI_INSTALL_PATH, "PATRONI_VENV": DEFAULT_LAYOUT.patroni_venv,
        }
    settings |= {"RELOADED": " ".join(SHARD_NODE_SERVICES), "BACKUP_TIMERS": " ".join(BACKUP_TIMERS),
                 "WATCHERS": f"{ROLE_CHANGE_UNIT}.path"}
    return SetupStep(f"{TOOLS_DIR}/shard-node-setup", "shard_node_setup.sh", settings)


def shard_node_steps(os: str) -> tuple[SetupStep, ...]:
    """The setup steps a shard node running `os` receives: the first one is run."""
    return (shard_node_setup(os),) if os == "debian-13" else (shard_node_setup(os), patroni_install())


def etcd_member_setup() -> SetupStep:
    """files/etcd_member_setup.sh: etcd from Debian, the local member's leader affinity timer."""
    return SetupStep(f"{DEFAULT_ETCD_LAYOUT.tools_dir}/etcd-member-setup", "etcd_member_setup.sh", {
        "LEADER_AFFINITY": DEFAULT_ETCD_LAYOUT.leader_affinity, "LEADER_AFFINITY_TIMER": f"{LEADER_AFFINITY_UNIT}.timer",
    })
