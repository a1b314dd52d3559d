"""The routing watcher (unde_infra/files/shard_routing.py, the file shipped to every shard node)
and its rendered parameters.

* Its loop: writes only while Patroni says this member is the writable primary, at once when it
  becomes one, re-confirms every confirm interval, stops the moment it is demoted; retries a
  failed write after a pause that doubles up to the bound; never overwrites an entry the script
  refused (a newer timeline, or the same timeline from another member).
* Its Patroni check, against a REST API stand-in on loopback (200 with the status body, 503).
* Its rendered files: parameters from the topology and the timings, the password root-only and
  never in the parameters, the unit's credential. The real Redis side (ACL, script) is in
  tests/artifacts/test_redis_server.py, and the whole thing runs in the failover drill
  (tests/integration/test_routing_drill.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from unde_infra import timings
from unde_infra.files import shard_routing as sr
from unde_infra.model import Inventory
from unde_infra.render import shard_routing as render
from unde_infra.render.postgres import NodeLayout

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "unde_infra" / "files" / "shard_routing.py"
PASSWORD = "routerPw-9qX2"  # a stand-in; the assertions look for it in every output


def config(inventory: Inventory, node: str = "replica", **changes: Any) -> sr.Config:
    redis = inventory.servers["local-redis"]
    data = render.routing_settings(inventory.shards[0], node, redis)  # type: ignore[arg-type]
    data.update(changes)
    return sr.parse_config(data)


class Script:
    """Patroni's answers tick by tick (a timeline, or None: not the primary) and Redis's replies."""

    def __init__(self, leader: list[int | None], replies: list[object]) -> None:
        self.leader, self.replies = list(leader), list(replies)
        self.writes: list[tuple[int, float]] = []

    def leader_timeline(self, config: sr.Config) -> int | None:
        return self.leader.pop(0)

    def write(self, config: sr.Config, password: str, timeline: int, now: float) -> tuple[int, int, str]:
        assert password == PASSWORD
        self.writes.append((timeline, now))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, tuple)
        return reply


def watch(cfg: sr.Config, script: Script, ticks: list[float]) -> tuple[sr.Watcher, str]:
    """Tick at each time of `ticks` (the wall clock reads the same, so each write records the
    tick it happened in)."""
    out = io.StringIO()
    clock = [0.0]
    watcher = sr.Watcher(cfg, PASSWORD, sr.Redactor(out), leader=script.leader_timeline, writer=script.write,
                         wall_clock=lambda: clock[0])
    for now in ticks:
        clock[0] = now
        watcher.tick(now)
    return watcher, out.getvalue()


def test_only_the_primary_writes_at_once_then_confirms_and_stops_when_demoted(inventory: Inventory) -> None:
    cfg = config(inventory)
    member = "shard-replica-0"
    script = Script([None, None, 2, 2, 2, 2, None, None], [(sr.WRITTEN, 2, member), (sr.CURRENT, 2, member)])
    confirm = cfg.confirm_seconds
    watcher, log = watch(cfg, script, [0, 1, 2, 3, 2 + confirm - 1, 2 + confirm, 2 + confirm + 1, 2 + confirm + 2])
    # Written the tick it became the primary, then once more a confirm interval later; not while
    # it was a replica, not after its demotion.
    assert script.writes == [(2, 2), (2, 2 + confirm)]
    assert watcher.timeline is None and not watcher.entry_ok
    assert f"{cfg.key} -> 10.1.2.10:6432 (shard-replica-0, timeline 2)" in log
    assert "no longer the writable primary" in log and PASSWORD not in log


def test_a_failed_write_is_retried_with_a_pause_that_doubles_up_to_the_bound(inventory: Inventory) -> None:
    cfg = config(inventory)
    errors: list[object] = [ConnectionRefusedError("refused")] * 6
    script = Script([3] * 40, [*errors, (sr.WRITTEN, 3, "shard-replica-0")])
    watcher, log = watch(cfg, script, [float(t) for t in range(40)])
    # Polled every second: 0, then 1 (0.5 s later), 2 (+1), 4 (+2), 8 (+4), 16 (+8), 24 (+8).
    assert [now for _, now in script.writes] == [0, 1, 2, 4, 8, 16, 24] and watcher.entry_ok
    # The pauses the watcher announced: 0.5, 1, 2, 4, 8, 8 s (first * 2^k, at most the maximum).
    pauses = [float(line.rsplit("retrying in ", 1)[1].split(" ")[0]) for line in log.splitlines() if "retrying" in line]
    assert pauses == [0.5, 1, 2, 4, 8, 8]
    assert timings.ROUTING_RETRY_FIRST_SECONDS == 0.5 and timings.ROUTING_RETRY_MAX_SECONDS == 8


def test_retry_attempts_follow_the_pauses(inventory: Inventory) -> None:
    cfg = config(inventory)
    script = Script([3] * 30, [sr.RedisError("LOADING")] * 3 + [(sr.WRITTEN, 3, "shard-replica-0")])
    watch(cfg, script, [i * 0.5 for i in range(30)])
    # Polled every 0.5 s: attempts at 0, then not before 0.5, 1.5 (0.5 + 1) and 3.5 (1.5 + 2).
    assert [now for _, now in script.writes] == [0.0, 0.5, 1.5, 3.5]


def test_a_refused_write_is_never_forced_and_looked_at_again_later(inventory: Inventory) -> None:
    cfg = config(inventory, node="primary")
    # Patroni says we lead on timeline 3, but the entry holds the replica on timeline 4: the
    # script refuses, the watcher reports it (entry_ok 0) and tries again only a confirm later.
    script = Script([3] * 5, [(sr.OLDER, 4, "shard-replica-0"), (sr.OLDER, 4, "shard-replica-0")])
    watcher, log = watch(cfg, script, [0, 1, 2, 3, cfg.confirm_seconds])
    assert len(script.writes) == 2 and not watcher.entry_ok
    assert log.count("holds shard-replica-0 on a newer timeline (4 vs 3): not overwritten") == 1
    assert "unde_shard_routing_leader 1\n" in watcher.metrics() and "unde_shard_routing_entry_ok 0\n" in watcher.metrics()


def test_metrics_say_whether_the_entry_names_the_primary(inventory: Inventory, tmp_path: Path) -> None:
    cfg = config(inventory, textfile=str(tmp_path / "unde_shard_routing.prom"))
    script = Script([5], [(sr.WRITTEN, 5, "shard-replica-0")])
    watcher, _ = watch(cfg, script, [1_700_000_000.0])
    watcher.write_metrics()
    text = (tmp_path / "unde_shard_routing.prom").read_text()
    assert "unde_shard_routing_leader 1\n" in text and "unde_shard_routing_entry_ok 1\n" in text
    assert "unde_shard_routing_timeline 5\n" in text
    assert "unde_shard_routing_last_success_timestamp_seconds 1700000000\n" in text
    # No label of its own: the scrape target's labels (server, shard) name it.
    assert "{" not in text


class FakePatroni:
    """Patroni's REST API: GET /primary answers `status` with `body`."""

    def __init__(self) -> None:
        self.status, self.body = 503, {"state": "running", "role": "replica", "timeline": 1}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                raw = json.dumps(fake.body).encode()
                self.send_response(fake.status if self.path == "/primary" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/primary"


@pytest.fixture
def patroni() -> Iterator[FakePatroni]:
    fake = FakePatroni()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_the_primary_is_whom_patronis_rest_api_says(inventory: Inventory, patroni: FakePatroni) -> None:
    cfg = config(inventory, patroni={"url": patroni.url, "timeout_seconds": 1})
    assert sr.leader_timeline(cfg) is None  # 503: a replica
    patroni.status, patroni.body = 200, {"state": "running", "role": "primary", "timeline": 7}
    assert sr.leader_timeline(cfg) == 7
    patroni.body = {"state": "running", "role": "master", "timeline": 7}  # Patroni 3's name
    assert sr.leader_timeline(cfg) == 7
    for body in ({"state": "stopping", "role": "primary", "timeline": 7}, {"state": "running", "role": "primary"},
                 {"state": "running", "role": "primary", "timeline": "7"}, ["not", "a", "status"]):
        patroni.body = body  # type: ignore[assignment]
        assert sr.leader_timeline(cfg) is None, body
    dead = config(inventory, patroni={"url": "http://127.0.0.1:9/primary", "timeout_seconds": 1})
    assert sr.leader_timeline(dead) is None


def test_rendered_parameters_and_unit(inventory: Inventory) -> None:
    shard, redis = inventory.shards[0], inventory.servers["local-redis"]
    files = render.routing_files(shard, "replica", redis, PASSWORD)
    script = render.script_path()
    settings = json.loads(files[f"{script}.json"].content)
    assert settings["member"] == "shard-replica-0" and settings["key"] == "endpoint:shard0"
    assert settings["endpoint"] == {"host": "10.1.2.10", "port": 6432}  # PgBouncer on the replica
    assert settings["patroni"]["url"] == "http://10.1.2.10:8008/primary"
    assert settings["redis"]["host"] == "10.2.0.4" and settings["redis"]["user"] == "router"
    assert settings["poll_seconds"] == timings.ROUTING_POLL_SECONDS
    assert sr.parse_config(settings).key == "endpoint:shard0"
    password = files[render.password_path()]
    assert (password.mode, password.owner, password.secret) == ("0600", "root", True)
    assert all(PASSWORD not in f.content for path, f in files.items() if path != render.password_path())
    assert files[script].content == SCRIPT.read_text() and files[script].mode == "0755"
    unit = files[f"/etc/systemd/system/{render.UNIT}.service"].content
    assert f"LoadCredential=redis-password:{render.password_path()}" in unit and "Restart=always" in unit
    primary = json.loads(render.routing_files(shard, "primary", redis, PASSWORD)[f"{script}.json"].content)
    assert primary["endpoint"]["host"] == "10.2.0.10" and primary["patroni"]["url"].startswith("http://10.2.0.10:")
    with pytest.raises(ValueError):
        render.routing_files(shard, "primary", redis, "two words")


def test_every_config_problem_is_reported_at_once(inventory: Inventory) -> None:
    settings = render.routing_settings(inventory.shards[0], "primary", inventory.servers["local-redis"])
    broken = {**settings, "key": "endpoint:shard9", "poll_seconds": 0, "endpoint": {"host": "x", "port": 70000},
              "retry": {"first_seconds": 9, "max_seconds": 8}}
    del broken["member"]
    with pytest.raises(sr.ConfigError) as error:
        sr.parse_config(broken, "shard-routing.json")
    assert error.value.problems == [
        "shard-routing.json: member: required",
        "shard-routing.json: endpoint.port: 70000 is no TCP port",
        "shard-routing.json: poll_seconds: must be positive",
        "shard-routing.json: retry.first_seconds: must not exceed retry.max_seconds",
        "shard-routing.json: key: 'endpoint:shard9' is not the entry of 'shard0'",
    ]


def test_check_reads_the_credential_and_never_prints_it(inventory: Inventory, tmp_path: Path) -> None:
    layout = NodeLayout(tools_dir=str(tmp_path), secrets_dir=str(tmp_path / "secrets"), textfile_dir=str(tmp_path))
    files = render.routing_files(inventory.shards[0], "primary", inventory.servers["local-redis"], PASSWORD, layout)
    for path, rendered in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(rendered.content)
    script = render.script_path(layout)
    ok = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "ok (local-shard-0, endpoint:shard0)" in ok.stdout
    assert PASSWORD not in ok.stdout + ok.stderr
    Path(render.password_path(layout)).write_text("")
    empty = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, timeout=30)
    assert empty.returncode == sr.EXIT_BAD_CONFIG and "must be one word" in empty.stderr
