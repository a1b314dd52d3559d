"""The scripts the servers run (unde_infra/files/), against fixture inputs: the tunnel collector on
a `wg show all dump` and ping output, the Alertmanager pre-start step on a template, the etcd
leader affinity on member statuses, pgbackrest-run on `pgbackrest info` output and a Patroni
REST API on loopback, and Patroni's post-bootstrap script with stand-ins for its two commands."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from unde_infra.files import (
    alertmanager_config,
    etcd_leader_affinity,
    json_settings,
    pgbackrest_run,
    python_script,
    shell_settings,
    source,
    vpn_tunnel_collector,
)

WG_DUMP = (
    "wg-app\tPRIVKEY=\tPUBKEY=\t51820\toff\n"
    "wg-app\tPEERKEY=\t(none)\t46.62.233.30:51820\t10.3.0.100/32,10.1.0.0/16\t1700000000\t100\t200\t25\n"
    "wg-mood\tPEER2=\t(none)\t(none)\t10.3.3.1/32\t0\t0\t0\toff\n"
)
PING_OK = (
    "--- 10.3.0.100 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\n"
    "rtt min/avg/max/mdev = 121.103/123.456/125.800/1.900 ms\n"
)
PING_LOST = "--- 10.3.0.100 ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss, time 2041ms\n"


# --------------------------------------------------------------------------------------------
# The tunnel collector


def test_the_collector_reads_every_peer_of_a_wg_dump() -> None:
    peers = vpn_tunnel_collector.parse_wg_dump(WG_DUMP)
    assert [(p[0], [str(n) for n in p[1]], p[2]) for p in peers] == [
        ("wg-app", ["10.3.0.100/32", "10.1.0.0/16"], 1700000000),
        ("wg-mood", ["10.3.3.1/32"], 0),
    ]


def test_the_collector_reads_pings_summary() -> None:
    assert vpn_tunnel_collector.parse_ping(PING_OK) == (3, 123.456)
    assert vpn_tunnel_collector.parse_ping(PING_LOST) == (0, None)
    assert vpn_tunnel_collector.parse_ping("") == (0, None)


def test_the_collector_reports_up_rtt_and_handshake_age_per_tunnel() -> None:
    tunnels = [{"tunnel": "local-app", "peer_ip": "10.3.0.100"}, {"tunnel": "local-mood", "peer_ip": "10.3.3.1"},
               {"tunnel": 'we"ird', "peer_ip": "10.3.9.1"}]
    peers = vpn_tunnel_collector.parse_wg_dump(WG_DUMP)
    text = vpn_tunnel_collector.exposition(tunnels, peers, [(3, 123.456), (0, None), (0, None)], now=1700000030.0)
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    app = '{tunnel="local-app",interface="wg-app",peer_ip="10.3.0.100"}'
    mood = '{tunnel="local-mood",interface="wg-mood",peer_ip="10.3.3.1"}'
    unknown = '{tunnel="we\\"ird",interface="",peer_ip="10.3.9.1"}'
    assert values == {
        f"vpn_tunnel_up{app}": "1", f"vpn_tunnel_up{mood}": "0", f"vpn_tunnel_up{unknown}": "0",
        f"vpn_tunnel_rtt_ms{app}": "123.456",
        f"vpn_tunnel_handshake_age_seconds{app}": "30.0",
        f"vpn_tunnel_handshake_age_seconds{mood}": "+Inf",  # a peer that never completed a handshake
        f"vpn_tunnel_handshake_age_seconds{unknown}": "+Inf",  # no peer routes that address at all
    }


def test_the_collector_runs_from_its_parameters_file(tmp_path: Path) -> None:
    """As delivered: the script and its JSON beside it, `wg` and `ping` stand-ins on PATH."""
    script = tmp_path / "lib" / "vpn-tunnel-collector"
    out = tmp_path / "textfile"
    out.mkdir()
    settings = {"tunnels": [{"tunnel": "local-app", "peer_ip": "10.3.0.100"}], "output_dir": str(out),
                "file_name": "unde_vpn_tunnel.prom", "ping_count": 3}
    for path, text in python_script(str(script), "vpn_tunnel_collector.py", settings).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, output in (("wg", WG_DUMP), ("ping", PING_OK)):
        (bin_dir / name).write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
        (bin_dir / name).chmod(0o755)
    result = subprocess.run(["/usr/bin/python3", str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    text = (out / "unde_vpn_tunnel.prom").read_text()
    assert 'vpn_tunnel_up{tunnel="local-app",interface="wg-app",peer_ip="10.3.0.100"} 1' in text.splitlines()
    assert not list(out.glob("*.tmp"))  # written atomically
    # Without its parameters file the script refuses to guess.
    Path(f"{script}.json").unlink()
    assert subprocess.run(["/usr/bin/python3", str(script)], capture_output=True, timeout=30).returncode != 0


# --------------------------------------------------------------------------------------------
# Alertmanager's pre-start step

TEMPLATE = "receivers:\n- telegram_configs:\n  - bot_token: unde-token\n- webhook_configs:\n  - url: https://x.invalid/h\n"


def test_the_assembler_fills_in_each_secret_as_a_quoted_scalar() -> None:
    placeholders = {"telegram_bot_token": "unde-token", "heartbeat_url": "https://x.invalid/h"}
    text = alertmanager_config.fill_in(TEMPLATE, {"telegram_bot_token": '12:a"b: c', "heartbeat_url": "https://hc/1"},
                                       placeholders)
    assert '  - bot_token: "12:a\\"b: c"\n' in text and '  - url: "https://hc/1"\n' in text
    with pytest.raises(ValueError, match="empty"):
        alertmanager_config.fill_in(TEMPLATE, {"telegram_bot_token": "", "heartbeat_url": "x"}, placeholders)
    with pytest.raises(ValueError, match="not found once"):
        alertmanager_config.fill_in(TEMPLATE.replace("unde-token", "other"), {"telegram_bot_token": "t",
                                    "heartbeat_url": "x"}, placeholders)


def test_the_assembler_writes_a_private_runtime_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    template, output, credentials = tmp_path / "am.yml", tmp_path / "run.yml", tmp_path / "creds"
    template.write_text(TEMPLATE)
    credentials.mkdir()
    (credentials / "telegram_bot_token").write_text("123:token\n")
    config = tmp_path / "settings.json"
    config.write_text(json_settings({"template": str(template), "output": str(output),
                                     "placeholders": {"telegram_bot_token": "unde-token"}}))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert alertmanager_config.main(["--config", str(config)]) == 0
    assert '  - bot_token: "123:token"\n' in output.read_text()
    assert output.stat().st_mode & 0o077 == 0
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert alertmanager_config.main(["--config", str(config)]) == 1


# --------------------------------------------------------------------------------------------
# The etcd leader affinity

ME, B, C = "http://10.2.0.50:2379", "http://10.1.0.15:2379", "http://10.1.3.2:2379"


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        ({ME: (1, 2), B: (2, 2), C: (3, 2)}, (B, 1)),  # healthy, leader elsewhere: ask the leader to move
        ({ME: (1, 1), B: (2, 1), C: (3, 1)}, (None, None)),  # already here
        ({ME: (1, 2), B: None, C: (3, 2)}, (None, None)),  # a member is down: never move away from a quorum
        ({ME: (1, 2), B: (2, 2), C: (3, 3)}, (None, None)),  # members disagree (an election is running)
    ],
)
def test_the_leader_moves_home_only_when_every_member_agrees(seen: dict[str, tuple[int, int] | None],
                                                             expected: tuple[str | None, int | None]) -> None:
    _, endpoint, member = etcd_leader_affinity.decide(ME, seen)
    assert (endpoint, member) == expected


def test_the_affinity_script_reads_its_members_from_its_parameters(tmp_path: Path) -> None:
    config = tmp_path / "affinity.json"
    config.write_text(json_settings({"me": ME, "endpoints": [ME, B, C]}))
    asked = []

    def status_of(endpoint: str) -> tuple[int, int] | None:
        asked.append(endpoint)
        return (1, 1) if endpoint == ME else (len(asked), 1)

    assert etcd_leader_affinity.main(["--config", str(config)], status_of=status_of) == 0
    assert asked == [ME, B, C]


# --------------------------------------------------------------------------------------------
# pgbackrest-run

NAMES = {"last": "unde_pgbackrest_last_backup_timestamp_seconds", "size": "unde_pgbackrest_repo_size_bytes",
         "count": "unde_pgbackrest_backups", "ok": "unde_pgbackrest_info_success"}
INFO = {  # one stanza of `pgbackrest info --output=json` (pgBackRest 2.45), trimmed to what is read
    "name": "shard0",
    "status": {"code": 0, "message": "ok"},
    "backup": [
        {"type": "full", "timestamp": {"start": 1700000000, "stop": 1700000600},
         "info": {"repository": {"delta": 1000, "size": 900}}},
        {"type": "diff", "timestamp": {"start": 1700086400, "stop": 1700086460},
         "info": {"repository": {"delta": 50, "size": 40}}},
        {"type": "full", "timestamp": {"start": 1700600000, "stop": 1700600900},
         "info": {"repository": {"delta": 1200, "size": 1000}}},
    ],
}


def values(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_pgbackrest_metrics_from_the_info_output() -> None:
    text, ok = pgbackrest_run.exposition("shard0", INFO, NAMES)
    assert ok == 1
    assert values(text) == {
        'unde_pgbackrest_last_backup_timestamp_seconds{stanza="shard0",type="diff"}': "1700086460",
        'unde_pgbackrest_last_backup_timestamp_seconds{stanza="shard0",type="full"}': "1700600900",
        'unde_pgbackrest_last_backup_timestamp_seconds{stanza="shard0",type="incr"}': "0",
        'unde_pgbackrest_repo_size_bytes{stanza="shard0"}': "2250",
        'unde_pgbackrest_backups{stanza="shard0"}': "3",
        'unde_pgbackrest_info_success{stanza="shard0"}': "1",
    }


@pytest.mark.parametrize(("entry", "ok"), [(None, 0), ({"name": "shard0", "status": {"code": 2}}, 1),
                                           ({"name": "shard0", "status": {"code": 1}}, 0)])
def test_pgbackrest_metrics_of_an_unreadable_or_empty_stanza(entry: dict[str, object] | None, ok: int) -> None:
    text, read = pgbackrest_run.exposition("shard0", entry, NAMES)
    assert read == ok
    assert values(text)['unde_pgbackrest_info_success{stanza="shard0"}'] == str(ok)
    assert values(text)['unde_pgbackrest_backups{stanza="shard0"}'] == "0"


@pytest.fixture
def patroni_api() -> Iterator[tuple[str, list[int]]]:
    """A stand-in for Patroni's REST API on loopback: /primary answers with the status in `answer`."""
    answer = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            self.send_response(answer[0] if self.path == "/primary" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answer
    server.shutdown()
    thread.join(timeout=5)


def test_pgbackrest_run_backs_up_only_where_patroni_says_primary(patroni_api: tuple[str, list[int]]) -> None:
    url, answer = patroni_api
    runner = pgbackrest_run.Runner({"patroni_api": url})
    assert runner.is_primary()
    answer[0] = 503  # a replica
    assert not runner.is_primary()
    assert not pgbackrest_run.Runner({"patroni_api": "http://127.0.0.1:9"}).is_primary()  # nothing listens


def test_pgbackrest_run_refuses_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["backup"], ["backup", "weekly"], ["stanza", "extra"]):
        assert pgbackrest_run.main(argv, settings={}) == 2
    assert "pgbackrest-run backup TYPE" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Patroni's post-bootstrap script


