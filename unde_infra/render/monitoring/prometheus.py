"""Prometheus: scrape jobs with file_sd targets generated from the inventory, the main
configuration and the command line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...model import Inventory, Server
from ..cloud_init import NODE_EXPORTER_PORT, dump_yaml
from .common import (
    ALERTMANAGER_PORT,
    APP_METRICS_PORT,
    APP_METRICS_TASKS,
    ETCD_METRICS_PORT,
    PATRONI_REST_PORT,
    POSTGRES_EXPORTER_PORT,
    PROMETHEUS_PORT,
    REDIS_EXPORTER_PORT,
    Endpoints,
    MonitoringPaths,
    MonitoringView,
    main_view,
)

# The jobs each Prometheus has for the other monitoring server (and the second path for
# Helsinki's reachability) are static targets, not file_sd: they change only with the topology.
from .rules import HELSINKI_GATEWAY_JOB, PEER_ALERTMANAGER_JOB, PEER_PROMETHEUS_JOB, RULE_FILES

SCRAPE_INTERVAL = "15s"  # SPEC
RETENTION = "30d"  # SPEC: Prometheus 30-day retention
TARGET_REFRESH_INTERVAL = "1m"

# --------------------------------------------------------------------------------------------
# Targets


TargetAddress = Callable[[Server, int], str]


def _default_address(server: Server, port: int) -> str:
    return f"{server.ip}:{port}"


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    port: int
    selects: Callable[[Server, Inventory], bool]
    metrics_path: str = "/metrics"


def _is_etcd_member(server: Server, inventory: Inventory) -> bool:
    # Placement decides: under `plan`, etcd-2 is a container on shard-replica-0, whose task is not etcd.
    return any(member.host.name == server.name for member in inventory.etcd)


SCRAPE_JOBS: tuple[ScrapeJob, ...] = (
    ScrapeJob("node", NODE_EXPORTER_PORT, lambda s, inv: True),
    ScrapeJob("postgres", POSTGRES_EXPORTER_PORT, lambda s, inv: "postgres" in s.services),
    ScrapeJob("redis", REDIS_EXPORTER_PORT, lambda s, inv: "redis" in s.services),
    ScrapeJob("etcd", ETCD_METRICS_PORT, _is_etcd_member),
    ScrapeJob("patroni", PATRONI_REST_PORT, lambda s, inv: "patroni" in s.services),
    ScrapeJob("app", APP_METRICS_PORT, lambda s, inv: s.task in APP_METRICS_TASKS),
)


def target_labels(server: Server) -> dict[str, str]:
    """Labels every series of a server carries: SPEC's site/task/shard plus the server name.
    `shard` is empty (so absent in Prometheus) on servers outside a shard."""
    return {"server": server.name, "site": server.site, "task": server.task, "shard": server.labels.get("shard", "")}




def file_sd_targets(
    inventory: Inventory, *, target_address: TargetAddress = _default_address, view: MonitoringView | None = None
) -> dict[str, list[dict[str, object]]]:
    """Job name -> file_sd target groups (one group per server, so each carries its labels): the
    servers of the sites `view` watches (default: the main path, every site)."""
    view = view or main_view(inventory)
    jobs: dict[str, list[dict[str, object]]] = {}
    for job in SCRAPE_JOBS:
        groups: list[dict[str, object]] = []
        for server in sorted(inventory.servers.values(), key=lambda s: s.name):
            if server.site in view.sites and job.selects(server, inventory):
                labels = {k: v for k, v in target_labels(server).items() if v}
                groups.append({"targets": [target_address(server, job.port)], "labels": labels})
        jobs[job.name] = groups
    return jobs


# --------------------------------------------------------------------------------------------
# Prometheus


def _labels(server: Server) -> dict[str, str]:
    return {k: v for k, v in target_labels(server).items() if v}


def prometheus_config(inventory: Inventory, paths: MonitoringPaths, endpoints: Endpoints,
                      view: MonitoringView | None = None, target_address: TargetAddress = _default_address) -> str:
    """prometheus.yml of the monitoring server `view` names (default: the main path). The jobs
    of the other monitoring server, and on the second path of helsinki-gw, are static targets
    at `target_address`."""
    view = view or main_view(inventory)
    monitoring = _labels(view.server)
    # Instance = server name: alerts and dashboards read "local-shard-0", not "10.2.0.10:9187".
    instance_from_server = [{"source_labels": ["server"], "target_label": "instance"}]
    scrape_configs: list[dict[str, object]] = [
        {
            "job_name": job.name,
            "metrics_path": job.metrics_path,
            "file_sd_configs": [
                {"files": [f"{paths.file_sd_dir}/{job.name}.json"], "refresh_interval": TARGET_REFRESH_INTERVAL}
            ],
            "relabel_configs": instance_from_server,
        }
        for job in SCRAPE_JOBS
    ]
    for name, address in (("prometheus", endpoints.prometheus), ("alertmanager", endpoints.alertmanager)):
        scrape_configs.append(
            {
                "job_name": name,
                "static_configs": [{"targets": [address], "labels": monitoring}],
                "relabel_configs": instance_from_server,
            }
        )
    static: list[tuple[str, Server, int]] = []
    if view.peer is not None:
        static += [(PEER_PROMETHEUS_JOB, view.peer, PROMETHEUS_PORT), (PEER_ALERTMANAGER_JOB, view.peer, ALERTMANAGER_PORT)]
    if not view.main:
        # Helsinki's reachability from the local site: its gateway, through the tunnels.
        static.append((HELSINKI_GATEWAY_JOB, inventory.gateway, NODE_EXPORTER_PORT))
    for name, server, port in static:
        scrape_configs.append(
            {
                "job_name": name,
                "static_configs": [{"targets": [target_address(server, port)], "labels": _labels(server)}],
                "relabel_configs": instance_from_server,
            }
        )
    config = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
            # On every alert it sends: which monitoring server saw it.
            "external_labels": {"monitor": view.external_label},
        },
        "rule_files": [f"{paths.rules_dir}/{name}" for name in RULE_FILES],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [endpoints.alertmanager]}]}]},
        "scrape_configs": scrape_configs,
    }
    return dump_yaml(config)


def prometheus_args(paths: MonitoringPaths, endpoints: Endpoints) -> list[str]:
    return [
        f"--config.file={paths.prometheus_config}",
        f"--storage.tsdb.path={paths.prometheus_storage}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={endpoints.prometheus}",
    ]


def _defaults_file(args: list[str], why: str) -> str:
    # Read by the Debian unit as EnvironmentFile and split on whitespace; no argument has spaces.
    return f"# {why}\n# Rendered by unde-infra; edits are overwritten.\nARGS=\"{' '.join(args)}\"\n"


