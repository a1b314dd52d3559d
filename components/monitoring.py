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
    monitoring_setup,
)
from unde_infra.settings import StackSettings

from .base import UndeComponent
from .delivery import RemoteFile, deliver, secret_files, setup_files
from .hosts import HostProvider

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
        step = monitoring_setup()
        files.update(setup_files(step))
        deliver(self.host, files, self, apply=step.command)
        self.register_outputs({"private_ip": str(server.ip)})
