"""The monitoring server: Prometheus, Alertmanager and Grafana for both sites.

Targets come from the inventory (file_sd files), so a change of either stack's size rewrites
target files, never prometheus.yml. Alerting and Grafana secrets are separate root-only files."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from unde_infra.model import Inventory, Server
from unde_infra.render.monitoring import (
    AlertingSettings,
    MonitoringSecrets,
    monitoring_files,
    monitoring_secret_files,
)
from unde_infra.settings import StackSettings

from .base import UndeComponent
from .delivery import RemoteFile, deliver, secret_files
from .hosts import HostProvider

# Debian ships Prometheus and Alertmanager; Grafana comes from its own apt repository.
INSTALL_AND_RELOAD = " && ".join(
    [
        "set -e",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus prometheus-alertmanager",
        "test -x /usr/sbin/grafana-server || { install -d -m 0755 /etc/apt/keyrings"
        " && curl -fsSL https://apt.grafana.com/gpg.key | gpg --dearmor -o /etc/apt/keyrings/grafana.gpg"
        " && echo 'deb [signed-by=/etc/apt/keyrings/grafana.gpg] https://apt.grafana.com stable main'"
        " > /etc/apt/sources.list.d/grafana.list && apt-get update -q && apt-get install -y -q grafana; }",
        "systemctl daemon-reload",
        "promtool check config /etc/prometheus/prometheus.yml",
        "systemctl enable prometheus prometheus-alertmanager grafana-server",
        "systemctl reload-or-restart prometheus prometheus-alertmanager grafana-server",
    ]
)
SAMPLE_SECRETS = MonitoringSecrets("sample", "sample", "sample", "sample")


class Monitoring(UndeComponent):
    TYPE = "unde:helsinki:Monitoring"

    def __init__(
        self,
        server: Server,
        hosts: HostProvider,
        user_data: str,
        inventory: Inventory,
        settings: StackSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(server.name, opts)
        self.host = hosts.host(server, user_data, self)
        config = pulumi.Config()
        grafana_password = random.RandomPassword(
            "grafana-admin-password", length=32, special=False, opts=self.child()
        ).result
        secrets = pulumi.Output.all(
            grafana_admin_password=grafana_password,
            telegram_bot_token=config.require_secret("telegramBotToken"),
            slack_webhook_url=config.require_secret("slackWebhookUrl"),
            heartbeat_url=config.require_secret("heartbeatUrl"),
        ).apply(lambda values: MonitoringSecrets(**values))
        alerting = AlertingSettings(telegram_chat_id=settings.telegram_chat_id, slack_channel=settings.slack_channel)
        files = {path: RemoteFile(text) for path, text in monitoring_files(inventory, alerting).items()}
        files.update(secret_files(monitoring_secret_files, secrets, SAMPLE_SECRETS))
        deliver(self.host, files, self, apply=INSTALL_AND_RELOAD)
        self.register_outputs({"private_ip": str(server.ip)})
