"""The entry failover watcher (unde_infra/files/entry_failover.py), the file shipped to servers.

* Its decision: a pure function from the probe streaks and one tick's observations to an action,
  driven here through sequences of probe results (hysteresis, flapping, both directions, the
  peer's agreement, the standby's own health).
* Its Hetzner Cloud API calls, against a fake API on loopback: method, path, headers, JSON
  body; retries on temporary errors, none on mistakes; the token never in any output.
* The whole loop end to end on loopback: real HTTPS probes (a certificate for the entry's name,
  checked), the observer's status server read by the decider, the record moved and moved back.
"""

from __future__ import annotations

import datetime
import io
import json
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from unde_infra import timings
from unde_infra.files import entry_failover as ef

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "unde_infra" / "files" / "entry_failover.py"
TOKEN = "hcloud-test-token-Zk3q9v"  # a stand-in; the assertions look for it in every output
FQDN = "api.unde.example"
LOCAL_IP, STANDBY_IP = "198.51.100.10", "203.0.113.20"
T = ef.Thresholds(failures_to_fail_over=3, successes_to_fail_back=6, hold_seconds=300, peer_max_age_seconds=30)


# ---------------------------------------------------------------------------------------------
# The decision


def run_sequence(local: str, *, peer_fails: str | None = None, standby: str | None = None,
                 thresholds: ef.Thresholds = T, record: str = ef.LOCAL, interval: float = 10,
                 peer_age: float = 1) -> tuple[list[tuple[int, str]], str]:
    """Feed probe results ('x' failed, '.' healthy) tick by tick; the record follows every
    decision, as the watcher makes it. `peer_fails`: the peer's result per tick (default: the
    same as here). `standby`: the standby's own health per tick (default: healthy). Returns the
    (tick, target) of every move and where the record ends."""
    state, moves = ef.State(), []
    peer = ef.State()
    for tick, result in enumerate(local):
        now = tick * interval
        state = ef.observe(state, result == ".", now)
        peer = ef.observe(peer, (peer_fails or local)[tick] == ".", now)
        view = ef.PeerView(peer.fail_streak, peer.ok_streak, peer_age) if peer_age >= 0 else None
        standby_ok = standby is None or standby[tick] == "."
        decision = ef.decide(state, ef.Observation(result == ".", standby_ok, view, record, now), thresholds)
        if decision.target is not None:
            moves.append((tick, decision.target))
            record = decision.target
    return moves, record


def test_fails_over_after_n_failures_seen_by_both_vantage_points() -> None:
    assert run_sequence("....xx") == ([], ef.LOCAL)  # two failures are not three
    moves, record = run_sequence("....xxx")
    assert moves == [(6, ef.STANDBY)] and record == ef.STANDBY


def test_one_vantage_point_is_not_enough() -> None:
    # The local entry fails from here but not from the peer: a path problem, not a dead site.
    assert run_sequence("xxxxxxxxxx", peer_fails="..........") == ([], ef.LOCAL)
    # The peer's streak lags (its probes are not in step): the move waits for its third.
    assert run_sequence("xxxxxx", peer_fails="..xxxx") == ([(4, ef.STANDBY)], ef.STANDBY)
    # The peer does not answer, or its verdict is stale: no failover on one vantage point.
    assert run_sequence("xxxxxx", peer_age=-1) == ([], ef.LOCAL)
    assert run_sequence("xxxxxx", peer_age=T.peer_max_age_seconds + 1) == ([], ef.LOCAL)
    # Without a second vantage point in the topology the decider decides alone.
    alone = replace(T, require_peer=False)
    assert run_sequence("xxxxxx", peer_age=-1, thresholds=alone) == ([(2, ef.STANDBY)], ef.STANDBY)


def test_no_failover_to_a_standby_that_is_not_healthy() -> None:
    assert run_sequence("xxxxx", standby="xxxx.") == ([(4, ef.STANDBY)], ef.STANDBY)
    assert run_sequence("xxxxx", standby="xxxxx") == ([], ef.LOCAL)


def test_flapping_moves_nothing() -> None:
    assert run_sequence("x." * 100) == ([], ef.LOCAL)
    assert run_sequence("xx." * 100) == ([], ef.LOCAL)


