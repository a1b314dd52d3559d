#!/usr/bin/python3
"""unde-shard-routing: local-redis's routing entry of a shard follows its writable primary.

Shipped by unde-infra to every shard node (the local primary and its Helsinki replica) as
/usr/local/lib/unde/shard-routing, with its parameters beside it (`shard-routing.json`, rendered
by unde_infra/render/shard_routing.py). Python 3.11 standard library only.

Every poll it asks its own Patroni REST API (`GET /primary`, 200 only on the member that holds
the leader lock and runs as a writable primary) and, on that member only, writes the shard's
endpoint into local-redis as the hash `endpoint:<scope>` (host, port, member, timeline): at
once when it became the primary, then every confirm interval, which puts back an entry Redis
lost. A member that is not the primary never writes, whatever it wrote before.

Split brain and stale writes: the write is one Lua script (ROUTING_SCRIPT) that compares
Patroni's timeline with the one the entry holds. PostgreSQL starts a new timeline at every
promotion, so the newest primary always has the highest one: an older timeline never
overwrites a newer one (a demoted primary that has not noticed yet, a delayed retry), and the
same timeline from another member is refused too. Redis runs the script atomically and checks
every command it calls against the `router` user's ACL (HMGET and HSET on endpoint:* only).

Failures: a write that fails (Redis down, the tunnel down) is retried after a pause that doubles
up to a bound; the textfile metrics say whether the entry names this member (an alert fires
when the primary cannot write it). The Redis password comes from systemd's credential directory
and never reaches a log line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:  # the package in the tests; on a server script_support.py lies beside this file (sys.path[0])
    from .script_support import ConfigError, Redactor, Settings, load_json, read_secret
except ImportError:
    from script_support import (  # type: ignore[import-not-found,no-redef]
        ConfigError,
        Redactor,
        Settings,
        load_json,
        read_secret,
    )

PASSWORD_CREDENTIAL = "redis-password"
EXIT_BAD_CONFIG = 2
USER_AGENT = "unde-shard-routing/1"

# KEYS[1]: the entry. ARGV: timeline, member, host, port, written_at. Replies {code, timeline,
# member} with what the entry holds afterwards: 1 written, 2 already current, 0 refused (a newer
# timeline holds it), -1 refused (the same timeline from another member).
ROUTING_SCRIPT = """
local held = redis.call('HMGET', KEYS[1], 'timeline', 'member', 'host', 'port')
local timeline = tonumber(ARGV[1])
local held_timeline = tonumber(held[1])
if held_timeline then
  local held_member = held[2] or ''
  if held_timeline > timeline then return {0, held[1], held_member} end
  if held_timeline == timeline then
    if held_member ~= ARGV[2] then return {-1, held[1], held_member} end
    if held[3] == ARGV[3] and held[4] == ARGV[4] then return {2, held[1], held_member} end
  end
end
redis.call('HSET', KEYS[1], 'host', ARGV[3], 'port', ARGV[4], 'member', ARGV[2], 'timeline', ARGV[1],
           'written_at', ARGV[5])
return {1, ARGV[1], ARGV[2]}
"""
WRITTEN, CURRENT, OLDER, CONFLICT = 1, 2, 0, -1


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Config:
    scope: str  # the shard's Patroni scope (shardN)
    member: str  # this node's Patroni name
    key: str  # the routing entry, endpoint:<scope>
    endpoint_host: str  # where clients reach this member (PgBouncer)
    endpoint_port: int
    patroni_url: str  # this member's REST API, /primary
    patroni_timeout_seconds: float
    redis_host: str
    redis_port: int
    redis_user: str
    redis_timeout_seconds: float
    password_file: str | None
    poll_seconds: float
    confirm_seconds: float
    retry_first_seconds: float
    retry_max_seconds: float
    textfile: str | None


def parse_config(data: Any, source: str = "config") -> Config:
    """Every problem at once, one per line as `path: message`."""
    settings = Settings(data, source)
    get, problems = settings.get, settings.problems

    number = (int, float)
    text = {key: get(key, str) for key in ("scope", "member", "key", "endpoint.host", "patroni.url", "redis.host",
                                             "redis.user")}
    ports = {key: get(key, int) for key in ("endpoint.port", "redis.port")}
    for key, port in ports.items():
        if port is not None and not 0 < port < 65536:
            problems.append(f"{source}: {key}: {port} is no TCP port")
    seconds = {key: get(key, number) for key in ("patroni.timeout_seconds", "redis.timeout_seconds", "poll_seconds",
                                                 "confirm_seconds", "retry.first_seconds", "retry.max_seconds")}
    for key, value in seconds.items():
        if value is not None and value <= 0:
            problems.append(f"{source}: {key}: must be positive")
    if None not in (seconds["retry.first_seconds"], seconds["retry.max_seconds"]) and (
            seconds["retry.first_seconds"] > seconds["retry.max_seconds"]):
        problems.append(f"{source}: retry.first_seconds: must not exceed retry.max_seconds")
    if text["key"] is not None and text["scope"] is not None and not text["key"].endswith(text["scope"]):
        problems.append(f"{source}: key: {text['key']!r} is not the entry of {text['scope']!r}")
    optional = {key: get(key, str, required=False) for key in ("redis.password_file", "textfile")}
    if problems:
        raise ConfigError(problems)
    return Config(
        scope=text["scope"], member=text["member"], key=text["key"], endpoint_host=text["endpoint.host"],
        endpoint_port=ports["endpoint.port"], patroni_url=text["patroni.url"],
        patroni_timeout_seconds=seconds["patroni.timeout_seconds"], redis_host=text["redis.host"],
        redis_port=ports["redis.port"], redis_user=text["redis.user"],
        redis_timeout_seconds=seconds["redis.timeout_seconds"], password_file=optional["redis.password_file"],
        poll_seconds=seconds["poll_seconds"], confirm_seconds=seconds["confirm_seconds"],
        retry_first_seconds=seconds["retry.first_seconds"], retry_max_seconds=seconds["retry.max_seconds"],
        textfile=optional["textfile"],
    )


def load_config(path: str) -> Config:
    return parse_config(load_json(path), path)


def read_password(config: Config) -> str:
    """systemd's LoadCredential= copy when the unit runs us, else the configured root-only file."""
    return read_secret(PASSWORD_CREDENTIAL, config.password_file, "redis.password_file", "Redis password",
                       one_word=True)


