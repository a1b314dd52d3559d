"""The monitoring servers: Prometheus, Grafana and Alertmanager for both sites in Helsinki (the
main path), and the local site's second alert path (Prometheus and Alertmanager), which keeps
alerting while Helsinki is down.

Targets come from the inventory (file_sd files), so a change of either stack's size rewrites
target files, never prometheus.yml. Alerting and Grafana secrets are separate root-only files."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from unde_infra.model import Inventory, Server
from unde_infra.render.monitoring import (
    AlertingSettings,
    MonitoringSecrets,
    MonitoringView,
    monitoring_files,
    monitoring_secret_files,
    monitoring_setup,
    view_of,
)
from unde_infra.settings import StackSettings

from .base import UndeComponent
from .delivery import RemoteFile, deliver, secret_files, setup_files
from .hosts import Host, HostProvider

SAMPLE_SECRETS = MonitoringSecrets("sample", "sample", "sample", "sample")


def deliver_monitoring(host: Host, parent: pulumi.Resource, inventory: Inventory, settings: StackSettings,
                       grafana_password: pulumi.Output[str] | None = None) -> None:
    """One monitoring server's files, secrets and setup. The receivers' secrets (telegramBotToken,
    slackWebhookUrl) and the heartbeat URL come from the stack that builds the server: each
    monitoring server has a heartbeat URL of its own."""
    view: MonitoringView = view_of(inventory, host.server)
    config = pulumi.Config()
    values: dict[str, pulumi.Input[str] | None] = {
        "telegram_bot_token": config.require_secret("telegramBotToken"),
        "slack_webhook_url": config.require_secret("slackWebhookUrl"),
        "heartbeat_url": config.require_secret("heartbeatUrl"),
    }
    if view.main:
        assert grafana_password is not None
        values["grafana_admin_password"] = grafana_password
    secrets = pulumi.Output.all(**values).apply(
        lambda found: MonitoringSecrets(grafana_admin_password=found.get("grafana_admin_password"),
                                        telegram_bot_token=found["telegram_bot_token"],
                                        slack_webhook_url=found["slack_webhook_url"], heartbeat_url=found["heartbeat_url"])
    )
    sample = SAMPLE_SECRETS if view.main else MonitoringSecrets(None, "sample", "sample", "sample")
    alerting = AlertingSettings(telegram_chat_id=settings.telegram_chat_id, slack_channel=settings.slack_channel)
    files = {path: RemoteFile(text) for path, text in monitoring_files(inventory, alerting, view=view).items()}
    files.update(secret_files(monitoring_secret_files, secrets, sample))
    step = monitoring_setup(grafana=view.main)
    files.update(setup_files(step))
    deliver(host, files, parent, apply=step.command, apply_label=None if view.main else "monitoring")


class Monitoring(UndeComponent):
    """The main path in Helsinki (SPEC's monitoring server)."""

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
        grafana_password = random.RandomPassword(
            "grafana-admin-password", length=32, special=False, opts=self.child()
        ).result
        deliver_monitoring(self.host, self, inventory, settings, grafana_password)
        self.register_outputs({"private_ip": str(server.ip)})
