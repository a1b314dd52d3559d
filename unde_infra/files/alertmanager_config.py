#!/usr/bin/python3
"""Write Alertmanager's runtime configuration: the rendered template with the secrets that
Alertmanager 0.25 cannot read from files, taken from systemd credentials. Delivered by unde-infra.

Its parameters are in the JSON file beside it (`<this file>.json`, rendered by unde-infra):
template, output, placeholders (credential name -> the placeholder scalar in the template)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def load_settings(path: str | None) -> dict[str, Any]:
    with open(path or os.path.abspath(__file__) + ".json", encoding="utf-8") as f:
        settings: dict[str, Any] = json.load(f)
    return settings


def fill_in(text: str, secrets: Mapping[str, str], placeholders: Mapping[str, str]) -> str:
    """The template with every placeholder replaced by its secret; ValueError names what is wrong."""
    for name, placeholder in placeholders.items():
        value = secrets[name]
        if not value:
            raise ValueError(f"credential {name} is empty")
        # The placeholder is a whole plain YAML scalar; a JSON string is a valid YAML
        # double-quoted scalar, whatever characters the secret holds.
        line = ": " + placeholder + "\n"
        if text.count(line) != 1:
            raise ValueError(f"placeholder for {name} not found once in the template")
        text = text.replace(line, ": " + json.dumps(value) + "\n")
    return text


UNIT_CREDENTIALS = "/run/credentials/prometheus-alertmanager.service"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    settings = load_settings(args[1] if args[:1] == ["--config"] and len(args) == 2 else None)
    # systemd sets CREDENTIALS_DIRECTORY for the unit's ExecStartPre; Debian 13's systemd (257)
    # not for its ExecReload, which runs this too (found by the converge lab): the credentials
    # are still where systemd keeps them for the running unit.
    credentials = os.environ.get("CREDENTIALS_DIRECTORY") or UNIT_CREDENTIALS
    if not os.path.isdir(credentials):
        print(f"no credentials: CREDENTIALS_DIRECTORY is not set and {credentials} does not exist "
              "(LoadCredential= missing?)", file=sys.stderr)
        return 1
    with open(settings["template"], encoding="utf-8") as f:
        template = f.read()
    placeholders: dict[str, str] = settings["placeholders"]
    secrets = {}
    for name in placeholders:
        with open(os.path.join(credentials, name), encoding="utf-8") as f:
            secrets[name] = f.read().strip()
    try:
        text = fill_in(template, secrets, placeholders)
    except ValueError as exc:
        print(f"{exc} ({settings['template']})", file=sys.stderr)
        return 1
    output = settings["output"]
    tmp = output + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