def test_post_bootstrap_creates_the_stanza_then_runs_the_sql(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    runner = tmp_path / "pgbackrest-run"
    runner.write_text(f"import sys\nopen({str(log)!r}, 'a').write('runner ' + ' '.join(sys.argv[1:]) + '\\n')\n"
                      "sys.exit(1)\n")  # a failed stanza-create must not fail the bootstrap
    psql = tmp_path / "bin dir" / "psql"  # a space in a path survives the quoting
    psql.parent.mkdir()
    psql.write_text(f"#!/bin/sh\necho \"psql $*\" >> '{log}'\n")
    psql.chmod(0o755)
    (tmp_path / "post_bootstrap.sh").write_text(source("post_bootstrap.sh"))
    (tmp_path / "post_bootstrap.sh.env").write_text(shell_settings(
        {"PGBACKREST_RUNNER": str(runner), "PSQL": str(psql), "POST_BOOTSTRAP_SQL": "/etc/patroni/post_bootstrap.sql"}))
    result = subprocess.run(["sh", str(tmp_path / "post_bootstrap.sh"), "host=/run/pg port=5432"],
                            capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    assert "stanza-create failed" in result.stderr
    assert log.read_text().splitlines() == [
        "runner stanza",
        "psql host=/run/pg port=5432 -X -q -v ON_ERROR_STOP=1 -f /etc/patroni/post_bootstrap.sql",
    ]


def test_shell_settings_quote_every_value() -> None:
    text = shell_settings({"A": "x'; rm -rf /", "B": "$(id)", "C": 5})
    result = subprocess.run(["sh", "-c", text + 'printf "%s|%s|%s" "$A" "$B" "$C"'], capture_output=True, text=True,
                            timeout=10)
    assert result.stdout == "x'; rm -rf /|$(id)|5"
    for bad in ({"lower": "x"}, {"A": "two\nlines"}):
        with pytest.raises(ValueError):
            shell_settings(bad)


# --------------------------------------------------------------------------------------------
# The PostHog metrics collector


@pytest.fixture
def clickhouse() -> Iterator[tuple[str, dict[str, str], list[dict[str, list[str]]]]]:
    """A stand-in for ClickHouse's HTTP interface: answers per query, records what it was asked."""
    import urllib.parse

    answers = {"count()": "123456\n", "quantile(0.95)": "2.5\n"}
    asked: list[dict[str, list[str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            asked.append(params)
            body = next((a for key, a in answers.items() if key in params["query"][0]), None)
            self.send_response(200 if body is not None else 400)
            self.end_headers()
            self.wfile.write((body or "Code: 62. Syntax error").encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", answers, asked
    server.shutdown()
    thread.join(timeout=5)


def posthog_settings(url: str, out: Path) -> dict[str, object]:
    from unde_infra.render.posthog import metrics_collector_settings

    return {**metrics_collector_settings(), "clickhouse_url": url, "output_dir": str(out)}


def test_posthog_metrics_from_clickhouse(clickhouse: tuple[str, dict[str, str], list[dict[str, list[str]]]],
                                         tmp_path: Path) -> None:
    from unde_infra.files import posthog_metrics

    url, answers, asked = clickhouse
    config = tmp_path / "settings.json"
    config.write_text(json_settings(posthog_settings(url, tmp_path)))
    assert posthog_metrics.main(["--config", str(config)]) == 0
    text = (tmp_path / "unde_posthog.prom").read_text()
    assert values(text) == {"posthog_events_ingested_total": "123456", "posthog_query_latency_p95": "2.5"}
    assert "# TYPE posthog_events_ingested_total counter" in text
    # Its own queries stay out of the query log, so they never count in the latency they measure.
    assert all(params["log_queries"] == ["0"] for params in asked)
    assert "FROM posthog.events" in asked[0]["query"][0] and "system.query_log" in asked[1]["query"][0]
    # No SELECT finished in the window: ClickHouse says nan, and so does the metric.
    answers["quantile(0.95)"] = "nan\n"
    assert posthog_metrics.main(["--config", str(config)]) == 0
    assert values((tmp_path / "unde_posthog.prom").read_text())["posthog_query_latency_p95"] == "NaN"


def test_posthog_metrics_go_absent_when_clickhouse_does_not_answer(
        clickhouse: tuple[str, dict[str, str], list[dict[str, list[str]]]], tmp_path: Path) -> None:
    from unde_infra.files import posthog_metrics

    url, answers, _ = clickhouse
    config = tmp_path / "settings.json"
    config.write_text(json_settings(posthog_settings(url, tmp_path)))
    assert posthog_metrics.main(["--config", str(config)]) == 0
    answers.clear()  # every query now fails
    assert posthog_metrics.main(["--config", str(config)]) == 1
    assert not (tmp_path / "unde_posthog.prom").exists()  # absent, not stale: the absent() alerts fire
    config.write_text(json_settings(posthog_settings("http://127.0.0.1:9/", tmp_path)))  # nothing listens
    assert posthog_metrics.main(["--config", str(config)]) == 1