# ---------------------------------------------------------------------------------------------
# Patroni: is this member the shard's writable primary, on which timeline?


def leader_timeline(config: Config) -> int | None:
    """The timeline when Patroni's REST API says this member is the running, writable primary
    (GET /primary answers 200 only there); None otherwise, or when it cannot tell."""
    request = urllib.request.Request(config.patroni_url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=config.patroni_timeout_seconds) as response:
            if response.status != 200:
                return None
            status = json.loads(response.read(65536))
    except (OSError, ValueError):  # 503 (HTTPError is an OSError), refused, timed out, not JSON
        return None
    if not isinstance(status, dict) or status.get("role") not in ("primary", "master"):
        return None
    if status.get("state") != "running":
        return None
    timeline = status.get("timeline")
    return timeline if isinstance(timeline, int) and not isinstance(timeline, bool) and timeline > 0 else None


# ---------------------------------------------------------------------------------------------
# Redis: just enough RESP2 for AUTH and EVAL


class RedisError(Exception):
    pass


def _encode(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(stream: Any) -> Any:
    line = stream.readline(65536)
    if not line.endswith(b"\r\n"):
        raise RedisError("connection closed by Redis")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        data = stream.read(length + 2)
        if len(data) != length + 2:
            raise RedisError("connection closed by Redis")
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise RedisError(f"unexpected reply from Redis: {line[:40]!r}")


def write_entry(config: Config, password: str, timeline: int, now: float) -> tuple[int, int, str]:
    """One connection: AUTH as the router user, then the compare-and-set script.
    Returns (code, the entry's timeline, the entry's member) as the script left them."""
    with socket.create_connection((config.redis_host, config.redis_port), config.redis_timeout_seconds) as sock:
        sock.settimeout(config.redis_timeout_seconds)
        stream = sock.makefile("rb")
        sock.sendall(_encode("AUTH", config.redis_user, password))
        _read_reply(stream)
        sock.sendall(_encode("EVAL", ROUTING_SCRIPT, "1", config.key, str(timeline), config.member,
                             config.endpoint_host, str(config.endpoint_port), str(int(now))))
        reply = _read_reply(stream)
    if not (isinstance(reply, list) and len(reply) == 3 and isinstance(reply[0], int)):
        raise RedisError(f"unexpected reply to the routing script: {reply!r}")
    return reply[0], int(reply[1]), str(reply[2])


# ---------------------------------------------------------------------------------------------
# The watcher


class Watcher:
    def __init__(self, config: Config, password: str, log: Redactor,
                 leader: Callable[[Config], int | None] = leader_timeline,
                 writer: Callable[[Config, str, int, float], tuple[int, int, str]] = write_entry,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config, self.password, self.log = config, password, log
        self.leader, self.writer, self.wall_clock = leader, writer, wall_clock
        log.add(password)
        self.timeline: int | None = None  # this member's timeline while it is the primary
        self.entry_ok = False  # the entry names this member (as of the last write or confirm)
        self.confirmed_at: float | None = None
        self.last_success: float | None = None  # wall clock, for the metric
        self.failures = 0
        self.next_attempt = 0.0
        self.refusal: str | None = None

    def tick(self, now: float) -> None:
        timeline = self.leader(self.config)
        if timeline is None:
            if self.timeline is not None:
                self.log(f"{self.config.member} is no longer the writable primary of {self.config.scope}: "
                         "it writes no routing entry")
            self.timeline, self.entry_ok, self.confirmed_at, self.failures, self.next_attempt = None, False, None, 0, 0.0
            self.refusal = None
            return
        if timeline != self.timeline:
            self.log(f"{self.config.member} is the writable primary of {self.config.scope} on timeline {timeline}")
            self.timeline, self.confirmed_at, self.entry_ok = timeline, None, False
        due = self.confirmed_at is None or now - self.confirmed_at >= self.config.confirm_seconds
        if not due or now < self.next_attempt:
            return
        try:
            code, held_timeline, held_member = self.writer(self.config, self.password, timeline, self.wall_clock())
        except (OSError, RedisError) as exc:
            self.failures += 1
            pause = min(self.config.retry_first_seconds * 2 ** (self.failures - 1), self.config.retry_max_seconds)
            self.next_attempt = now + pause
            self.entry_ok = False
            self.log(self.log.clean(f"cannot write {self.config.key} to {self.config.redis_host}:"
                                    f"{self.config.redis_port}: {type(exc).__name__}: {exc}; retrying in {pause:g} s"))
            return
        self.failures, self.next_attempt = 0, 0.0
        if code in (WRITTEN, CURRENT):
            if code == WRITTEN or not self.entry_ok:
                self.log(f"{self.config.key} -> {self.config.endpoint_host}:{self.config.endpoint_port} "
                         f"({self.config.member}, timeline {timeline})" + ("" if code == WRITTEN else ", already"))
            self.entry_ok, self.confirmed_at, self.last_success, self.refusal = True, now, self.wall_clock(), None
            return
        # Refused: another member holds the entry with a newer (or the same) timeline. Patroni
        # says we lead, so one of the two is wrong; never overwrite, look again after a while.
        reason = "a newer timeline" if code == OLDER else "the same timeline"
        refusal = f"{self.config.key} holds {held_member} on {reason} ({held_timeline} vs {timeline}): not overwritten"
        if refusal != self.refusal:
            self.log(refusal)
        self.refusal, self.entry_ok, self.confirmed_at = refusal, False, now

    def metrics(self) -> str:
        leading = self.timeline is not None
        lines = [
            "# HELP unde_shard_routing_leader 1 when Patroni says this member is its shard's writable primary.",
            "# TYPE unde_shard_routing_leader gauge",
            f"unde_shard_routing_leader {int(leading)}",
            "# HELP unde_shard_routing_entry_ok 1 when local-redis's routing entry names this member (primary only).",
            "# TYPE unde_shard_routing_entry_ok gauge",
            f"unde_shard_routing_entry_ok {int(leading and self.entry_ok)}",
            "# HELP unde_shard_routing_timeline The timeline this member leads on (0: not the primary).",
            "# TYPE unde_shard_routing_timeline gauge",
            f"unde_shard_routing_timeline {self.timeline or 0}",
        ]
        if self.last_success is not None:
            lines += [
                "# HELP unde_shard_routing_last_success_timestamp_seconds When the entry was last written or confirmed.",
                "# TYPE unde_shard_routing_last_success_timestamp_seconds gauge",
                f"unde_shard_routing_last_success_timestamp_seconds {self.last_success:.0f}",
            ]
        return "\n".join(lines) + "\n"

    def write_metrics(self) -> None:
        if not self.config.textfile:
            return
        temporary = f"{self.config.textfile}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(self.metrics())
            os.replace(temporary, self.config.textfile)
        except OSError as exc:
            self.log(f"cannot write {self.config.textfile}: {exc}")


def run(config: Config, log: Redactor, ticks: int | None = None) -> None:
    watcher = Watcher(config, read_password(config), log)
    log(f"{config.member} ({config.scope}): polling {config.patroni_url} every {config.poll_seconds:g} s; "
        f"the primary writes {config.key} to {config.redis_host}:{config.redis_port}")
    count = 0
    while ticks is None or count < ticks:
        started = time.monotonic()
        watcher.tick(started)
        watcher.write_metrics()
        count += 1
        time.sleep(max(0.0, started + config.poll_seconds - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shard-routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.abspath(__file__) + ".json")
    parser.add_argument("--check", action="store_true", help="check the configuration (and the password) and exit")
    parser.add_argument("--ticks", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop after N polls
    args = parser.parse_args(argv)
    log = Redactor()
    try:
        config = load_config(args.config)
        if args.check:
            read_password(config)
            print(f"{args.config}: ok ({config.member}, {config.key})")
            return 0
        run(config, log, args.ticks)
    except ConfigError as error:
        for problem in error.problems:
            log(problem)
        return EXIT_BAD_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
