#!/usr/bin/python3
"""unde-entry-failover: keeps the public entry record on a site that answers.

Shipped by unde-infra to /usr/local/lib/unde/entry-failover; its parameters are rendered into
/etc/unde/entry-failover.json (unde_infra/render/entry_failover.py). Python 3.11 standard
library only: it runs on Debian 12 servers as they come.

Two roles, two vantage points in two Hetzner locations:

* observer (the etcd witness, fsn1): probes the local entry's https://<entry>/healthz every
  interval and serves its verdict (consecutive failures and successes) on the private network.
* decider (the standby entry point, hel1): probes the local entry and the standby entry itself,
  reads the observer's verdict, and moves the entry record through Hetzner's Cloud API: to the
  standby when the local entry failed N probes in a row here AND at the observer AND the standby
  is healthy; back to the local entry once it has answered for the hold time without one failed
  probe (and at least M probes).

Why two vantage points: a path failure between one of them and the local site is not a failure
of the local site; only an outage both see moves users. Why it is safe to wait for the observer:
when the observer's site is down as well as the local one, two of the three etcd votes are gone
and no replica can be promoted, so there is nothing in Helsinki to move users to.

The API token is read from systemd's credential directory and never written anywhere: every
line this program logs passes through `Redactor`. The Cloud API client is hcloud_dns.py,
delivered beside this script and shared with the certbot DNS-01 hook.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The Cloud API client and the logging that cannot leak its token, shared with the DNS-01 hook.
try:  # a module of unde_infra.files: the tests and the linters
    from . import hcloud_dns
    from .hcloud_dns import ApiError
    from .script_support import ConfigError, Redactor, Settings, load_json, read_secret
except ImportError:  # the script on a server: hcloud_dns.py and script_support.py lie beside it (sys.path[0])
    import hcloud_dns  # type: ignore[import-not-found,no-redef]
    from hcloud_dns import ApiError  # type: ignore[import-not-found,no-redef]
    from script_support import (  # type: ignore[import-not-found,no-redef]
        ConfigError,
        Redactor,
        Settings,
        load_json,
        read_secret,
    )
LOCAL, STANDBY, OTHER, UNKNOWN = "local", "standby", "other", "unknown"
DECIDER, OBSERVER = "decider", "observer"
TOKEN_CREDENTIAL = "dns-api-token"
USER_AGENT = "unde-entry-failover/1"
EXIT_BAD_CONFIG = 2


# ---------------------------------------------------------------------------------------------
# The decision: a pure function of the streaks and one tick's observations.


@dataclass(frozen=True)
class Thresholds:
    failures_to_fail_over: int
    successes_to_fail_back: int
    # Back only after the local entry answered this long without one failed probe: a site that
    # flaps never pulls users back and forth.
    hold_seconds: float
    peer_max_age_seconds: float
    # False when the topology has no second vantage point: the decider then decides alone.
    require_peer: bool = True


@dataclass(frozen=True)
class PeerView:
    """The other vantage point's verdict on the local entry."""

    fail_streak: int
    ok_streak: int
    age_seconds: float  # since its last probe finished


@dataclass(frozen=True)
class Observation:
    local_ok: bool
    standby_ok: bool
    peer: PeerView | None  # None: the peer did not answer
    record: str  # LOCAL, STANDBY, OTHER (neither address) or UNKNOWN (not read yet)
    now: float  # monotonic seconds


@dataclass(frozen=True)
class State:
    fail_streak: int = 0  # consecutive failed probes of the local entry from here
    ok_streak: int = 0
    healthy_since: float | None = None  # when the current run of healthy probes began


@dataclass(frozen=True)
class Decision:
    target: str | None  # LOCAL or STANDBY: set the record to it; None: leave it
    reason: str


