"""What the monitoring renderers share: ports, where each file lives on the monitoring server,
the listen addresses, and the settings and secrets they are rendered from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ...model import MONITORING_TASK, SECOND_MONITORING_TASK, Inventory, Server
from ..cloud_init import SECRETS_DIR

# --------------------------------------------------------------------------------------------
# Ports and intervals

POSTGRES_EXPORTER_PORT = 9187
REDIS_EXPORTER_PORT = 9121
# SPEC: "etcd :2379". etcd serves /metrics on its client URL; if the HA renderer ever moves the
# client port to TLS-only, this becomes the plain-HTTP --listen-metrics-urls port (2381).
ETCD_METRICS_PORT = 2379
PATRONI_REST_PORT = 8008
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
GRAFANA_PORT = 3000
# The application's own /metrics (prometheus_client's default exporter port in every service, apart
# from the API port, so that nginx never exposes it).
APP_METRICS_PORT = 9464
APP_METRICS_TASKS = ("api", "orchestrator")  # the services that use local-redis's caches

# --------------------------------------------------------------------------------------------
# Settings and secrets


@dataclass(frozen=True)
class AlertingSettings:
    """Non-secret alerting settings (stack config)."""

    telegram_chat_id: int
    slack_channel: str
    # Overridable so that the integration test keeps every notification on loopback.
    telegram_api_url: str = "https://api.telegram.org"


@dataclass(frozen=True)
class MonitoringSecrets:
    """Secret values; `repr` hides them so that they never reach a log or a test report."""

    # None on the second alert path, which runs no Grafana.
    grafana_admin_password: str | None = field(repr=False)
    telegram_bot_token: str = field(repr=False)
    slack_webhook_url: str = field(repr=False)
    # A dead man's switch service (e.g. a healthchecks.io ping URL): capability URLs are secrets.
    # Each monitoring server has its own, so the service tells which one went quiet.
    heartbeat_url: str = field(repr=False)

    def values(self) -> dict[str, str]:
        values = {
            "telegram_bot_token": self.telegram_bot_token,
            "slack_webhook_url": self.slack_webhook_url,
            "heartbeat_url": self.heartbeat_url,
        }
        if self.grafana_admin_password is not None:
            values = {"grafana_admin_password": self.grafana_admin_password, **values}
        return values


ALERTMANAGER_UNIT = "prometheus-alertmanager.service"
GRAFANA_UNIT = "grafana-server.service"


@dataclass(frozen=True)
class MonitoringPaths:
    """Where each file lives on the monitoring server. `root` prefixes every absolute path, so
    that tests put the whole tree, with consistent cross-references, under a temp dir."""

    root: str = "/"

    def _p(self, path: str) -> str:
        return str(PurePosixPath(self.root) / path.lstrip("/"))

    # Prometheus (Debian package layout)
    @property
    def prometheus_config(self) -> str:
        return self._p("/etc/prometheus/prometheus.yml")

    @property
    def prometheus_defaults(self) -> str:
        return self._p("/etc/default/prometheus")

    @property
    def prometheus_storage(self) -> str:
        return self._p("/var/lib/prometheus/metrics2")

    @property
    def file_sd_dir(self) -> str:
        return self._p("/etc/prometheus/file_sd")

    @property
    def rules_dir(self) -> str:
        return self._p("/etc/prometheus/rules")

    # Alertmanager
    @property
    def alertmanager_config(self) -> str:
        return self._p("/etc/prometheus/alertmanager.yml")

    @property
    def alertmanager_runtime_config(self) -> str:
        return self._p("/run/prometheus-alertmanager/alertmanager.yml")

    @property
    def alertmanager_defaults(self) -> str:
        return self._p("/etc/default/prometheus-alertmanager")

    @property
    def alertmanager_storage(self) -> str:
        return self._p("/var/lib/prometheus/alertmanager")

    @property
    def alertmanager_assembler(self) -> str:
        return self._p("/usr/local/lib/unde/alertmanager-config")

    @property
    def alertmanager_dropin(self) -> str:
        return self._p(f"/etc/systemd/system/{ALERTMANAGER_UNIT}.d/unde-secrets.conf")

    # Grafana
    @property
    def grafana_ini(self) -> str:
        return self._p("/etc/grafana/grafana.ini")

    @property
    def grafana_provisioning(self) -> str:
        return self._p("/etc/grafana/provisioning")

    @property
    def grafana_dashboards(self) -> str:
        return self._p("/etc/grafana/dashboards/unde")

    @property
    def grafana_dropin(self) -> str:
        return self._p(f"/etc/systemd/system/{GRAFANA_UNIT}.d/unde-secrets.conf")

    # Secrets: root-only sources, and where systemd exposes them to one service.
    @property
    def secrets_dir(self) -> str:
        return self._p(f"{SECRETS_DIR}/monitoring")

    def secret(self, name: str) -> str:
        return f"{self.secrets_dir}/{name}"

    def credential(self, unit: str, name: str) -> str:
        return self._p(f"/run/credentials/{unit}/{name}")

    # Tunnel collector (on the servers with tunnels)
    @property
    def textfile_dir(self) -> str:
        return self._p("/var/lib/prometheus/node-exporter")  # Debian node_exporter's default

    @property
    def tunnel_collector(self) -> str:
        return self._p("/usr/local/lib/unde/vpn-tunnel-collector")


DEFAULT_PATHS = MonitoringPaths()


@dataclass(frozen=True)
class Endpoints:
    """Listen addresses (host:port) of the monitoring services. Production binds them to the
    monitoring server's private address: never on its public interface."""

    prometheus: str
    alertmanager: str
    grafana_host: str
    grafana_port: int = GRAFANA_PORT

    @classmethod
    def of(cls, server: Server) -> Endpoints:
        return cls(f"{server.ip}:{PROMETHEUS_PORT}", f"{server.ip}:{ALERTMANAGER_PORT}", str(server.ip))