def test_fails_back_after_the_hold_without_a_failed_probe() -> None:
    hold_ticks = int(T.hold_seconds // 10)  # 30 probes 10 s apart
    # The first healthy probe starts the clock: back once it has run for the whole hold.
    moves, record = run_sequence("xxx" + "." * hold_ticks)
    assert moves == [(2, ef.STANDBY)] and record == ef.STANDBY
    moves, _ = run_sequence("xxx" + "." * (hold_ticks + 1))
    assert moves == [(2, ef.STANDBY), (3 + hold_ticks, ef.LOCAL)]
    # One failed probe restarts the clock.
    half = "." * (hold_ticks // 2)
    moves, record = run_sequence("xxx" + half + "x" + "." * hold_ticks)
    assert moves == [(2, ef.STANDBY)] and record == ef.STANDBY
    assert run_sequence("xxx" + half + "x" + "." * (hold_ticks + 1))[1] == ef.LOCAL


def test_at_least_m_healthy_probes_even_with_a_short_hold() -> None:
    short = replace(T, hold_seconds=0)
    assert run_sequence("xxx.....", thresholds=short) == ([(2, ef.STANDBY)], ef.STANDBY)
    assert run_sequence("xxx......", thresholds=short) == ([(2, ef.STANDBY), (8, ef.LOCAL)], ef.LOCAL)


def test_a_flapping_site_does_not_pull_users_back_and_forth() -> None:
    """Down for three probes, up for six, over and over: users move to Helsinki once and come
    back only after the site has been stable for the whole hold."""
    flapping = ("xxx" + "......") * 12 + "xxx"
    moves, record = run_sequence(flapping + "." * 30)
    assert moves == [(2, ef.STANDBY)] and record == ef.STANDBY
    moves, _ = run_sequence(flapping + "." * 31)
    assert moves == [(2, ef.STANDBY), (len(flapping) + 30, ef.LOCAL)]


def test_fail_back_waits_for_the_peer_but_not_for_a_missing_one() -> None:
    down, up = "xxx", "." * 40
    assert run_sequence(down + up, peer_fails=down + "x" * 40) == ([(2, ef.STANDBY)], ef.STANDBY)
    # The peer is gone (the witness site down too): the healthy local entry is enough.
    state = ef.State(fail_streak=0, ok_streak=40, healthy_since=0)
    decision = ef.decide(state, ef.Observation(True, True, None, ef.STANDBY, 400), T)
    assert decision.target == ef.LOCAL


def test_a_dead_standby_sends_users_home_without_the_hold() -> None:
    state = ef.State(fail_streak=0, ok_streak=3, healthy_since=980)
    assert ef.decide(state, ef.Observation(True, False, None, ef.STANDBY, 1000), T).target == ef.LOCAL
    two = ef.State(fail_streak=0, ok_streak=2, healthy_since=990)
    assert ef.decide(two, ef.Observation(True, False, None, ef.STANDBY, 1000), T).target is None


def test_a_record_pointing_elsewhere_is_reconciled_and_an_unread_one_left_alone() -> None:
    # The local entry got a new address (a load balancer): the watcher's parameters have it.
    assert run_sequence("......", record=ef.OTHER) == ([(5, ef.LOCAL)], ef.LOCAL)
    assert run_sequence("xxx", record=ef.OTHER) == ([(2, ef.STANDBY)], ef.STANDBY)
    state = ef.State(fail_streak=5)
    assert ef.decide(state, ef.Observation(False, True, ef.PeerView(5, 0, 1), ef.UNKNOWN, 0), T).target is None


# ---------------------------------------------------------------------------------------------
# Loopback servers: a fake Cloud API, HTTPS entries with a certificate for the entry's name


class FakeApi:
    """Records every request; answers from a script of (status, body, headers), then from
    `default`. Its error bodies echo the Authorization header, as a careless proxy might."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.records = [LOCAL_IP]
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                api.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "body": json.loads(body) if body else None})
                status, content, headers = api.respond(self.command, self.path, body, self.headers)
                raw = json.dumps(content).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def respond(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.script:
            status, content, extra = self.script.pop(0)
            if status >= 400:
                content = {"error": {**content.get("error", {}), "message": f"denied for {headers.get('Authorization')}"}}
            return status, content, extra
        if method == "GET" and path.endswith("/rrsets/api/A"):
            return 200, {"rrset": {"name": "api", "type": "A", "records": [{"value": v} for v in self.records]}}, {}
        if method == "POST" and path.endswith("/actions/set_records"):
            self.records = [r["value"] for r in json.loads(body)["records"]]
            return 201, {"action": {"id": 4711, "command": "set_rrset_records", "status": "success"}}, {}
        return 404, {"error": {"code": "not_found", "message": "no such thing"}}, {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate for the entry's name, as the entry points hold."""
    base = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unde test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FQDN)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(FQDN)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": base / "ca.pem", "cert": base / "cert.pem", "key": base / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


class Entry:
    """An HTTPS entry point on loopback: /healthz answers `status` (503 when set unhealthy)."""

    def __init__(self, tls: dict[str, Path]) -> None:
        self.status = 200
        self.hosts: list[str] = []
        entry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                entry.hosts.append(self.headers.get("Host", ""))
                code = entry.status if self.path == "/healthz" else 404
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["cert"], tls["key"])
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config_data(role: str, *, api: str = "http://127.0.0.1:9/v1", local_port: int = 443, standby_port: int = 443,
                peer: str | None = None, listen: str | None = None, ca: str | None = None,
                token_file: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "role": role, "vantage": "standby-api" if role == ef.DECIDER else "etcd-witness", "tls_name": FQDN,
        "health_path": "/healthz",
        "local": {"record": LOCAL_IP, "probe_host": "127.0.0.1", "probe_port": local_port},
        "zone": "unde.example", "record": {"name": "api", "type": "A"},
        "interval_seconds": 10, "probe_timeout_seconds": 2, "failures_to_fail_over": 3, "successes_to_fail_back": 6,
        "hold_seconds": 300, "peer_max_age_seconds": 30, "peer_timeout_seconds": 2, "resync_ticks": 6,
        "api": {"endpoint": api, "timeout_seconds": 5, "attempts": 3, "action_timeout_seconds": 5,
                "token_file": token_file},
        "ca_file": ca, "textfile": None,
    }
    if role == ef.DECIDER:
        data["standby"] = {"record": STANDBY_IP, "probe_host": "127.0.0.1", "probe_port": standby_port}
        data["peer_status_url"] = peer
    else:
        data["listen"] = listen or "127.0.0.1:0"
    return data