def observe(state: State, local_ok: bool, now: float) -> State:
    """The streaks after one more probe of the local entry, finished at `now`."""
    if local_ok:
        since = state.healthy_since if state.ok_streak and state.healthy_since is not None else now
        return State(fail_streak=0, ok_streak=state.ok_streak + 1, healthy_since=since)
    return State(fail_streak=state.fail_streak + 1, ok_streak=0, healthy_since=None)


def decide(state: State, obs: Observation, t: Thresholds) -> Decision:
    """Where the record should point, given the streaks (already updated with this tick's probe)."""
    n, m = t.failures_to_fail_over, t.successes_to_fail_back
    if obs.record == UNKNOWN:
        return Decision(None, "the record has not been read yet")
    peer = obs.peer if obs.peer is not None and obs.peer.age_seconds <= t.peer_max_age_seconds else None
    if obs.record in (LOCAL, OTHER):
        if state.fail_streak >= n:
            seen = f"the local entry failed {state.fail_streak} probes in a row here"
            if t.require_peer:
                if peer is None:
                    return Decision(None, f"{seen}, but the peer's view is unknown: not failing over on one vantage point")
                if peer.fail_streak < n:
                    return Decision(None, f"{seen}, but only {peer.fail_streak} at the peer: not failing over")
                seen += f" and {peer.fail_streak} at the peer"
            if not obs.standby_ok:
                return Decision(None, f"{seen}, but the standby is not healthy")
            return Decision(STANDBY, f"{seen}; the standby is healthy")
        if obs.record == OTHER and state.ok_streak >= m:
            return Decision(LOCAL, f"the record points at neither site; the local entry passed {state.ok_streak} probes")
        return Decision(None, "the record points at the local entry" if obs.record == LOCAL else
                        f"the record points at neither site; waiting for {m} healthy probes of the local entry")
    # The record points at the standby.
    if not obs.standby_ok and state.ok_streak >= n:
        return Decision(LOCAL, f"the standby is not healthy and the local entry passed {state.ok_streak} probes")
    if state.ok_streak < m:
        return Decision(None, f"failed over; the local entry passed {state.ok_streak} of {m} probes")
    healthy_for = obs.now - state.healthy_since if state.healthy_since is not None else 0.0
    if healthy_for < t.hold_seconds:
        return Decision(None, f"failed over; the local entry is healthy for {healthy_for:.0f} s, "
                              f"holding until {t.hold_seconds:g} s without a failed probe")
    if peer is not None and peer.fail_streak > 0:
        return Decision(None, f"the local entry is healthy here, but the peer saw {peer.fail_streak} failed probes")
    return Decision(LOCAL, f"the local entry passed {state.ok_streak} probes in a row: failing back")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Target:
    record: str  # the address the entry record holds when it points here
    probe_host: str  # where the health probe connects (the standby probes itself on loopback)
    probe_port: int


@dataclass(frozen=True)
class Config:
    role: str
    vantage: str
    tls_name: str  # the entry's name: TLS SNI and certificate check, Host header
    health_path: str
    local: Target
    standby: Target | None
    zone: str
    record_name: str
    record_type: str
    interval_seconds: float
    probe_timeout_seconds: float
    thresholds: Thresholds
    peer_status_url: str | None
    peer_timeout_seconds: float
    listen: tuple[str, int] | None
    api_endpoint: str
    api_timeout_seconds: float
    api_attempts: int
    action_timeout_seconds: float
    resync_ticks: int
    token_file: str | None
    ca_file: str | None
    textfile: str | None