def monitoring_server(inventory: Inventory) -> Server:
    return next(s for s in inventory.servers.values() if s.task == MONITORING_TASK)


def second_monitoring_server(inventory: Inventory) -> Server | None:
    return next((s for s in inventory.servers.values() if s.task == SECOND_MONITORING_TASK), None)


@dataclass(frozen=True)
class MonitoringView:
    """What one monitoring server watches and what it alerts on.

    The main path (SPEC's monitoring server in Helsinki) scrapes every server of both sites and
    evaluates every alert. The second path (the local site's small monitoring server) scrapes
    the local site and, over the tunnels, Helsinki's gateway and the main path's Prometheus and
    Alertmanager: it evaluates the alerts that the local site's own series decide, and sends
    them only while the main path cannot (an inhibition, see alertmanager.py). Each scrapes the
    other and alerts when the other is down; each has its own Watchdog for its own heartbeat."""

    server: Server
    sites: frozenset[str]  # whose servers it scrapes
    peer: Server | None  # the other monitoring server
    main: bool

    @property
    def external_label(self) -> str:
        return "unde" if self.main else "unde-local"


def main_view(inventory: Inventory) -> MonitoringView:
    return MonitoringView(monitoring_server(inventory), frozenset(inventory.sites),
                          second_monitoring_server(inventory), main=True)


def second_view(inventory: Inventory) -> MonitoringView | None:
    server = second_monitoring_server(inventory)
    if server is None:
        return None
    return MonitoringView(server, frozenset({server.site}), monitoring_server(inventory), main=False)


def view_of(inventory: Inventory, server: Server) -> MonitoringView:
    view = main_view(inventory) if server.task == MONITORING_TASK else second_view(inventory)
    if view is None or view.server.name != server.name:
        raise ValueError(f"{server.name} is no monitoring server")
    return view


def _credential_lines(credentials: Mapping[str, str], paths: MonitoringPaths) -> list[str]:
    # Sources stay root-only (0600); systemd copies each into a directory only the service user reads.
    return [f"LoadCredential={name}:{paths.secret(source)}" for name, source in credentials.items()]


