"""The entry failover watcher's rendered files, checked by the real tools: systemd-analyze
verify for the units, Debian's python3 (the interpreter the servers run it with) for the script,
the script's own --check for the parameters, and the observer started as the unit starts it, in
a network namespace holding the witness's address, answering the decider's status request."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.artifacts.test_ha_tools import namespace
from tests.conftest import require_tool
from unde_infra.model import load_topology
from unde_infra.render import entry_failover
from unde_infra.render.entry_failover import DECIDER, OBSERVER, EntryDns

DNS = EntryDns("unde.example", "api")
LOCAL, STANDBY = "198.51.100.10", "203.0.113.20"
SYSTEM_PYTHON = "/usr/bin/python3"  # what ExecStart runs on Debian 12


def rendered(role: str, placement: str = "three-sites") -> dict[str, str]:
    inventory = load_topology(placement=placement)
    server = entry_failover.decider(inventory) if role == DECIDER else entry_failover.observer(inventory)
    assert server is not None
    return entry_failover.watcher_files(role, server, inventory, DNS, LOCAL, STANDBY)


@pytest.mark.parametrize("role", [DECIDER, OBSERVER])
def test_units_pass_systemd_analyze_verify(role: str, tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    unit = tmp_path / f"{entry_failover.UNIT}.service"
    unit.write_text(rendered(role)[entry_failover.UNIT_PATH])
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too; it warns on stderr, so stderr must be empty.
    assert result.returncode == 0 and result.stderr == "", result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Restart=always", "Restart=sometimes"))
    check = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "Failed to parse service restart specifier" in check.stderr  # the check is not a rubber stamp


@pytest.mark.parametrize("placement", ["three-sites", "plan"])
def test_rendered_parameters_pass_the_scripts_own_check(placement: str, tmp_path: Path) -> None:
    files = rendered(DECIDER, placement)
    script = tmp_path / "entry-failover"
    script.write_text(files[entry_failover.SCRIPT_PATH])
    # The Cloud API client and the support module it imports, delivered beside it.
    (tmp_path / "hcloud_dns.py").write_text(files[entry_failover.DNS_CLIENT_PATH])
    (tmp_path / "script_support.py").write_text(files[entry_failover.SUPPORT_PATH])
    assert files[entry_failover.SCRIPT_PATH] == (
        Path(entry_failover.__file__).parent.parent / "files" / "entry_failover.py").read_text()
    config = tmp_path / "entry-failover.json"
    config.write_text(files[entry_failover.CONFIG_PATH])
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "dns-api-token").write_text("offline-token\n")
    result = subprocess.run([SYSTEM_PYTHON, str(script), "--config", str(config), "--check"], capture_output=True,
                            text=True, timeout=30, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert result.returncode == 0, result.stderr
    data = json.loads(config.read_text())
    # With the plan's etcd placement there is no witness: the decider decides on its own.
    assert (data["peer_status_url"] is None) == (placement == "plan")
    assert data["standby"]["record"] == STANDBY and data["local"]["probe_host"] == LOCAL
    assert data["tls_name"] == "api.unde.example" and data["record"] == {"name": "api", "type": "A"}


def test_observer_runs_from_its_rendered_files_and_serves_its_verdict(tmp_path: Path) -> None:
    require_tool("ip")
    if os.geteuid() != 0:
        pytest.fail("this check needs root (a network namespace); `make test` runs as root")
    files = rendered(OBSERVER)
    config = json.loads(files[entry_failover.CONFIG_PATH])
    config["textfile"] = str(tmp_path / "unde_entry_failover.prom")
    (tmp_path / "entry-failover.json").write_text(json.dumps(config))
    (tmp_path / "entry-failover").write_text(files[entry_failover.SCRIPT_PATH])
    (tmp_path / "hcloud_dns.py").write_text(files[entry_failover.DNS_CLIENT_PATH])
    (tmp_path / "script_support.py").write_text(files[entry_failover.SUPPORT_PATH])
    host, port = config["listen"].rsplit(":", 1)
    assert host == str(load_topology().server("etcd-witness").ip)
    with namespace([host]) as netns:
        observer = subprocess.Popen([*netns, SYSTEM_PYTHON, str(tmp_path / "entry-failover"), "--config",
                                     str(tmp_path / "entry-failover.json")], stderr=subprocess.PIPE, text=True)
        try:
            # The local entry's address is unreachable from the namespace: the first probe fails.
            fetch = ("import json, urllib.request, sys; "
                     f"print(urllib.request.urlopen('http://{host}:{port}/status', timeout=5).read().decode())")
            status = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                out = subprocess.run([*netns, SYSTEM_PYTHON, "-c", fetch], capture_output=True, text=True, timeout=20)
                if out.returncode == 0 and json.loads(out.stdout)["fail_streak"] >= 1:
                    status = json.loads(out.stdout)
                    break
                time.sleep(0.3)
            assert status is not None, "the observer never reported its first probe"
            assert status["vantage"] == "etcd-witness" and status["ok_streak"] == 0 and status["age_seconds"] < 30
            metrics = (tmp_path / "unde_entry_failover.prom").read_text()
            assert 'unde_entry_failover_local_fail_streak{vantage="etcd-witness"}' in metrics
            # It listens on the witness's private address only, not on every interface.
            loopback = subprocess.run([*netns, SYSTEM_PYTHON, "-c", fetch.replace(host, "127.0.0.1")],
                                      capture_output=True, text=True, timeout=20)
            assert loopback.returncode != 0 and "Connection refused" in loopback.stderr
        finally:
            observer.kill()
            stderr = observer.communicate(timeout=10)[1]
        assert "observer on etcd-witness" in stderr and "FAILING" in stderr