def parse_config(data: Any, source: str = "config") -> Config:
    """Every problem at once, one per line as `path: message`."""
    settings = Settings(data, source)
    get, problems = settings.get, settings.problems

    role = get("role", str)
    if role not in (DECIDER, OBSERVER, None):
        problems.append(f"{source}: role: {role!r} is neither {DECIDER} nor {OBSERVER}")
    number = (int, float)

    def target(path: str) -> Target | None:
        record, host, port = get(f"{path}.record", str), get(f"{path}.probe_host", str), get(f"{path}.probe_port", int)
        if port is not None and not 0 < port < 65536:
            problems.append(f"{source}: {path}.probe_port: {port} is no TCP port")
        return Target(record, host, port) if None not in (record, host, port) else None

    local = target("local")
    standby = target("standby") if role == DECIDER else None
    listen = get("listen", str, required=role == OBSERVER)
    peer = get("peer_status_url", str, required=False)
    if role == DECIDER and (not isinstance(data, dict) or "peer_status_url" not in data):
        problems.append(f"{source}: peer_status_url: required (null: no second vantage point, decide alone)")
    listen_at = None
    if listen is not None:
        host, _, port_text = listen.rpartition(":")
        if not host or not port_text.isdigit():
            problems.append(f"{source}: listen: {listen!r} is not host:port")
        else:
            listen_at = (host, int(port_text))
    values = {key: get(key, number) for key in (
        "interval_seconds", "probe_timeout_seconds", "failures_to_fail_over", "successes_to_fail_back",
        "hold_seconds", "peer_max_age_seconds", "peer_timeout_seconds", "api.timeout_seconds",
        "api.action_timeout_seconds")}
    for key in ("failures_to_fail_over", "successes_to_fail_back"):
        if isinstance(values[key], float) or (values[key] is not None and values[key] < 1):
            problems.append(f"{source}: {key}: a whole number of at least 1")
    for key in ("interval_seconds", "probe_timeout_seconds"):
        if values[key] is not None and values[key] <= 0:
            problems.append(f"{source}: {key}: must be positive")
    if None not in (values["interval_seconds"], values["probe_timeout_seconds"]) and (
        values["probe_timeout_seconds"] >= values["interval_seconds"]
    ):
        problems.append(f"{source}: probe_timeout_seconds: must be shorter than interval_seconds")
    attempts = get("api.attempts", int)
    if attempts is not None and attempts < 1:
        problems.append(f"{source}: api.attempts: at least 1")
    resync = get("resync_ticks", int)
    record_type = get("record.type", str)
    if record_type not in ("A", "AAAA", None):
        problems.append(f"{source}: record.type: {record_type!r} (the entry record is A or AAAA)")
    strings = {key: get(key, str) for key in ("vantage", "tls_name", "health_path", "zone", "record.name", "api.endpoint")}
    optional = {key: get(key, str, required=False) for key in ("api.token_file", "ca_file", "textfile")}
    if problems or local is None:
        raise ConfigError(problems)
    return Config(
        role=role, vantage=strings["vantage"], tls_name=strings["tls_name"], health_path=strings["health_path"],
        local=local, standby=standby, zone=strings["zone"], record_name=strings["record.name"],
        record_type=record_type, interval_seconds=values["interval_seconds"],
        probe_timeout_seconds=values["probe_timeout_seconds"],
        thresholds=Thresholds(values["failures_to_fail_over"], values["successes_to_fail_back"],
                              values["hold_seconds"], values["peer_max_age_seconds"], require_peer=peer is not None),
        peer_status_url=peer, peer_timeout_seconds=values["peer_timeout_seconds"], listen=listen_at,
        api_endpoint=strings["api.endpoint"].rstrip("/"), api_timeout_seconds=values["api.timeout_seconds"],
        api_attempts=attempts, action_timeout_seconds=values["api.action_timeout_seconds"], resync_ticks=resync,
        token_file=optional["api.token_file"], ca_file=optional["ca_file"], textfile=optional["textfile"],
    )


def load_config(path: str) -> Config:
    return parse_config(load_json(path), path)


def read_token(config: Config) -> str:
    """systemd's LoadCredential= copy when the unit runs us, else the configured root-only file."""
    return read_secret(TOKEN_CREDENTIAL, config.token_file, "api.token_file", "API token")


# ---------------------------------------------------------------------------------------------
# Probes


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with TLS for a name: the certificate is checked for the entry's name
    while the connection goes to one site's address, whatever the DNS says right now."""

    def __init__(self, host: str, port: int, tls_name: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.tls_name = tls_name
        self.tls_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.tls_name)


