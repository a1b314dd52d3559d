"""local-redis's rendered Redis configuration, run by a real redis-server (Debian's 7.0) on loopback:
the ACL users can do what their clients need and nothing else, the default user is refused,
maxmemory is the rendered figure, volatile-lfu evicts cache entries and never the routing cache,
the RDB snapshot brings the routing cache back after a restart, and Debian's redis_exporter logs
in with its own user and reports the maxmemory that the memory alert divides by. The exporter
user that push's running broker receives is created at run time without touching its other users.
Only bind, port, dir, pidfile and the ACL file's path are rewritten for the test."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from unde_infra.files import source
from unde_infra.model import Inventory
from unde_infra.render import monitoring as m
from unde_infra.render import redis as r

PASSWORDS = {"app": "appTestPassw0rd", "orchestrator": "orchTestPassw0rd", "exporter": "expTestPassw0rd",
             "admin": "adminTestPassw0rd", "router": "routerTestPassw0rd"}
MIB = 1024**2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@dataclass
class Redis:
    cli: str
    port: int
    conf: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, server_bin: str) -> None:
        self.process = subprocess.Popen([server_bin, str(self.conf)], stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT)
        wait_for("redis-server to answer", lambda: "NOAUTH" in self.run("PING") or self.run("PING") == "PONG")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis writes its snapshot and exits
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def run(self, *command: str, user: str | None = None, stdin: str | None = None) -> str:
        env = {"PATH": os.environ["PATH"]}
        args = [self.cli, "--no-auth-warning", "-h", "127.0.0.1", "-p", str(self.port)]
        if user is not None:
            args += ["--user", user]
            env["REDISCLI_AUTH"] = PASSWORDS[user]  # never in argv
        result = subprocess.run(args + list(command), capture_output=True, text=True, timeout=20, env=env, input=stdin)
        return (result.stdout + result.stderr).strip()


def config_for_the_test(inventory: Inventory, tmp_path: Path, port: int) -> tuple[Path, str]:
    """The rendered files with only bind/port/dir/pidfile/aclfile moved into `tmp_path`."""
    files = r.redis_server_files(inventory.servers["local-redis"], PASSWORDS)
    acl = tmp_path / "users.acl"
    acl.write_text(files[r.ACL_PATH].content)
    conf = files[r.CONF_PATH].content
    moved = {"bind": "bind 127.0.0.1", "port": f"port {port}", "dir": f"dir {tmp_path}",
             "pidfile": f"pidfile {tmp_path}/redis.pid", "aclfile": f"aclfile {acl}", "supervised": "supervised no"}
    lines = []
    for line in conf.splitlines():
        key = line.split(" ", 1)[0]
        lines.append(moved.pop(key) if key in moved else line)
    assert not moved, f"not in the rendered config: {moved}"
    path = tmp_path / "redis.conf"
    path.write_text("\n".join(lines) + "\n")
    return path, conf



@pytest.fixture
def redis(inventory: Inventory, tmp_path: Path) -> Iterator[Redis]:
    server_bin, cli = require_tool("redis-server"), require_tool("redis-cli")
    port = free_port()
    conf, _ = config_for_the_test(inventory, tmp_path, port)
    instance = Redis(cli, port, conf, tmp_path / "redis.log")
    try:
        instance.start(server_bin)
        yield instance
    finally:
        instance.stop()


def test_the_rendered_config_binds_private_and_tunnel_addresses_only(inventory: Inventory) -> None:
    server = inventory.servers["local-redis"]
    conf = r.redis_conf(server)
    assert "bind 127.0.0.1 10.2.0.4 -10.3.2.1\n" in conf and "protected-mode yes\n" in conf
    assert f"maxmemory {r.maxmemory_bytes(4) // MIB}mb\n" in conf and "maxmemory-policy volatile-lfu\n" in conf
    assert r.maxmemory_bytes(4) == 2200 * MIB  # (4096 - 512 - 64) MiB / 1.6
    files = r.redis_server_files(server, PASSWORDS)
    acl = files[r.ACL_PATH]
    # Delivered as Redis reads it, the redis user's alone; redis.conf for its group. Nothing hands
    # them over later (a delivery run again would write them again).
    assert (acl.owner, acl.group, acl.mode, acl.secret) == ("redis", "redis", "0600", True)
    conf_file = files[r.CONF_PATH]
    assert (conf_file.owner, conf_file.group, conf_file.mode) == ("root", "redis", "0640")
    setup = files[r.SETUP_PATH].content
    assert "chown" not in setup and "chgrp" not in setup
    assert not any(p in acl.content for p in PASSWORDS.values())  # hashes only
    # Every key selector of every user is a prefix of the contract (docs/architecture.md, Redis on local-redis), with its TTL rule.
    prefixes = {k.prefix for k in r.KEY_PREFIXES}
    for user in r.USERS:
        for selector in user.keys:
            assert selector == "~*" or selector.split("~", 1)[1].removesuffix("*") in prefixes, selector
    for path in (r.EXPORTER_ENV, r.ADMIN_ENV):
        assert (files[path].owner, files[path].mode, files[path].secret) == ("root", "0600", True)


def test_acl_users_can_do_what_they_need_and_nothing_else(redis: Redis) -> None:
    # The default user is off: no command, no AUTH with an empty password.
    assert "NOAUTH" in redis.run("PING")
    assert "WRONGPASS" in redis.run("AUTH", "default", "") or "ERR" in redis.run("AUTH", "default", "")
    assert "NOAUTH" in redis.run("GET", "route:u1")
    # app: rate limits (with Lua), debounce, sessions; reads the routing cache, never writes it.
    assert redis.run("SET", "ratelimit:u1", "1", "EX", "60", user="app") == "OK"
    assert redis.run("EVAL", "return redis.call('INCR', KEYS[1])", "1", "ratelimit:u1", user="app") == "2"
    assert redis.run("SET", "debounce:u1", "1", "PX", "500", "NX", user="app") == "OK"
    assert redis.run("HSET", "session:s1", "user", "u1", user="app") == "1"
    assert redis.run("GET", "route:u1", user="app") == ""
    for denied in (["SET", "route:u1", "10.2.0.10"], ["GET", "catalog:x"], ["FLUSHALL"], ["KEYS", "*"],
                   ["CONFIG", "GET", "maxmemory"], ["BGSAVE"], ["CLIENT", "LIST"], ["ACL", "LIST"]):
        assert "NOPERM" in redis.run(*denied, user="app"), denied
    # orchestrator: fills the routing cache, the catalog cache, frames and personas; reads sessions.
    assert redis.run("SET", "route:u1", "10.2.0.10", user="orchestrator") == "OK"
    assert redis.run("SET", "catalog:item:1", "{}", "EX", "3600", user="orchestrator") == "OK"
    assert redis.run("HGET", "session:s1", "user", user="orchestrator") == "u1"
    assert redis.run("GET", "route:u1", user="app") == "10.2.0.10"
    for denied in (["HSET", "session:s1", "x", "1"], ["SET", "ratelimit:u1", "0"], ["FLUSHDB"]):
        assert "NOPERM" in redis.run(*denied, user="orchestrator"), denied
    # exporter: statistics only.
    assert "redis_version:7." in redis.run("INFO", "server", user="exporter")
    assert redis.run("CONFIG", "GET", "maxmemory", user="exporter").splitlines() == ["maxmemory", str(2200 * MIB)]
    for denied in (["GET", "route:u1"], ["SET", "x", "1"], ["CONFIG", "SET", "maxmemory", "0"], ["SCAN", "0"]):
        assert "NOPERM" in redis.run(*denied, user="exporter"), denied


def test_maxmemory_eviction_and_persistence_are_what_was_rendered(redis: Redis, tmp_path: Path) -> None:
    names = ("maxmemory", "maxmemory-policy", "save", "appendonly", "stop-writes-on-bgsave-error", "protected-mode")
    config = {name: redis.run("CONFIG", "GET", name, user="admin").splitlines()[1] for name in names}
    assert config["maxmemory"] == str(r.maxmemory_bytes(4))
    assert config["maxmemory-policy"] == "volatile-lfu"
    assert config["save"] == "300 100 60 10000" and config["appendonly"] == "no"
    assert config["stop-writes-on-bgsave-error"] == "no" and config["protected-mode"] == "yes"
    # Shrink maxmemory (admin only) to see the policy at work: TTL'd catalog entries go, the
    # routing cache (no TTL) stays.
    assert redis.run("CONFIG", "SET", "maxmemory", "8mb", user="admin") == "OK"
    routes = "".join(f"SET route:u{i} 10.2.0.10\n" for i in range(200))
    redis.run(user="orchestrator", stdin=routes)
    value = "x" * 10_000
    catalog = "".join(f"SET catalog:item:{i} {value} EX 3600\n" for i in range(2000))  # ~20 MB
    redis.run(user="orchestrator", stdin=catalog)
    stats = redis.run("INFO", "stats", user="admin")
    evicted = int(re.search(r"evicted_keys:(\d+)", stats).group(1))  # type: ignore[union-attr]
    assert evicted > 1000
    assert redis.run("EXISTS", *[f"route:u{i}" for i in range(200)], user="admin") == "200"
    # Past maxmemory with nothing evictable left (Redis checks before each write), writes fail
    # instead of dropping routing entries.
    assert redis.run("-x", "SET", "route:big", stdin="y" * (9 * MIB), user="orchestrator") == "OK"
    assert "OOM" in redis.run("SET", "route:u200", "10.2.0.10", user="orchestrator")
    assert redis.run("EXISTS", *[f"route:u{i}" for i in range(200)], user="admin") == "200"
    assert redis.run("DEL", "route:big", user="orchestrator") == "1"
    # RDB: the routing cache survives a restart.
    assert redis.run("CONFIG", "SET", "maxmemory", str(r.maxmemory_bytes(4)), user="admin") == "OK"
    redis.stop()
    assert (tmp_path / "dump.rdb").exists()
    redis.start(require_tool("redis-server"))
    assert redis.run("GET", "route:u199", user="app") == "10.2.0.10"


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_redis_exporter_logs_in_and_feeds_the_memory_alert(redis: Redis, inventory: Inventory,
                                                           tmp_path: Path) -> None:
    exporter, promtool = require_tool("prometheus-redis-exporter"), require_tool("promtool")
    env_text = r.exporter_env(PASSWORDS["exporter"], port=redis.port)
    env = {"PATH": os.environ["PATH"]}
    for line in env_text.splitlines():
        key, value = line.split("=", 1)
        env[key] = value.strip("'")  # what systemd's EnvironmentFile= does with single quotes
    web = free_port()
    log = tmp_path / "exporter.log"
    process = subprocess.Popen([exporter, f"--web.listen-address=127.0.0.1:{web}"], env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{web}/metrics"
        wait_for("redis_exporter", lambda: _answers(url))
        metrics = scrape(url)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert metrics["redis_up"] == 1, log.read_text()
    assert "NOPERM" not in log.read_text() and "WRONGPASS" not in log.read_text(), log.read_text()
    max_bytes = metrics["redis_memory_max_bytes"]
    assert max_bytes == r.maxmemory_bytes(4) > 0
    # The memory alert on these figures: it fires above 80 % of the real maxmemory, not below.
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in m.rule_files(inventory).items():
        (rules / name).write_text(text)
    labels = 'job="redis",instance="local-redis",server="local-redis",site="local",task="redis"'
    alert = next(a for group in m.alerts(inventory).values() for a in group if a.name == "RedisMemoryHigh")
    annotations = {"summary": alert.summary, "description": alert.description.replace("{{ $labels.server }}",
                                                                                       "local-redis")}

    def case(used: float, fires: bool) -> dict[str, object]:
        expected = [{"exp_labels": {"job": "redis", "instance": "local-redis", "server": "local-redis",
                                    "site": "local", "task": "redis", "severity": "warning"},
                     "exp_annotations": annotations}] if fires else []
        return {"interval": "15s", "input_series": [
            {"series": f"redis_memory_used_bytes{{{labels}}}", "values": f"{int(used)}x60"},
            {"series": f"redis_memory_max_bytes{{{labels}}}", "values": f"{int(max_bytes)}x60"}],
            "alert_rule_test": [{"eval_time": "12m", "alertname": "RedisMemoryHigh", "exp_alerts": expected}]}
    spec = tmp_path / "redis.test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules / f) for f in m.RULE_FILES], "evaluation_interval": "15s",
                                    "tests": [case(0.85 * max_bytes, True), case(0.5 * max_bytes, False),
                                              case(metrics["redis_memory_used_bytes"], False)]}))
    result = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_push_gets_an_exporter_user_without_anything_else_changing(tmp_path: Path) -> None:
    """push runs Celery's broker with its own configuration: the script adds one user at run time."""
    server_bin, cli = require_tool("redis-server"), require_tool("redis-cli")
    port = free_port()
    conf = tmp_path / "broker.conf"  # a broker as Debian installs it: default user, no password, loopback
    conf.write_text(f"bind 127.0.0.1\nport {port}\ndir {tmp_path}\nsave \"\"\n")
    broker = Redis(cli, port, conf, tmp_path / "broker.log")
    try:
        broker.start(server_bin)
        broker.run("LPUSH", "celery", "task-1")
        files = r.adopted_redis_exporter_files(PASSWORDS["exporter"])
        script = tmp_path / "redis-exporter-user"
        script.write_text(source("redis_exporter_user.sh"))
        settings = files[f"{r.EXPORTER_USER_PATH}.env"].content
        hash_file = tmp_path / "exporter.sha256"
        hash_file.write_text(files[r.EXPORTER_USER_HASH].content)
        settings = settings.replace(f"REDIS_PORT={r.REDIS_PORT}", f"REDIS_PORT={port}").replace(
            r.EXPORTER_USER_HASH, str(hash_file))
        (tmp_path / "redis-exporter-user.env").write_text(settings)
        for _ in range(2):  # the timer runs it again and again: idempotent
            result = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30,
                                    env={"PATH": f"{Path(cli).parent}:/usr/bin:/bin"})
            assert result.returncode == 0 and result.stderr == "", result.stderr
        assert "redis_version:" in broker.run("INFO", "server", user="exporter")
        assert "NOPERM" in broker.run("LRANGE", "celery", "0", "-1", user="exporter")
        # Celery's login (the default user) and its queue are as they were.
        assert broker.run("LRANGE", "celery", "0", "-1") == "task-1"
        assert broker.run("ACL", "USERS").splitlines() == ["default", "exporter"]
        assert not (tmp_path / "users.acl").exists() and conf.read_text().count("\n") == 4
    finally:
        broker.stop()


