"""Routing follows the primary (SPEC scenario 1): the routing watcher on every shard node.

The watcher is a real file, `unde_infra/files/shard_routing.py`, shipped as it is; its parameters
(`<script>.json` beside it) come from here: which shard and member, the endpoint clients reach it
at (PgBouncer on the node's private address), its Patroni REST API, local-redis's address and the
`router` ACL user (render/redis.py), and the timings (`unde_infra.timings`, which `scenarios`
reads too). The Redis password is a root-only file that systemd hands to the unit as a
credential.

Why a watcher on each node rather than a Patroni callback alone: callbacks run as the postgres
user (the password must stay root-only), fire once with no retry (local-redis may be unreachable
at that moment, or restart later and come back without the entry), and Patroni kills a callback
still running when the next one starts. Asking the node's own REST API every second costs
nothing and covers all of it in one loop.
"""

from __future__ import annotations

from .. import timings
from ..files import SUPPORT_MODULE, json_settings, source
from ..model import Server, Shard
from .patroni import Node, RenderedFile, node_server
from .postgres import DEFAULT_LAYOUT, NodeLayout
from .redis import REDIS_PORT, ROUTER_USER, endpoint_key

SCRIPT_SOURCE = "shard_routing.py"
UNIT = "unde-shard-routing"
CREDENTIAL = "redis-password"  # files/shard_routing.PASSWORD_CREDENTIAL
TEXTFILE_NAME = "unde_shard_routing.prom"


def script_path(layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    return f"{layout.tools_dir}/shard-routing"


def password_path(layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    return f"{layout.secrets_dir}/shard-routing-redis-password"


def routing_settings(shard: Shard, node: Node, redis: Server, layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, object]:
    server = node_server(shard, node)
    return {
        "scope": shard.scope,
        "member": server.name,
        "key": endpoint_key(shard.scope),
        # Clients connect through PgBouncer, on both nodes (render/pgbouncer.py).
        "endpoint": {"host": str(server.ip), "port": layout.pgbouncer_port},
        "patroni": {"url": f"http://{server.ip}:{layout.patroni_port}/primary",
                    "timeout_seconds": timings.ROUTING_PATRONI_TIMEOUT_SECONDS},
        # The replica reaches local-redis's private address through helsinki-gw and the tunnel.
        "redis": {"host": str(redis.ip), "port": REDIS_PORT, "user": ROUTER_USER,
                  "timeout_seconds": timings.ROUTING_REDIS_TIMEOUT_SECONDS, "password_file": password_path(layout)},
        "poll_seconds": timings.ROUTING_POLL_SECONDS,
        "confirm_seconds": timings.ROUTING_CONFIRM_SECONDS,
        "retry": {"first_seconds": timings.ROUTING_RETRY_FIRST_SECONDS,
                  "max_seconds": timings.ROUTING_RETRY_MAX_SECONDS},
        "textfile": f"{layout.textfile_dir}/{TEXTFILE_NAME}",
    }


def routing_unit(layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    script = script_path(layout)
    return "\n".join([
        "[Unit]",
        "Description=UNDE: the shard's routing entry in local-redis follows its primary (unde-infra)",
        "After=network-online.target patroni.service",
        "Wants=network-online.target",
        # Never give up: this is what moves the local site's clients to a promoted replica.
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart=/usr/bin/python3 {script} --config {script}.json",
        "Restart=always",
        "RestartSec=5",
        # Only this unit's process reads the password (systemd copies it for the unit alone).
        f"LoadCredential={CREDENTIAL}:{password_path(layout)}",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        f"ReadWritePaths=-{layout.textfile_dir}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def routing_files(shard: Shard, node: Node, redis: Server, password: str,
                  layout: NodeLayout = DEFAULT_LAYOUT) -> dict[str, RenderedFile]:
    """Everything one shard node receives for its routing watcher; the password file is secret."""
    if not password or any(c.isspace() for c in password):
        raise ValueError("the router's Redis password must be one word")
    script = script_path(layout)
    return {
        script: RenderedFile(source(SCRIPT_SOURCE), mode="0755"),
        f"{layout.tools_dir}/{SUPPORT_MODULE}": RenderedFile(source(SUPPORT_MODULE)),
        f"{script}.json": RenderedFile(json_settings(routing_settings(shard, node, redis, layout))),
        password_path(layout): RenderedFile(password + "\n", mode="0600", secret=True),
        f"{layout.systemd_dir}/{UNIT}.service": RenderedFile(routing_unit(layout)),
    }


def routing_apply(layout: NodeLayout = DEFAULT_LAYOUT) -> str:
    """Check the parameters and the password before restarting, so a bad delivery leaves the
    running watcher alone. A restart loses nothing: it asks Patroni again within a second."""
    script = script_path(layout)
    return "\n".join([
        "set -e",
        f"/usr/bin/python3 {script} --config {script}.json --check",
        "systemctl daemon-reload",
        f"systemctl enable {UNIT}",
        f"systemctl restart {UNIT}",
    ])
