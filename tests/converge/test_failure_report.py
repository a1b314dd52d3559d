"""A delivery that fails on purpose: a setup step that exits non-zero, the command after it, and a
host nobody answers at. The report names the server, the command and the reason for each, on
one line, and no traceback: what an operator reads to know where the run stopped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lab import converge
from lab.containers import Container
from lab.delivery import Operator, deliver, failure_lines
from lab.network import PROXY4, PROXY6, PROXY_PORT, LabHost, LabNetwork, PrivateNetwork
from unde_infra.delivery_plan import PlannedCommand
from unde_infra.model import load_topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-nspawn") is None,
                                reason="the lab needs root and systemd-nspawn (make test installs it as root)")

RUN_DIR = Path("/var/tmp/unde-lab/test-failure")
ROOT = Path(__file__).resolve().parents[2]
HOST = LabHost("probe", "debian-13", "hel", "10.1.0.50", public4="203.0.113.50",
               user_data="#cloud-config\nhostname: probe\ndisable_root: false\n")
NOBODY = "203.0.113.99"
PREFIX = "unde-labt"  # not the lab's own: its clean-up leaves this test's namespaces alone


def _command(name: str, host: str, create: str, after: list[str], stdin: str | None = None) -> PlannedCommand:
    return PlannedCommand(name=name, urn=f"urn:test::{name}", server=name.partition(":")[0], host=host, user="root",
                          port=22, jump=None, create=create, stdin=stdin, triggers=[], after=after)


def test_the_report_names_server_command_and_reason(capsys: pytest.CaptureFixture[str]) -> None:
    converge.clean(RUN_DIR, PREFIX)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    key, public = converge._keypair(RUN_DIR)
    network = LabNetwork([HOST], [PrivateNetwork("hel", "10.0.0.0/14", "10.0.0.1")], "198.51.100.10",
                         prefix=PREFIX)
    proxies = []
    container = None
    try:
        network.up()
        host_proxy, port = converge._proxy_in(None, "127.0.0.1", 0)
        proxies = [host_proxy, converge._proxy_in(network.inet, PROXY4, PROXY_PORT)[0],
                   converge._proxy_in(network.inet, PROXY6, PROXY_PORT)[0]]
        endpoint = load_topology(ROOT / "config/topology.yaml").object_storage.endpoint
        root = converge.build_root("debian-13", port, endpoint, RUN_DIR / "roots.log")
        container = Container(HOST, root, RUN_DIR / "servers" / HOST.name, public)
        container.prepare()
        container.boot()
        assert container.wait_sshd(), container.console.read_text()[-2000:]
        plan = [
            _command("probe:/etc/unde/setting", HOST.public4 or "", "install -D -m 0644 /dev/stdin /etc/unde/setting", [],
                     stdin="x=1\n"),
            _command("probe:apply", HOST.public4 or "",
                     "echo 'pgbouncer: configuration file error on line 3' >&2; exit 3", ["urn:test::probe:/etc/unde/setting"]),
            _command("probe:apply:after", HOST.public4 or "", "true", ["urn:test::probe:apply"]),
            _command("gone:/etc/unde/setting", NOBODY, "true", []),
        ]
        run = deliver(plan, Operator(network.operator, key), attempts=2)
    finally:
        if container is not None:
            container.stop(timeout=60)
            container.remove_disk()
        for proxy in proxies:
            proxy.shutdown()  # type: ignore[attr-defined]
        network.down()
    lines = failure_lines(run)
    print("\n".join(lines))
    printed = capsys.readouterr().out
    assert "Traceback" not in printed
    assert run.outcomes["urn:test::probe:/etc/unde/setting"].status == "ok", lines
    assert "FAILED probe: probe:apply: exit 3: pgbouncer: configuration file error on line 3" in lines
    assert "SKIPPED probe: probe:apply:after: after probe:apply: not done" in lines
    gone = [line for line in lines if line.startswith("FAILED gone: gone:/etc/unde/setting: exit 255, after 1 dial retries: ")]
    assert len(gone) == 1, lines
    assert f"connect to host {NOBODY} port 22: " in gone[0], gone
    assert any(reason in gone[0] for reason in ("Network is unreachable", "No route to host", "timed out")), gone
