"""Alertmanager: Telegram and Slack receivers, the heartbeat of the dead man's switch, and the
pre-start step that fills in the secrets Alertmanager 0.25 cannot read from files."""

from __future__ import annotations

import json

from ..cloud_init import dump_yaml
from .common import ALERTMANAGER_UNIT, AlertingSettings, Endpoints, MonitoringPaths, _credential_lines
from .metrics import HEARTBEAT_REPEAT_INTERVAL

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


def alertmanager_config(settings: AlertingSettings, paths: MonitoringPaths) -> str:
    """alertmanager.yml without any secret: Slack's URL is a file, the Telegram token and the
    heartbeat URL are placeholders that `alertmanager-config` replaces at service start."""
    slack_url_file = paths.credential(ALERTMANAGER_UNIT, "slack_webhook_url")
    config = {
        "route": {
            "receiver": "team",
            "group_by": ["alertname", "site", "shard"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": ['alertname = "Watchdog"'],
                    "receiver": "heartbeat",
                    "group_wait": "0s",
                    "group_interval": HEARTBEAT_REPEAT_INTERVAL,
                    "repeat_interval": HEARTBEAT_REPEAT_INTERVAL,
                }
            ],
        },
        "inhibit_rules": [
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
        ],
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
        ],
    }
    return dump_yaml(config)


_ASSEMBLER = '''#!/usr/bin/python3
"""Write Alertmanager's runtime configuration: the rendered template with the secrets that
Alertmanager 0.25 cannot read from files, taken from systemd credentials. Rendered by unde-infra."""
import json
import os
import sys

TEMPLATE = __TEMPLATE__
OUTPUT = __OUTPUT__
PLACEHOLDERS = __PLACEHOLDERS__


def main() -> int:
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not credentials:
        print("CREDENTIALS_DIRECTORY is not set (LoadCredential= missing?)", file=sys.stderr)
        return 1
    with open(TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    for name, placeholder in PLACEHOLDERS.items():
        with open(os.path.join(credentials, name), encoding="utf-8") as f:
            value = f.read().strip()
        if not value:
            print(f"credential {name} is empty", file=sys.stderr)
            return 1
        # The placeholder is a whole plain YAML scalar; a JSON string is a valid YAML
        # double-quoted scalar, whatever characters the secret holds.
        line = ": " + placeholder + "\\n"
        if text.count(line) != 1:
            print(f"placeholder for {name} not found once in {TEMPLATE}", file=sys.stderr)
            return 1
        text = text.replace(line, ": " + json.dumps(value) + "\\n")
    tmp = OUTPUT + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def alertmanager_assembler(paths: MonitoringPaths) -> str:
    return (
        _ASSEMBLER.replace("__TEMPLATE__", json.dumps(paths.alertmanager_config))
        .replace("__OUTPUT__", json.dumps(paths.alertmanager_runtime_config))
        .replace("__PLACEHOLDERS__", json.dumps(ALERTMANAGER_PLACEHOLDERS))
    )


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


