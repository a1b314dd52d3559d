"""The rendered monitoring configuration, run by the real Debian binaries on 127.0.0.1.

Prometheus, Alertmanager and node_exporter start with the rendered command-line flags and files
(under a temp dir, every target rewritten to the one loopback node_exporter). The test asserts
every target is up, rules evaluate (the tunnel collector's RTT puts an alert in pending state),
and the dead man's switch reaches the heartbeat receiver through Alertmanager. The second alert
path (local-monitoring) runs the same way, with a Prometheus and an Alertmanager standing in for
Helsinki's: its copies of the main path's alerts are held back while Helsinki's answer, and once
Helsinki's Prometheus and Alertmanager are stopped its alert reaches the Telegram and Slack
stand-ins. Every HTTP endpoint, notifications included, is on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from unde_infra.model import load_topology
from unde_infra.render import monitoring as m

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 120
RTT_MS = 250.5  # above VPN_RTT_ALERT_MS, so VpnTunnelRttHigh goes pending


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Loopback HTTP sink standing in for the heartbeat service, Slack and Telegram."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, body))
                # What Telegram's sendMessage answers: the Message it sent. Alertmanager 0.25 reads
                # its chat (message.Chat.ID) and crashes on a reply without one.
                payload = json.dumps({"ok": True, "result": {"message_id": len(receiver.requests), "date": 0,
                                                             "chat": {"id": -100, "type": "supergroup"},
                                                             "text": "ok"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for(what: str, check: Callable[[], Any], logs: list[Path], timeout: float = DEADLINE_SECONDS) -> Any:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs if log.exists())
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}\n{tails}")


def rendered_args(defaults_file: str) -> list[str]:
    line = next(line for line in Path(defaults_file).read_text().splitlines() if line.startswith("ARGS="))
    return shlex.split(line.removeprefix("ARGS="))[0].split()


@pytest.fixture
def processes() -> Iterator[Callable[[list[str], Path], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_prometheus_scrapes_every_target_and_alerts_flow(
    tmp_path: Path, processes: Callable[[list[str], Path], subprocess.Popen[bytes]]
) -> None:
    prometheus = require_tool("prometheus")
    alertmanager = require_tool("prometheus-alertmanager")
    node_exporter = require_tool("prometheus-node-exporter")

    receiver = Receiver()
    try:
        inventory = load_topology(shards=2)
        node_port = free_port()
        endpoints = m.Endpoints(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", "127.0.0.1", free_port())
        paths = m.MonitoringPaths(str(tmp_path / "root"))
        sink = f"http://127.0.0.1:{receiver.port}"
        settings = m.AlertingSettings(telegram_chat_id=-100, slack_channel="#test", telegram_api_url=f"{sink}/telegram")
        secrets = m.MonitoringSecrets(
            grafana_admin_password="live-test-admin",
            telegram_bot_token="111:live-test-token",
            slack_webhook_url=f"{sink}/slack",
            heartbeat_url=f"{sink}/heartbeat",
        )
        files = m.monitoring_files(
            inventory, settings, paths=paths, endpoints=endpoints,
            target_address=lambda server, port: f"127.0.0.1:{node_port}",
        )
        files.update(m.tunnel_collector_files(inventory.servers["local-app"], inventory, paths=paths))
        for path, text in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        for directory in (paths.prometheus_storage, paths.alertmanager_storage, paths.textfile_dir,
                          str(Path(paths.alertmanager_runtime_config).parent)):
            Path(directory).mkdir(parents=True, exist_ok=True)

        # What systemd does for the unit: credentials from the root-only files, then the assembler.
        credentials = Path(paths.credential(m.ALERTMANAGER_UNIT, "x")).parent
        credentials.mkdir(parents=True)
        secret_files = m.monitoring_secret_files(secrets, paths=paths)
        for name, source in m.ALERTMANAGER_CREDENTIALS.items():
            (credentials / name).write_text(secret_files[paths.secret(source)])
        env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}
        assembled = subprocess.run(["/usr/bin/python3", paths.alertmanager_assembler], env=env,
                                   capture_output=True, text=True, timeout=30)
        assert assembled.returncode == 0, assembled.stderr

        # The tunnel collector, with stand-ins for wg and ping (a real tunnel needs a peer).
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        handshake = int(time.time()) - 40
        (bin_dir / "wg").write_text(
            "#!/bin/sh\nprintf 'wg-app\\tPEER=\\t(none)\\t192.0.2.1:51820\\t10.3.0.100/32\\t"
            f"{handshake}\\t1\\t2\\t25\\n'\n")
        (bin_dir / "ping").write_text(
            "#!/bin/sh\necho '3 packets transmitted, 3 received, 0% packet loss'\n"
            f"echo 'rtt min/avg/max/mdev = 240.0/{RTT_MS}/260.0/5.0 ms'\n")
        for tool in bin_dir.iterdir():
            tool.chmod(0o755)
        collected = subprocess.run(["/usr/bin/python3", paths.tunnel_collector],
                                   env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
        assert collected.returncode == 0, collected.stderr

        logs = [tmp_path / "node_exporter.log", tmp_path / "alertmanager.log", tmp_path / "prometheus.log"]
        # Every target scrapes this one exporter, all within the same 15 s: no request limit (the
        # default 40 would turn some scrapes into 503s), and only the collector the test reads.
        processes([node_exporter, f"--web.listen-address=127.0.0.1:{node_port}", "--web.max-requests=0",
                   "--collector.disable-defaults", "--collector.textfile",
                   f"--collector.textfile.directory={paths.textfile_dir}"], logs[0])
        processes([alertmanager, *rendered_args(paths.alertmanager_defaults)], logs[1])
        prometheus_args = rendered_args(paths.prometheus_defaults)
        assert "--storage.tsdb.retention.time=30d" in prometheus_args
        processes([prometheus, *prometheus_args], logs[2])
        api = f"http://{endpoints.prometheus}/api/v1"

        # Every server of the inventory, under each of its jobs, plus the two self-scrapes and the
        # second alert path's Prometheus and Alertmanager (the peer jobs).
        expected = sum(len(groups) for groups in m.file_sd_targets(inventory).values()) + 2 + 2
        assert expected > len(inventory.servers)

        def all_up() -> list[dict[str, Any]] | None:
            active = get_json(f"{api}/targets?state=active")["data"]["activeTargets"]
            return active if len(active) == expected and all(t["health"] == "up" for t in active) else None

        active = wait_for("every target up", all_up, logs)
        node_servers = {t["labels"]["server"] for t in active if t["labels"]["job"] == "node"}
        assert node_servers == set(inventory.servers)
        shard0 = next(t["labels"] for t in active if t["labels"]["job"] == "patroni"
                      and t["labels"]["server"] == "local-shard-0")
        assert shard0 == {"instance": "local-shard-0", "job": "patroni", "server": "local-shard-0",
                          "site": "local", "task": "shard", "shard": "0"}

        # The collector's metric went through the real node_exporter and is queryable.
        query = urllib.parse.quote(f'{m.VPN_TUNNEL_RTT_METRIC}{{server="local-app"}}')
        result = wait_for("vpn_tunnel_rtt_ms", lambda: get_json(f"{api}/query?query={query}")["data"]["result"], logs)
        assert float(result[0]["value"][1]) == RTT_MS
        assert result[0]["metric"]["tunnel"] == "local-app" and result[0]["metric"]["interface"] == "wg-app"

        def alert_states() -> dict[str, str] | None:
            alerts = get_json(f"{api}/alerts")["data"]["alerts"]
            states = {a["labels"]["alertname"]: a["state"] for a in alerts}
            return states if {"Watchdog", "VpnTunnelRttHigh"} <= set(states) else None

        states = wait_for("rules to evaluate", alert_states, logs)
        assert states["Watchdog"] == "firing"
        assert states["VpnTunnelRttHigh"] == "pending"  # `for: 5m` has not passed
        rules = get_json(f"{api}/rules")["data"]["groups"]
        assert {g["name"] for g in rules} >= {"unde-recording", "unde-meta", "unde-network", "unde-shards"}
        assert all(r["health"] == "ok" for g in rules for r in g["rules"] if r.get("lastEvaluation", "").startswith("2"))

        # Dead man's switch: Prometheus -> Alertmanager -> heartbeat webhook on loopback.
        def heartbeat() -> dict[str, Any] | None:
            posts = [json.loads(body) for path, body in receiver.requests if path == "/heartbeat"]
            return posts[0] if posts else None

        payload = wait_for("the heartbeat webhook", heartbeat, logs)
        assert payload["receiver"] == "heartbeat"
        assert [a["labels"]["alertname"] for a in payload["alerts"]] == ["Watchdog"]
    finally:
        receiver.close()


SECOND_PATH_DEADLINE_SECONDS = 360  # HelsinkiUnreachable: 2 min `for`, evaluation, 30 s group_wait


def _post_json(url: str, payload: object) -> int:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def test_the_second_alert_path_alerts_while_helsinki_is_down(
    tmp_path: Path, processes: Callable[[list[str], Path], subprocess.Popen[bytes]]
) -> None:
    prometheus = require_tool("prometheus")
    alertmanager = require_tool("prometheus-alertmanager")
    node_exporter = require_tool("prometheus-node-exporter")
    receiver = Receiver()
    try:
        inventory = load_topology()
        view = m.second_view(inventory)
        assert view is not None and view.peer is not None
        peer = view.peer.name
        node_port, closed_port = free_port(), free_port()  # nothing ever listens on closed_port
        helsinki_prometheus, helsinki_alertmanager = free_port(), free_port()

        def target_address(server, port: int) -> str:  # type: ignore[no-untyped-def]
            if server.name == peer:  # Helsinki's monitoring: the stand-ins below
                return f"127.0.0.1:{helsinki_prometheus if port == m.PROMETHEUS_PORT else helsinki_alertmanager}"
            if server.site != "local":  # helsinki-gw: unreachable throughout
                return f"127.0.0.1:{closed_port}"
            return f"127.0.0.1:{node_port}"

        endpoints = m.Endpoints(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", "127.0.0.1", free_port())
        paths = m.MonitoringPaths(str(tmp_path / "root"))
        sink = f"http://127.0.0.1:{receiver.port}"
        settings = m.AlertingSettings(telegram_chat_id=-100, slack_channel="#test", telegram_api_url=f"{sink}/telegram")
        secrets = m.MonitoringSecrets(grafana_admin_password=None, telegram_bot_token="222:second-path-token",
                                      slack_webhook_url=f"{sink}/slack", heartbeat_url=f"{sink}/heartbeat-local")
        files = m.monitoring_files(inventory, settings, paths=paths, endpoints=endpoints,
                                   target_address=target_address, view=view)
        for path, text in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        for directory in (paths.prometheus_storage, paths.alertmanager_storage,
                          str(Path(paths.alertmanager_runtime_config).parent)):
            Path(directory).mkdir(parents=True, exist_ok=True)
        credentials = Path(paths.credential(m.ALERTMANAGER_UNIT, "x")).parent
        credentials.mkdir(parents=True)
        secret_files = m.monitoring_secret_files(secrets, paths=paths)
        for name, source in m.ALERTMANAGER_CREDENTIALS.items():
            (credentials / name).write_text(secret_files[paths.secret(source)])
        assembled = subprocess.run(["/usr/bin/python3", paths.alertmanager_assembler], capture_output=True, text=True,
                                   env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}, timeout=30)
        assert assembled.returncode == 0, assembled.stderr

        # Helsinki's Prometheus and Alertmanager, standing in: the peer targets the second path scrapes.
        helsinki = tmp_path / "helsinki"
        helsinki.mkdir()
        (helsinki / "prometheus.yml").write_text("global: {scrape_interval: 15s}\nscrape_configs: []\n")
        (helsinki / "alertmanager.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
        logs = [tmp_path / n for n in ("node_exporter.log", "alertmanager.log", "prometheus.log",
                                       "helsinki-prometheus.log", "helsinki-alertmanager.log")]
        stand_ins = [
            processes([prometheus, f"--config.file={helsinki / 'prometheus.yml'}",
                       f"--storage.tsdb.path={helsinki / 'data'}", f"--web.listen-address=127.0.0.1:{helsinki_prometheus}"],
                      logs[3]),
            processes([alertmanager, f"--config.file={helsinki / 'alertmanager.yml'}",
                       f"--storage.path={helsinki / 'am'}", f"--web.listen-address=127.0.0.1:{helsinki_alertmanager}",
                       "--cluster.listen-address="], logs[4]),
        ]
        processes([node_exporter, f"--web.listen-address=127.0.0.1:{node_port}", "--web.max-requests=0",
                   "--collector.disable-defaults", "--collector.textfile",
                   f"--collector.textfile.directory={tmp_path}"], logs[0])
        processes([alertmanager, *rendered_args(paths.alertmanager_defaults)], logs[1])
        processes([prometheus, *rendered_args(paths.prometheus_defaults)], logs[2])
        api, am_api = f"http://{endpoints.prometheus}/api/v1", f"http://{endpoints.alertmanager}/api/v2"

        def firing(name: str) -> bool:
            return any(a["labels"]["alertname"] == name and a["state"] == "firing"
                       for a in get_json(f"{api}/alerts")["data"]["alerts"])

        # While Helsinki's alerting answers, the second path holds back its copies of its alerts.
        wait_for("Helsinki's alerting seen up (MainAlertPathHealthy)", lambda: firing(m.MAIN_PATH_HEALTHY), logs)
        copy = {"labels": {"alertname": "WalAccumulation", "server": "local-shard-0", "site": "local", "shard": "0",
                           "severity": "critical", m.ALSO_SENT_BY: "monitoring"},
                "annotations": {"summary": "stand-in for the rule's alert"}}
        assert _post_json(f"{am_api}/alerts", [copy]) == 200

        def copy_status() -> dict[str, Any]:
            found = get_json(f'{am_api}/alerts?filter=alertname="WalAccumulation"')
            return found[0]["status"] if found else {}

        held = wait_for("the copy to be inhibited", lambda: copy_status() if copy_status().get("inhibitedBy") else None,
                        logs)
        assert held["state"] == "suppressed"

        # Helsinki goes down: its Prometheus and Alertmanager stop.
        for process in stand_ins:
            process.terminate()
            process.wait(timeout=20)
        stopped = time.monotonic()
        wait_for("the copy to be released", lambda: copy_status().get("state") == "active", logs,
                 SECOND_PATH_DEADLINE_SECONDS)

        def notified() -> dict[str, bytes] | None:
            seen = {}
            for path, body in receiver.requests:
                if b"HelsinkiUnreachable" in body:
                    seen["slack" if path == "/slack" else "telegram" if path.startswith("/telegram") else path] = body
            return seen if {"slack", "telegram"} <= set(seen) else None

        seen = wait_for("HelsinkiUnreachable at the Telegram and Slack stand-ins", notified, logs,
                        SECOND_PATH_DEADLINE_SECONDS)
        print(f"\n[live] second path: HelsinkiUnreachable delivered {time.monotonic() - stopped:.0f} s after "
              "Helsinki's monitoring stopped", flush=True)
        telegram_paths = {path for path, body in receiver.requests if b"HelsinkiUnreachable" in body
                          and path.startswith("/telegram")}
        assert telegram_paths == {"/telegram/bot222:second-path-token/sendMessage"}
        slack = json.loads(seen["slack"])
        assert slack["channel"] == "#test"
        # Its own heartbeat, apart from Helsinki's.
        assert any(path == "/heartbeat-local" for path, _ in receiver.requests)
    finally:
        receiver.close()
