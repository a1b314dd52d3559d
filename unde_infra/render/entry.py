"""The local entry point when the API gateway scales out (SPEC: local-app-2 and a load balancer).

On hcloud a Load Balancer forwards HTTPS to every local-app instance. On existing hosts the
entry host (local-app, the address users reach) spreads requests with its own nginx over the
instances' FastAPI backends on the private network."""

from __future__ import annotations

from ..model import Inventory, Server

API_TASK = "api"
HTTPS_PORT = 443
API_BACKEND_PORT = 8000  # FastAPI behind each instance's nginx
UPSTREAM_PATH = "/etc/nginx/conf.d/unde-api-upstream.conf"


def api_instances(inventory: Inventory) -> list[Server]:
    return sorted((s for s in inventory.site_servers("local") if s.task == API_TASK), key=lambda s: s.instance)


def needs_load_balancer(inventory: Inventory) -> bool:
    return len(api_instances(inventory)) >= 2


def nginx_upstream(inventory: Inventory) -> str:
    """An nginx `upstream` over every API instance; the entry host's server block proxies to it.
    A failed backend is skipped for 10 s after 3 failures."""
    lines = [
        "# Rendered by unde-infra from config/topology.yaml; changes are overwritten.",
        "upstream unde_api {",
        "    least_conn;",
    ]
    lines += [
        f"    server {s.ip}:{API_BACKEND_PORT} max_fails=3 fail_timeout=10s;  # {s.name}"
        for s in api_instances(inventory)
    ]
    lines += ["    keepalive 32;", "}", ""]
    return "\n".join(lines)
