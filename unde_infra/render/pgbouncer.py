"""PgBouncer of a shard node (SPEC: clients reach PostgreSQL through PgBouncer).

Both nodes of a shard run it, because after a failover the routing cache sends that shard's
users to the Helsinki node. The only password PgBouncer holds is its own auth user's; every
other login is checked against PostgreSQL through `auth_query` (a SECURITY DEFINER function the
Patroni post-bootstrap script creates), so rotating an application password needs no change here.
"""

from __future__ import annotations

from ..model import Server
from .escape import ini_file, pgbouncer_auth_line
from .postgres import DEFAULT_LAYOUT, EXPORTER_USER, PGBOUNCER_USER, SUPERUSER, NodeLayout, ShardSecrets

# SPEC: max_connections = 100; keep headroom for Patroni, replication, pgBackRest and admins.
SERVER_POOL_SIZE = 80
MAX_CLIENT_CONNECTIONS = 2000
AUTH_FUNCTION = "pgbouncer.get_auth"


def pgbouncer_ini(server: Server, layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    pgbouncer = {
        "listen_addr": f"{server.ip},127.0.0.1",
        "listen_port": layout.pgbouncer_port,
        "unix_socket_dir": layout.pgbouncer_run_dir,
        "auth_type": "scram-sha-256",
        "auth_file": f"{layout.pgbouncer_dir}/userlist.txt",
        "auth_user": PGBOUNCER_USER,
        "auth_query": f"SELECT usename, passwd FROM {AUTH_FUNCTION}($1)",
        # Chat turns are short transactions; transaction pooling lets 1,000 concurrent queries
        # (SPEC) share the 100 server connections.
        "pool_mode": "transaction",
        "max_client_conn": MAX_CLIENT_CONNECTIONS,
        "default_pool_size": SERVER_POOL_SIZE,
        "max_db_connections": SERVER_POOL_SIZE,
        "reserve_pool_size": 5,
        "server_reset_query": "DISCARD ALL",
        "ignore_startup_parameters": "extra_float_digits,options",
        "admin_users": SUPERUSER,
        "stats_users": EXPORTER_USER,
        "logfile": f"{layout.pgbouncer_log_dir}/pgbouncer.log",
        "pidfile": f"{layout.pgbouncer_run_dir}/pgbouncer.pid",
    }
    databases = {"*": f"host={layout.socket_dir} port={layout.pg_port}"}
    return ini_file({"databases": databases, "pgbouncer": pgbouncer}, separator=" = ").rstrip("\n") + "\n"


def userlist(secrets: ShardSecrets) -> str:
    """SECRET: the auth user's password (PgBouncer accepts plain or SCRAM secrets here)."""
    return pgbouncer_auth_line(PGBOUNCER_USER, secrets.pgbouncer_password) + "\n"