def dns_api(api: FakeApi, out: io.StringIO, attempts: int = 3) -> tuple[ef.DnsApi, list[float]]:
    config = ef.parse_config(config_data(ef.DECIDER, api=api.endpoint))
    config = replace(config, api_attempts=attempts)
    pauses: list[float] = []
    return ef.DnsApi(config, TOKEN, ef.Redactor(out), sleep=pauses.append), pauses


# ---------------------------------------------------------------------------------------------
# The API calls


def test_set_records_sends_what_hetzners_api_expects(api: FakeApi) -> None:
    out = io.StringIO()
    client, pauses = dns_api(api, out)
    assert client.entry_records() == [LOCAL_IP]
    client.move_entry(STANDBY_IP, "unde-entry-failover on standby-api: standby")
    get, post = api.requests
    assert get["method"] == "GET" and get["path"] == "/v1/zones/unde.example/rrsets/api/A" and get["body"] is None
    assert post["method"] == "POST" and post["path"] == "/v1/zones/unde.example/rrsets/api/A/actions/set_records"
    assert post["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["body"] == {"records": [{"value": STANDBY_IP, "comment": "unde-entry-failover on standby-api: standby"}]}
    assert api.records == [STANDBY_IP] and pauses == [] and out.getvalue() == ""


def test_temporary_errors_are_retried_with_growing_pauses(api: FakeApi) -> None:
    out = io.StringIO()
    client, pauses = dns_api(api, out, attempts=4)
    api.script = [(503, {"error": {"code": "unavailable"}}, {}),
                  (429, {"error": {"code": "rate_limit_exceeded"}}, {"Retry-After": "3"}),
                  (409, {"error": {"code": "conflict"}}, {})]
    client.move_entry(STANDBY_IP, "c")
    assert [r["method"] for r in api.requests] == ["POST"] * 4 and api.records == [STANDBY_IP]
    assert pauses == [1.0, 3.0, 4.0]  # 1 s, the server's Retry-After, then 4 s
    assert "HTTP 503 unavailable" in out.getvalue() and "rate_limit_exceeded" in out.getvalue()
    assert TOKEN not in out.getvalue()


def test_mistakes_are_not_retried_and_the_token_never_shows(api: FakeApi) -> None:
    out = io.StringIO()
    client, pauses = dns_api(api, out)
    api.script = [(401, {"error": {"code": "unauthorized"}}, {})]
    with pytest.raises(ef.ApiError) as raised:
        client.move_entry(STANDBY_IP, "c")
    # The fake server echoed "Bearer <token>" into its error message; it comes out redacted.
    assert len(api.requests) == 1 and pauses == []
    assert "HTTP 401 unauthorized" in str(raised.value) and "[redacted]" in str(raised.value)
    assert TOKEN not in str(raised.value) and TOKEN not in out.getvalue()
    api.script = [(422, {"error": {"code": "invalid_input"}}, {})]
    with pytest.raises(ef.ApiError, match="HTTP 422 invalid_input"):
        client.move_entry("not-an-address", "c")


def test_an_unreachable_api_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    out = io.StringIO()
    config = replace(ef.parse_config(config_data(ef.DECIDER, api=f"http://127.0.0.1:{port}/v1")), api_attempts=3)
    pauses: list[float] = []
    client = ef.DnsApi(config, TOKEN, ef.Redactor(out), sleep=pauses.append)
    with pytest.raises(ef.ApiError, match="Connection refused|URLError"):
        client.entry_records()
    assert pauses == [1.0, 2.0] and TOKEN not in out.getvalue()


def test_running_actions_are_followed_and_failed_ones_reported(api: FakeApi) -> None:
    out = io.StringIO()
    client, pauses = dns_api(api, out)
    api.script = [(201, {"action": {"id": 7, "status": "running"}}, {}),
                  (200, {"action": {"id": 7, "status": "running"}}, {}),
                  (200, {"action": {"id": 7, "status": "success"}}, {})]
    client.move_entry(STANDBY_IP, "c")
    assert [(r["method"], r["path"]) for r in api.requests[1:]] == [("GET", "/v1/actions/7")] * 2
    assert pauses == [1.0, 1.0]
    api.script = [(201, {"action": {"id": 8, "status": "error", "error": {"code": "action_failed", "message": "x"}}}, {})]
    with pytest.raises(ef.ApiError, match="action_failed"):
        client.move_entry(STANDBY_IP, "c")


def test_a_redirect_is_not_followed_with_the_token(api: FakeApi) -> None:
    elsewhere = FakeApi()
    try:
        api.script = [(302, {"error": {"code": "moved"}}, {"Location": elsewhere.endpoint + "/steal"})]
        client, _ = dns_api(api, io.StringIO(), attempts=1)
        with pytest.raises(ef.ApiError, match="HTTP 302"):
            client.entry_records()
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


# ---------------------------------------------------------------------------------------------
# End to end on loopback


def test_watchers_move_the_record_and_back(api: FakeApi, tls: dict[str, Path]) -> None:
    local, standby = Entry(tls), Entry(tls)
    out = io.StringIO()
    log = ef.Redactor(out)
    try:
        observer = ef.Watcher(ef.parse_config(config_data(ef.OBSERVER, local_port=local.port, ca=str(tls["ca"]))), log)
        status = ef.status_server(observer, ("127.0.0.1", 0))
        peer_url = f"http://127.0.0.1:{status.server_address[1]}/status"
        config = ef.parse_config(config_data(ef.DECIDER, api=api.endpoint, local_port=local.port,
                                             standby_port=standby.port, peer=peer_url, ca=str(tls["ca"])))
        decider = ef.Watcher(config, log, ef.DnsApi(config, TOKEN, log, sleep=lambda s: None))

        def tick(now: float) -> ef.Decision:
            observer.tick(now)
            return decider.tick(now)

        assert tick(0).target is None and api.records == [LOCAL_IP]
        assert local.hosts[-1] == FQDN  # probed at the local address, as the entry's name
        local.status = 503
        decisions = [tick(10 * i) for i in range(1, 4)]
        assert [d.target for d in decisions] == [None, None, ef.STANDBY]
        assert api.records == [STANDBY_IP]
        posted = [r for r in api.requests if r["method"] == "POST"]
        assert posted[-1]["body"]["records"][0]["value"] == STANDBY_IP
        local.status = 200
        healthy = [tick(40 + 10 * i) for i in range(6)]
        assert all(d.target is None for d in healthy) and "holding" in healthy[-1].reason
        assert tick(40 + timings.ENTRY_FAIL_BACK_HOLD_SECONDS).target == ef.LOCAL and api.records == [LOCAL_IP]
        # The observer's verdict as the decider read it, and nothing secret in the logs.
        verdict = json.loads(urllib.request.urlopen(peer_url, timeout=5).read())
        assert verdict["ok_streak"] == 7 and verdict["fail_streak"] == 0 and verdict["vantage"] == "etcd-witness"
        assert "FAILING" in out.getvalue() and TOKEN not in out.getvalue()
        status.shutdown()
    finally:
        local.close()
        standby.close()


def test_a_certificate_for_another_name_is_a_failed_probe(tls: dict[str, Path]) -> None:
    entry = Entry(tls)
    try:
        good = ef.parse_config(config_data(ef.OBSERVER, local_port=entry.port, ca=str(tls["ca"])))
        assert ef.probe(good.local, good) == (True, "HTTP 200")
        other = replace(good, tls_name="api.elsewhere.example")
        ok, detail = ef.probe(other.local, other)
        assert not ok and "certificate" in detail.lower()
        untrusted = replace(good, ca_file=None)  # the system's CAs do not know the test CA
        assert ef.probe(untrusted.local, untrusted)[0] is False
    finally:
        entry.close()


# ---------------------------------------------------------------------------------------------
# Its configuration and command line


def test_every_config_problem_is_reported_at_once() -> None:
    data = config_data(ef.DECIDER)
    data["role"] = "boss"
    data["failures_to_fail_over"] = 0
    data["probe_timeout_seconds"] = 20
    data["record"]["type"] = "MX"
    del data["zone"]
    data["local"]["probe_port"] = 70000
    with pytest.raises(ef.ConfigError) as raised:
        ef.parse_config(data, "cfg.json")
    assert raised.value.problems == [
        "cfg.json: role: 'boss' is neither decider nor observer",
        "cfg.json: local.probe_port: 70000 is no TCP port",
        "cfg.json: failures_to_fail_over: a whole number of at least 1",
        "cfg.json: probe_timeout_seconds: must be shorter than interval_seconds",
        "cfg.json: record.type: 'MX' (the entry record is A or AAAA)",
        "cfg.json: zone: required",
    ]


def test_check_reads_the_credential_and_never_prints_it(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / ef.TOKEN_CREDENTIAL).write_text(TOKEN + "\n")
    path = tmp_path / "entry-failover.json"
    path.write_text(json.dumps(config_data(ef.DECIDER, peer=None)))
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)}
    ok = subprocess.run([sys.executable, str(SCRIPT), "--config", str(path), "--check"], capture_output=True,
                        text=True, env=env, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == f"{path}: ok (decider on standby-api)"
    assert TOKEN not in ok.stdout + ok.stderr
    (credentials / ef.TOKEN_CREDENTIAL).write_text("")
    empty = subprocess.run([sys.executable, str(SCRIPT), "--config", str(path), "--check"], capture_output=True,
                           text=True, env=env, timeout=30)
    assert empty.returncode == 2 and "the API token file is empty" in empty.stderr
    path.write_text("{not json")
    bad = subprocess.run([sys.executable, str(SCRIPT), "--config", str(path), "--check"], capture_output=True,
                         text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "line 1: not JSON" in bad.stderr
