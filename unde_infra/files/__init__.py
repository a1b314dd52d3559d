"""Scripts that run on the servers, kept here as real files: linted (ruff, shellcheck), unit-tested,
and delivered as they are. None of them is a template: each reads its parameters at run time
from a small data file beside it on the server, which its renderer writes (`<script>.json` for
the Python scripts, a shell-sourced `<name>.env` for the shell ones).

The Python scripts run under Debian 12's /usr/bin/python3 (3.11) with its standard library
only; they never import unde_infra."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

_SHELL_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Every day-2 package install goes through this one script (files/apt_install.sh), delivered with
# each server's base files; every setup step finds it as $APT_INSTALL in its parameters.
APT_INSTALL = "/usr/local/lib/unde/apt-install"
APT_INSTALL_SCRIPT = "apt_install.sh"
# What the Python programs on servers share (parameters, secrets, redacted logs): delivered
# beside each program that imports it.
SUPPORT_MODULE = "script_support.py"


def source(name: str) -> str:
    """The text of one script of this package, exactly as it is delivered."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def json_settings(values: Mapping[str, object]) -> str:
    """A Python script's parameters (`<script>.json`)."""
    return json.dumps(values, indent=2, sort_keys=True) + "\n"


def shell_settings(values: Mapping[str, str | int]) -> str:
    """A shell script's parameters, for `.` (source): NAME=value lines, each value quoted for the
    shell, so that no value can run a command or add a variable. Not a systemd EnvironmentFile
    (systemd does not undo shell quoting the same way)."""
    lines = []
    for name, value in values.items():
        if not _SHELL_NAME.fullmatch(name):
            raise ValueError(f"not a shell variable name: {name!r}")
        text = str(value)
        if "\n" in text or "\0" in text:
            raise ValueError(f"{name}: a value must be one line")
        lines.append(f"{name}={shlex.quote(text)}")
    return "\n".join(lines) + "\n"


def setup_settings(values: Mapping[str, str | int]) -> str:
    """A setup script's parameters: `values`, and where the install script is ($APT_INSTALL)."""
    return shell_settings({"APT_INSTALL": APT_INSTALL, **values})


def python_script(path: str, name: str, settings: Mapping[str, object]) -> dict[str, str]:
    """A Python script of this package at `path` on the server, with its parameters beside it."""
    return {path: source(name), f"{path}.json": json_settings(settings)}


@dataclass(frozen=True)
class SetupStep:
    """A shell script of this package that makes a server's delivered files take effect (the
    delivery's apply step), delivered at `path` with its parameters beside it (`<path>.env`, which
    the script sources as "$0.env")."""

    path: str
    name: str
    settings: Mapping[str, str | int]
    args: tuple[str, ...] = ()

    def files(self) -> dict[str, str]:
        return {self.path: source(self.name), f"{self.path}.env": setup_settings(self.settings)}

    @property
    def command(self) -> str:
        return " ".join(shlex.quote(part) for part in (self.path, *self.args))
