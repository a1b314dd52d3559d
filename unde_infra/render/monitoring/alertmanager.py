"""Alertmanager: Telegram and Slack receivers, the heartbeat of the dead man's switch, and the
pre-start step that fills in the secrets Alertmanager 0.25 cannot read from files."""

from __future__ import annotations

from ...files import python_script
from ..cloud_init import dump_yaml
from .common import ALERTMANAGER_UNIT, AlertingSettings, Endpoints, MonitoringPaths, MonitoringView, _credential_lines
from .metrics import HEARTBEAT_REPEAT_INTERVAL
from .rules import ALSO_SENT_BY, MAIN_PATH_HEALTHY

# Which service gets which secret (name of the credential -> name of the secret file).
ALERTMANAGER_CREDENTIALS = {
    "telegram_bot_token": "telegram_bot_token",
    "slack_webhook_url": "slack_webhook_url",
    "heartbeat_url": "heartbeat_url",
}
# Alertmanager 0.25 (Debian 12) reads only Slack's URL from a file (`api_url_file`);
# `bot_token_file` and webhook `url_file` arrived in 0.26, and amtool 0.25 rejects them. These
# two are filled in at service start from systemd credentials into a runtime copy of the config
# (tmpfs, readable only by the service user); the rendered alertmanager.yml holds placeholders.
# The URL placeholder must be a valid URL, because amtool checks the template too.
ALERTMANAGER_PLACEHOLDERS = {
    "telegram_bot_token": "unde-secret-telegram-bot-token",
    "heartbeat_url": "https://unde-secret.invalid/heartbeat-url",
}


def alertmanager_config(settings: AlertingSettings, paths: MonitoringPaths, view: MonitoringView | None = None) -> str:
    """alertmanager.yml without any secret: Slack's URL is a file, the Telegram token and the
    heartbeat URL are placeholders that `alertmanager-config` replaces at service start.

    Both monitoring servers send to the same team receivers, each its Watchdog to its own
    heartbeat URL. The second path's Alertmanager keeps its copies of the main path's alerts
    quiet while the main path answers (MainAlertPathHealthy fires): the team hears each alert
    once, from Helsinki, and from the local site only when Helsinki cannot tell them."""
    slack_url_file = paths.credential(ALERTMANAGER_UNIT, "slack_webhook_url")
    routes: list[dict[str, object]] = [
        {
            "matchers": ['alertname = "Watchdog"'],
            "receiver": "heartbeat",
            "group_wait": "0s",
            "group_interval": HEARTBEAT_REPEAT_INTERVAL,
            "repeat_interval": HEARTBEAT_REPEAT_INTERVAL,
        }
    ]
    inhibit_rules: list[dict[str, object]] = [
        # A server that is down explains every other alert about it.
        {
            "source_matchers": ['alertname = "ServerDown"'],
            "target_matchers": ['alertname != "ServerDown"'],
            "equal": ["server"],
        },
        {
            "source_matchers": ['severity = "critical"'],
            "target_matchers": ['severity = "warning"'],
            "equal": ["alertname", "server"],
        },
    ]
    receivers: list[dict[str, object]] = []
    if view is not None and not view.main:
        routes.append({"matchers": [f'alertname = "{MAIN_PATH_HEALTHY}"'], "receiver": "silent"})
        inhibit_rules.append({
            "source_matchers": [f'alertname = "{MAIN_PATH_HEALTHY}"'],
            "target_matchers": [f'{ALSO_SENT_BY} =~ ".+"'],
        })
        receivers.append({"name": "silent"})  # no integration: an inhibition source only
    config = {
        "route": {
            "receiver": "team",
            "group_by": ["alertname", "site", "shard"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": inhibit_rules,
        "receivers": [
            {
                "name": "team",
                "telegram_configs": [
                    {
                        "api_url": settings.telegram_api_url,
                        "bot_token": ALERTMANAGER_PLACEHOLDERS["telegram_bot_token"],
                        "chat_id": settings.telegram_chat_id,
                        "send_resolved": True,
                    }
                ],
                "slack_configs": [
                    {"api_url_file": slack_url_file, "channel": settings.slack_channel, "send_resolved": True}
                ],
            },
            {
                "name": "heartbeat",
                "webhook_configs": [{"url": ALERTMANAGER_PLACEHOLDERS["heartbeat_url"], "send_resolved": False}],
            },
            *receivers,
        ],
    }
    return dump_yaml(config)




ASSEMBLER_SOURCE = "alertmanager_config.py"


def alertmanager_assembler(paths: MonitoringPaths) -> dict[str, str]:
    """The pre-start step (files/alertmanager_config.py) and its parameters beside it."""
    settings = {
        "template": paths.alertmanager_config,
        "output": paths.alertmanager_runtime_config,
        "placeholders": ALERTMANAGER_PLACEHOLDERS,
    }
    return python_script(paths.alertmanager_assembler, ASSEMBLER_SOURCE, settings)


def alertmanager_args(paths: MonitoringPaths, endpoints: Endpoints) -> list[str]:
    return [
        f"--config.file={paths.alertmanager_runtime_config}",
        f"--storage.path={paths.alertmanager_storage}",
        f"--web.listen-address={endpoints.alertmanager}",
        # One Alertmanager: no gossip port open on the network.
        "--cluster.listen-address=",
    ]


def alertmanager_dropin(paths: MonitoringPaths) -> str:
    # Credentials are read once at start: a changed secret needs a restart, a changed config a reload.
    lines = [
        "# Rendered by unde-infra: secrets for Alertmanager through systemd credentials.",
        "[Service]",
        *_credential_lines(ALERTMANAGER_CREDENTIALS, paths),
        "RuntimeDirectory=prometheus-alertmanager",
        "RuntimeDirectoryMode=0700",
        f"ExecStartPre=/usr/bin/python3 {paths.alertmanager_assembler}",
        "ExecReload=",
        f"ExecReload=/usr/bin/python3 {paths.alertmanager_assembler}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "",
    ]
    return "\n".join(lines)


