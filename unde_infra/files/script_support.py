"""What the Python programs unde-infra ships to servers share: their parameters read from the JSON
file beside them (every problem at once, one per line as `path: message`), a secret read from
systemd's credential or its root-only file, and logging that never shows a secret.

Delivered by unde-infra beside each program that uses it (in /usr/local/lib/unde), where a
program run from that directory imports it (its directory is the first entry of sys.path).
Python 3.11 standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings:
    """Reads values out of a program's parameters, collecting every problem instead of stopping
    at the first: `get` returns None where a value is missing or of the wrong kind."""

    def __init__(self, data: Any, source: str) -> None:
        self.data, self.source = data, source
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def get(self, path: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
        node: Any = self.data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                if required:
                    self.problem(path, "required")
                return None
            node = node[part]
        if node is None and not required:
            return None
        # JSON's true is no number (bool is an int to Python).
        if isinstance(node, bool) and kind is not bool or not isinstance(node, kind):
            self.problem(path, f"expected {kind.__name__ if isinstance(kind, type) else 'a number'}, got {node!r}")
            return None
        return node


def load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path}: line {exc.lineno}: not JSON: {exc.msg}"]) from exc


def read_secret(credential: str, path: str | None, setting: str, what: str, *, one_word: bool = False) -> str:
    """systemd's LoadCredential= copy (`credential`) when a unit runs the program, else the
    configured root-only file (`path`, the parameter `setting`)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    chosen = os.path.join(directory, credential) if directory else path
    if not chosen:
        raise ConfigError([f"{setting}: no {what} file and no systemd credential"])
    try:
        with open(chosen, encoding="utf-8") as handle:
            secret = handle.read().strip()
    except OSError as exc:
        raise ConfigError([f"{chosen}: cannot read the {what}: {exc.strerror or exc}"]) from exc
    if one_word and (not secret or any(c.isspace() for c in secret)):
        raise ConfigError([f"{chosen}: the {what} must be one word"])
    if not secret:
        raise ConfigError([f"{chosen}: the {what} file is empty"])
    return secret


class Redactor:
    """Logging that cannot leak a secret: every line passes through `clean`."""

    def __init__(self, stream: Any = None) -> None:
        self.secrets: list[str] = []
        self.stream = stream

    def add(self, secret: str) -> None:
        if secret:
            self.secrets.append(secret)

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def __call__(self, message: str) -> None:
        print(self.clean(message), file=self.stream or sys.stderr, flush=True)