def test_the_routing_watcher_writes_its_entry_through_the_rendered_acl(redis: Redis, inventory: Inventory) -> None:
    """The shard nodes' `router` user and the watcher's compare-and-set script, on the real Redis:
    only a newer timeline (or a refresh by the same member) changes the entry."""
    from unde_infra.files import shard_routing as sr
    from unde_infra.render.shard_routing import routing_settings

    def config(node: str) -> sr.Config:
        settings = routing_settings(inventory.shards[0], node, inventory.servers["local-redis"])  # type: ignore[arg-type]
        settings["redis"] = {**settings["redis"], "host": "127.0.0.1", "port": redis.port}  # type: ignore[dict-item]
        return sr.parse_config(settings)

    primary, replica, password = config("primary"), config("replica"), PASSWORDS["router"]
    assert sr.write_entry(primary, password, 1, 1000) == (sr.WRITTEN, 1, "local-shard-0")
    assert sr.write_entry(primary, password, 1, 1001) == (sr.CURRENT, 1, "local-shard-0")
    # The replica, promoted (timeline 2), takes over; the old primary's late write is refused.
    assert sr.write_entry(replica, password, 2, 1002) == (sr.WRITTEN, 2, "shard-replica-0")
    assert sr.write_entry(primary, password, 1, 1003) == (sr.OLDER, 2, "shard-replica-0")
    assert sr.write_entry(primary, password, 2, 1004) == (sr.CONFLICT, 2, "shard-replica-0")
    # What the application reads (its users may read the entry, never write it).
    entry = redis.run("HGETALL", "endpoint:shard0", user="app").splitlines()
    assert dict(zip(entry[::2], entry[1::2], strict=True)) == {
        "host": "10.1.2.10", "port": "6432", "member": "shard-replica-0", "timeline": "2", "written_at": "1002"}
    assert redis.run("HGET", "endpoint:shard0", "host", user="orchestrator") == "10.1.2.10"
    for user in ("app", "orchestrator"):
        assert "NOPERM" in redis.run("HSET", "endpoint:shard0", "host", "10.9.9.9", user=user)
    # Home again by a switchover (timeline 3).
    assert sr.write_entry(primary, password, 3, 1005) == (sr.WRITTEN, 3, "local-shard-0")
    # The router can do nothing else: no other key, not even through the script, no other command.
    other = "return redis.call('HSET', KEYS[1], 'host', ARGV[1])"
    for denied in (["GET", "route:u1"], ["DEL", "endpoint:shard0"], ["SET", "endpoint:shard0", "x"],
                   ["HGETALL", "endpoint:shard0"], ["EVAL", other, "1", "route:u1", "x"], ["FLUSHALL"],
                   ["KEYS", "*"], ["CONFIG", "GET", "maxmemory"]):
        assert "NOPERM" in redis.run(*denied, user="router"), denied
    assert redis.run("HGET", "endpoint:shard0", "member", user="app") == "local-shard-0"
    # A wrong password is refused before the script runs.
    with pytest.raises(sr.RedisError, match="WRONGPASS"):
        sr.write_entry(primary, "not-the-password", 4, 1006)
