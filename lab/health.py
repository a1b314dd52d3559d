"""Each role checked as an operator would: from inside the server (what `ssh server ...` shows),
with the tools the role itself installed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .containers import Container


@dataclass
class Check:
    server: str
    name: str
    ok: bool
    detail: str = ""


Probe = Callable[[Container], tuple[bool, str]]


def shell(script: str, expect: str | None = None, timeout: float = 60) -> Probe:
    """A probe: `script` exits 0 (and its output matches `expect`, a regular expression)."""

    def probe(container: Container) -> tuple[bool, str]:
        try:
            result = container.exec("sh", "-c", script, timeout=timeout)
        except Exception as error:  # noqa: BLE001 - any failure of the probe is the check's failure
            return False, str(error)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            return False, f"exit {result.returncode}: {output[-400:]}"
        if expect is not None and not re.search(expect, output, re.MULTILINE):
            return False, f"expected /{expect}/, got: {output[-400:]}"
        return True, output.splitlines()[-1][:160] if output else ""

    return probe


EVERY_SERVER: dict[str, Probe] = {
    "no failed unit": shell("systemctl --failed --no-legend --plain | sed 's/ .*//'; "
                            "test -z \"$(systemctl --failed --no-legend --plain)\""),
    "node_exporter answers on :9100": shell("curl -fsS http://127.0.0.1:9100/metrics | grep -c '^node_' ", r"^\d+$"),
}


def run_checks(container: Container, probes: dict[str, Probe]) -> list[Check]:
    results = []
    for name, probe in probes.items():
        ok, detail = probe(container)
        results.append(Check(container.host.name, name, ok, detail))
    return results
