"""PostgreSQL parameters and pg_hba of a shard node, from SPEC.md's shard configuration.

SPEC gives the values for a 32 GB server; memory settings scale with the node's RAM so that the
16 GB Helsinki replica gets proportional values (it serves as a degraded primary after a
failover). Cluster-wide settings (the ones Patroni requires to be equal on every member, WAL
and archiving) do not scale. Everything here is pure: the Patroni renderer places the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, collapse_addresses

from ..model import Inventory, Server, Shard

# The plan's shard version (SPEC: "PostgreSQL 17 + pgvector").
PG_VERSION = 17
SPEC_RAM_GB = 32

# SPEC values at 32 GB, in MB, for the settings that follow the server's memory.
_MEMORY_AT_32GB_MB = {
    "shared_buffers": 8 * 1024,  # 25% RAM
    "effective_cache_size": 24 * 1024,  # 75% RAM
    "work_mem": 40,
    "maintenance_work_mem": 2 * 1024,
    "wal_buffers": 64,
}

# WAL kept for a disconnected replica's slot. SPEC alerts at 20 GB of WAL on a primary when
# Helsinki is down; the slot gives up (the replica re-clones from pgBackRest) only well after
# that alert, and before WAL can fill the NVMe disk.
MAX_SLOT_WAL_KEEP_SIZE = "40GB"

SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
REWIND_USER = "rewind_user"
PGBOUNCER_USER = "pgbouncer"
EXPORTER_USER = "postgres_exporter"
# The shard's own database and the services that log in to it through PgBouncer (SPEC: the
# orchestrator's and the persona agent's passwords). The application's migrations create the
# tables, the embedding index among them; the bootstrap creates the database and the roles.
APP_DATABASE = "unde"
APP_USERS = ("orchestrator", "persona")
# Extensions created in template1 at bootstrap, so every shard database has them.
DEFAULT_EXTENSIONS = ("vector", "pg_stat_statements")


@dataclass(frozen=True)
class ShardSecrets:
    """The passwords and keys of one shard: plain strings (Pulumi secret outputs are resolved
    before rendering). They are rendered only into the files `is_secret` reports."""

    superuser_password: str
    replication_password: str
    rewind_password: str
    pgbouncer_password: str
    exporter_password: str
    s3_access_key: str
    s3_secret_key: str
    # pgBackRest encrypts the repository: backups hold user knowledge and chat history.
    repo_cipher_pass: str
    orchestrator_password: str
    persona_password: str

    def __repr__(self) -> str:  # never show a secret in a traceback or a test report
        return "ShardSecrets(<redacted>)"

    def values(self) -> list[str]:
        return [getattr(self, name) for name in self.__dataclass_fields__]


PRODUCTION_VENV = "/opt/patroni"


@dataclass(frozen=True)
class NodeLayout:
    """Where things live on a shard node, and its ports.

    Production uses the defaults. The tests pass another layout (temporary directories, the
    PostgreSQL 15 binaries of the CI machine) instead of patching the renderers."""

    pg_version: int = PG_VERSION
    bin_dir: str = f"/usr/lib/postgresql/{PG_VERSION}/bin"
    data_dir: str = f"/var/lib/postgresql/{PG_VERSION}/main"
    socket_dir: str = "/var/run/postgresql"
    patroni_dir: str = "/etc/patroni"
    # Patroni: Debian's package (/usr/bin/patroni) on Debian 13; on Debian 12 its own virtualenv
    # at the pinned version (render/node_setup.py), whose patronictl the setup links onto PATH.
    patroni_packaged: bool = False
    patroni_venv: str = PRODUCTION_VENV
    pgpass: str = "/var/lib/postgresql/.pgpass_patroni"
    patroni_log_dir: str = "/var/log/patroni"
    pgbackrest_config: str = "/etc/pgbackrest/pgbackrest.conf"
    pgbackrest_log_dir: str = "/var/log/pgbackrest"
    pgbackrest_spool_dir: str = "/var/spool/pgbackrest"
    pgbackrest_lock_dir: str = "/tmp/pgbackrest"  # pgBackRest's default
    pgbouncer_dir: str = "/etc/pgbouncer"
    pgbouncer_log_dir: str = "/var/log/postgresql"
    pgbouncer_run_dir: str = "/var/run/postgresql"
    exporter_dir: str = "/etc/postgres_exporter"
    secrets_dir: str = "/etc/unde/secrets"
    systemd_dir: str = "/etc/systemd/system"
    tools_dir: str = "/usr/local/lib/unde"
    textfile_dir: str = "/var/lib/prometheus/node-exporter"  # Debian node_exporter's textfile directory
    pg_port: int = 5432
    patroni_port: int = 8008
    pgbouncer_port: int = 6432
    exporter_port: int = 9187
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    extensions: tuple[str, ...] = field(default=DEFAULT_EXTENSIONS)

    @property
    def patroni_config(self) -> str:
        return f"{self.patroni_dir}/patroni.yml"

    @property
    def pgbackrest_runner(self) -> str:
        return f"{self.tools_dir}/pgbackrest-run"

    @property
    def patroni_bin(self) -> str:
        return "/usr/bin/patroni" if self.patroni_packaged else f"{self.patroni_venv}/bin/patroni"

    @property
    def patronictl(self) -> str:
        """The command operators run: `patronictl` on PATH on both production systems (Debian's
        /usr/bin/patronictl; on Debian 12 files/shard_node_setup.sh links /usr/local/bin/patronictl
        to PRODUCTION_VENV's), so the same command works whichever system a node runs; another
        virtualenv (the tests') by its path."""
        if self.patroni_packaged or self.patroni_venv == PRODUCTION_VENV:
            return "patronictl"
        return f"{self.patroni_venv}/bin/patronictl"


# Debian 12's layout (PGDG's PostgreSQL, Patroni in its virtualenv): the adopted hosts' and the
# tests' (they run on Debian 12).
DEFAULT_LAYOUT = NodeLayout()
# Debian 13's (the servers the program creates): everything from Debian, the same paths but
# Patroni's. PostgreSQL's binaries are in /usr/lib/postgresql/<major>/bin from PGDG and from Debian.
TRIXIE_LAYOUT = NodeLayout(patroni_packaged=True)
LAYOUTS = {"debian-12": DEFAULT_LAYOUT, "debian-13": TRIXIE_LAYOUT}


def layout_for(os: str) -> NodeLayout:
    """The shard node layout of a server running `os` (model.Server.os / Host.os)."""
    return LAYOUTS[os]


def _size(mb: float) -> str:
    whole = max(1, int(round(mb)))
    return f"{whole // 1024}GB" if whole % 1024 == 0 else f"{whole}MB"


def memory_parameters(ram_gb: float) -> dict[str, str]:
    """SPEC's memory settings scaled to `ram_gb` (exactly SPEC's values at 32 GB)."""
    if ram_gb <= 0:
        raise ValueError(f"ram_gb must be positive, got {ram_gb}")
    scale = ram_gb / SPEC_RAM_GB
    return {name: _size(mb * scale) for name, mb in _MEMORY_AT_32GB_MB.items()}


def archive_command(shard: Shard, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    return f"pgbackrest --config={layout.pgbackrest_config} --stanza={shard.scope} archive-push %p"


def restore_command(shard: Shard, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    return f'pgbackrest --config={layout.pgbackrest_config} --stanza={shard.scope} archive-get %f "%p"'


def cluster_parameters(shard: Shard, layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, str | int]:
    """Settings that are the same on every member of a shard (Patroni keeps them in the DCS)."""
    return {
        "random_page_cost": "1.1",
        "seq_page_cost": "1.0",
        "effective_io_concurrency": 200,
        "fsync": "on",
        # async (SPEC): a commit never waits for the 120 ms round trip. sync: it waits until the
        # synchronous standby (the Helsinki replica, chosen by Patroni) has flushed it.
        "synchronous_commit": "on" if shard.synchronous else "local",
        "full_page_writes": "on",
        "wal_level": "replica",
        "max_wal_senders": 5,
        "wal_keep_size": "4GB",
        "max_replication_slots": 5,
        "max_slot_wal_keep_size": MAX_SLOT_WAL_KEEP_SIZE,
        "checkpoint_timeout": "10min",
        "max_wal_size": "2GB",
        "max_connections": 100,
        "archive_mode": "on",
        "archive_command": archive_command(shard, layout),
        "archive_timeout": "1min",
        "hot_standby": "on",
        "password_encryption": "scram-sha-256",
        "shared_preload_libraries": "pg_stat_statements",
        "track_io_timing": "on",
    }


def node_parameters(server: Server) -> dict[str, str | int]:
    """Settings of one node: memory follows its RAM."""
    return dict(memory_parameters(server.ram_gb))


def spec_parameters(shard: Shard, server: Server, layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, str | int]:
    """Every SPEC setting of a node, as postgresql.conf would hold them."""
    return {**node_parameters(server), **cluster_parameters(shard, layout)}


def client_networks(inventory: Inventory) -> list[IPv4Network]:
    """The private ranges of all sites and the tunnel range, merged: nothing else may connect."""
    ranges = [site.range for site in inventory.sites.values()] + [inventory.network.tunnel_range]
    return list(collapse_addresses(ranges))


def member_addresses(shard: Shard) -> list[str]:
    """Addresses replication and pg_rewind arrive from: each member's private address and, for a
    local member, its tunnel address (what the replica sees when traffic leaves by wg)."""
    found: list[str] = []
    for server in (shard.primary, shard.replica):
        found.append(f"{server.ip}/32")
        if server.tunnel is not None:
            found.append(f"{server.tunnel.local_ip}/32")
    return found


def pg_hba(shard: Shard, inventory: Inventory) -> list[str]:
    lines = [
        # Patroni and local maintenance run as the postgres OS user over the socket.
        f"local   all             {SUPERUSER}                                peer",
        "local   all             all                                     scram-sha-256",
        "host    all             all             127.0.0.1/32            scram-sha-256",
        f"host    replication     {REPLICATION_USER}      127.0.0.1/32            scram-sha-256",
    ]
    for address in member_addresses(shard):
        lines.append(f"host    replication     {REPLICATION_USER}      {address:<23} scram-sha-256")
        lines.append(f"host    postgres        {REWIND_USER}     {address:<23} scram-sha-256")
    for network in client_networks(inventory):
        lines.append(f"host    all             all             {str(network):<23} scram-sha-256")
    return lines