def probe(target: Target, config: Config) -> tuple[bool, str]:
    """GET the health path; healthy means HTTP 200 within the timeout over verified TLS."""
    started = time.monotonic()
    context = ssl.create_default_context(cafile=config.ca_file)
    conn = _NamedHTTPSConnection(target.probe_host, target.probe_port, config.tls_name, context,
                                 config.probe_timeout_seconds)
    try:
        conn.request("GET", config.health_path, headers={"Host": config.tls_name, "User-Agent": USER_AGENT})
        response = conn.getresponse()
        response.read(4096)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    if elapsed > config.probe_timeout_seconds:
        return False, f"HTTP {status} after {elapsed:.1f} s (timeout {config.probe_timeout_seconds:g} s)"
    return status == 200, f"HTTP {status}"


def read_peer(config: Config) -> PeerView | None:
    assert config.peer_status_url is not None
    try:
        with urllib.request.urlopen(config.peer_status_url, timeout=config.peer_timeout_seconds) as response:
            data = json.loads(response.read(65536))
        return PeerView(int(data["fail_streak"]), int(data["ok_streak"]), float(data["age_seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Hetzner Cloud API (DNS zones): read and set the records of the entry's RRSet


class DnsApi(hcloud_dns.ZoneApi):
    """The entry record's RRSet, through the shared client (hcloud_dns.py)."""

    def __init__(self, config: Config, token: str, log: Redactor,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        settings = hcloud_dns.ApiSettings(config.api_endpoint, config.api_timeout_seconds, config.api_attempts,
                                          config.action_timeout_seconds)
        super().__init__(settings, config.zone, token, log, USER_AGENT, sleep)
        self.record_name, self.record_type = config.record_name, config.record_type

    def entry_records(self) -> list[str]:
        return self.read_records(self.record_name, self.record_type)

    def move_entry(self, value: str, comment: str) -> None:
        self.set_records(self.record_name, self.record_type, value, comment)


# ---------------------------------------------------------------------------------------------
# The watcher


class Watcher:
    def __init__(self, config: Config, log: Redactor, api: DnsApi | None = None,
                 prober: Callable[[Target, Config], tuple[bool, str]] = probe,
                 peer_reader: Callable[[Config], PeerView | None] = read_peer) -> None:
        self.config, self.log, self.api = config, log, api
        self.prober, self.peer_reader = prober, peer_reader
        self.state = State()
        self.record = UNKNOWN
        self.ticks = 0
        self.last_probe_at: float | None = None
        self.last_decision = Decision(None, "not started")
        self.lock = threading.Lock()

    def classify(self, values: list[str]) -> str:
        assert self.config.standby is not None
        if values == [self.config.local.record]:
            return LOCAL
        if values == [self.config.standby.record]:
            return STANDBY
        return OTHER

    def tick(self, now: float) -> Decision:
        local_ok, detail = self.prober(self.config.local, self.config)
        with self.lock:
            previous = self.state
            self.state = observe(self.state, local_ok, now)
            self.last_probe_at = time.monotonic()
        first = previous.ok_streak == 0 and previous.fail_streak == 0
        if first or local_ok != (previous.ok_streak > 0):
            self.log(f"local entry {'healthy' if local_ok else 'FAILING'} from {self.config.vantage}: {detail}")
        self.ticks += 1
        if self.config.role == OBSERVER:
            self.last_decision = Decision(None, f"observer: {detail}")
            return self.last_decision
        assert self.api is not None and self.config.standby is not None
        standby_ok, standby_detail = self.prober(self.config.standby, self.config)
        peer = self.peer_reader(self.config) if self.config.peer_status_url is not None else None
        if self.record == UNKNOWN or self.ticks % max(self.config.resync_ticks, 1) == 0:
            try:
                self.record = self.classify(self.api.entry_records())
            except ApiError as error:
                self.log(str(error))
        decision = decide(self.state, Observation(local_ok, standby_ok, peer, self.record, now), self.config.thresholds)
        if decision.target is not None:
            target = self.config.local if decision.target == LOCAL else self.config.standby
            self.log(f"moving {self.config.record_name}.{self.config.zone} to the {decision.target} entry "
                     f"({target.record}): {decision.reason}; standby: {standby_detail}")
            try:
                self.api.move_entry(target.record, f"unde-entry-failover on {self.config.vantage}: {decision.target}")
                self.record = decision.target
            except ApiError as error:
                self.log(f"{error}; the record stays as it was, trying again next probe")
                self.record = UNKNOWN
        elif decision.reason != self.last_decision.reason:
            self.log(decision.reason)
        self.last_decision = decision
        return decision

    def status(self) -> dict[str, Any]:
        with self.lock:
            age = time.monotonic() - self.last_probe_at if self.last_probe_at is not None else 1e9
            return {"vantage": self.config.vantage, "fail_streak": self.state.fail_streak,
                    "ok_streak": self.state.ok_streak, "age_seconds": round(age, 3), "record": self.record}

    def metrics(self) -> str:
        status = self.status()
        lines = [
            "# HELP unde_entry_failover_local_fail_streak Consecutive failed probes of the local entry.",
            "# TYPE unde_entry_failover_local_fail_streak gauge",
            f'unde_entry_failover_local_fail_streak{{vantage="{self.config.vantage}"}} {status["fail_streak"]}',
            "# HELP unde_entry_failover_last_probe_timestamp_seconds When the last probe finished.",
            "# TYPE unde_entry_failover_last_probe_timestamp_seconds gauge",
            f'unde_entry_failover_last_probe_timestamp_seconds{{vantage="{self.config.vantage}"}} {time.time():.0f}',
        ]
        if self.config.role == DECIDER:
            lines += ["# HELP unde_entry_failover_record Where the entry record points (1 for the site it names).",
                      "# TYPE unde_entry_failover_record gauge"]
            lines += [f'unde_entry_failover_record{{target="{t}"}} {int(self.record == t)}'
                      for t in (LOCAL, STANDBY, OTHER, UNKNOWN)]
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


def status_server(watcher: Watcher, address: tuple[str, int]) -> http.server.ThreadingHTTPServer:
    """The observer's verdict for the decider: GET /status, JSON."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/status":
                self.send_error(404)
                return
            body = json.dumps(watcher.status()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one request per interval from the decider: not worth a journal line

    server = http.server.ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="status", daemon=True).start()
    return server


def run(config: Config, log: Redactor, ticks: int | None = None) -> None:
    api = DnsApi(config, read_token(config), log) if config.role == DECIDER else None
    watcher = Watcher(config, log, api)
    if config.listen is not None:
        status_server(watcher, config.listen)
    log(f"{config.role} on {config.vantage}: probing https://{config.local.probe_host}:{config.local.probe_port}"
        f"{config.health_path} as {config.tls_name} every {config.interval_seconds:g} s")
    count = 0
    while ticks is None or count < ticks:
        started = time.monotonic()
        watcher.tick(started)
        watcher.write_metrics()
        count += 1
        # One tick per interval from the start of the last: slow probes shorten the pause and
        # never make ticks pile up afterwards.
        time.sleep(max(0.0, started + config.interval_seconds - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="entry-failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="/etc/unde/entry-failover.json")
    parser.add_argument("--check", action="store_true", help="check the configuration (and the token) and exit")
    args = parser.parse_args(argv)
    log = Redactor()
    try:
        config = load_config(args.config)
        if args.check:
            if config.role == DECIDER:
                read_token(config)
            print(f"{args.config}: ok ({config.role} on {config.vantage})")
            return 0
        run(config, log)
    except ConfigError as error:
        for problem in error.problems:
            log(problem)
        return EXIT_BAD_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
