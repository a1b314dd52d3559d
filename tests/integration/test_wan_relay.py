"""The WAN relay (lab/wan_relay.py) gives the distance it is set to, over plain packets and over
WireGuard, at the drills' traffic, and drops what it is told to drop.

Namespaces of this test only (nothing leaves them):

    site-a (198.18.1.2) --- router (198.18.1.1 / 198.18.2.1, the relay) --- site-b (198.18.2.2)

198.18.0.0/15 is the benchmarking range (RFC 2544): never routed on the internet."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from lab.wan_relay import control
from tests.conftest import ROOT, require_tool

pytestmark = pytest.mark.integration

PREFIX = f"uwan{os.getpid() % 100000}"
A, B = "198.18.1.2", "198.18.2.2"
A6, B6 = "2001:2::a", "2001:2:0:1::b"  # RFC 5180's benchmarking range
TARGET_RTT_MS = 120.0
TOLERANCE_MS = 5.0


def run_in(namespace: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", namespace, *args], capture_output=True, text=True, timeout=timeout)


def rtts(namespace: str, target: str, count: int = 20, interval: float = 0.05, size: int = 56) -> list[float]:
    """Each reply's round trip, in ms (a lost probe has none)."""
    result = run_in(namespace, "ping", "-n", "-c", str(count), "-i", str(interval), "-s", str(size), "-W", "2", target,
                    timeout=count * interval + 30)
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", result.stdout)]


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_tool("nft")
    names = {side: f"{PREFIX}-{side}" for side in ("a", "b", "r")}
    for name in names.values():
        netns.create(name)
    relay = None
    try:
        r = names["r"]
        netns.sysctl(r, "net.ipv4.ip_forward", "1")
        netns.sysctl(r, "net.ipv6.conf.all.forwarding", "1")
        for side, address, address6, gateway, gateway6 in (("a", A, A6, "198.18.1.1", "2001:2::1"),
                                                           ("b", B, B6, "198.18.2.1", "2001:2:0:1::1")):
            ns = names[side]
            netns.ip(r, "link", "add", f"to-{side}", "type", "veth", "peer", "name", "tmp")
            netns.ip(r, "link", "set", "tmp", "netns", ns)
            netns.ip(ns, "link", "set", "tmp", "name", "eth0")
            netns.ip(r, "addr", "add", f"{gateway}/24", "dev", f"to-{side}")
            netns.ip(r, "addr", "add", f"{gateway6}/64", "dev", f"to-{side}", "nodad")
            netns.ip(r, "link", "set", f"to-{side}", "up")
            netns.ip(ns, "addr", "add", f"{address}/24", "dev", "eth0")
            netns.ip(ns, "addr", "add", f"{address6}/64", "dev", "eth0", "nodad")
            netns.ip(ns, "link", "set", "eth0", "up")
            netns.ip(ns, "route", "add", "default", "via", gateway)
            netns.ip(ns, "-6", "route", "add", "default", "via", gateway6)
        sock = str(tmp_path_factory.mktemp("wan") / "control.sock")
        relay = subprocess.Popen([sys.executable, "-m", "lab.wan_relay", "--namespace", r, "--site-a", f"{A},{A6}",
                                  "--site-b", f"{B},{B6}", "--control", sock], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if relay.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the relay did not start: {relay.stdout.read() if relay.stdout else ''}")
            time.sleep(0.1)
        ready = {**names, "control": sock, "pid": str(relay.pid)}
        warmed_up(ready)
        yield ready
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(timeout=10)
        for name in names.values():
            netns.delete(name)


def settle(wan: dict[str, str], **settings: float) -> dict:
    return control(wan["control"], **{"delay_ms": 60, "jitter_ms": 0, "loss": 0, "blackout_s": 0, **settings})


def warmed_up(wan: dict[str, str]) -> None:
    """New links resolve their neighbours (IPv6: after duplicate address detection of the
    router's link-local addresses, about 2 s) before the first packet crosses."""
    for target in (B, B6):
        deadline = time.monotonic() + 20
        while not rtts(wan["a"], target, count=1):
            assert time.monotonic() < deadline, f"{target} unreachable through the relay"


def test_the_round_trip_is_the_distance_it_is_set_to(wan) -> None:
    settle(wan)
    for target in (B, B6):
        measured = rtts(wan["a"], target)
        assert len(measured) == 20
        median = sorted(measured)[10]
        print(f"RTT to {target} through the relay: min {min(measured):.1f} median {median:.1f} max {max(measured):.1f} ms")
        assert abs(median - TARGET_RTT_MS) <= TOLERANCE_MS and max(measured) < TARGET_RTT_MS + 2 * TOLERANCE_MS
    settle(wan, delay_ms=10)
    assert abs(sorted(rtts(wan["a"], B))[10] - 20) <= TOLERANCE_MS


def test_the_distance_holds_under_the_drills_traffic(wan) -> None:
    """A steady 2,000 packets a second of 1,200 bytes (about 20 Mbit/s: a shard's replication
    under write load, and more) crossing the relay while the RTT is measured."""
    settle(wan)
    flood = subprocess.Popen(["ip", "netns", "exec", wan["a"], sys.executable, "-c", (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "payload = b'x' * 1200\n"
        "start = time.monotonic()\n"
        "for i in range(16000):\n"
        f"    s.sendto(payload, ('{B}', 9))\n"
        "    time.sleep(max(0, start + i / 2000 - time.monotonic()))\n")])
    try:
        time.sleep(1)
        measured = rtts(wan["a"], B, count=40, interval=0.1)
    finally:
        flood.wait(timeout=30)
    counters = control(wan["control"])["counters"]
    median = sorted(measured)[len(measured) // 2]
    print(f"under load: RTT median {median:.1f} ms, max {max(measured):.1f} ms; relay {counters}")
    assert len(measured) == 40
    assert abs(median - TARGET_RTT_MS) <= TOLERANCE_MS
    assert counters["relayed"] >= 16000


BULK_BYTES = 32 * 1024 * 1024
# A single TCP stream across 120 ms with no loss: its window grows to several MB (Linux's
# default tcp_rmem maximum is 6 MB), so tens of MB/s. 5 MB/s is a floor far below that and far
# above what a lossy relay gave (0.86 MB/s: pg_rewind across the lab's WAN with 8 % dropped).
BULK_FLOOR_MB_S = 5.0


def test_a_bulk_transfer_crosses_at_full_speed_and_nothing_is_dropped(wan) -> None:
    """What pg_rewind and a base backup do: one TCP stream, as fast as it goes, while the relay
    is starved of CPU now and then (as on the lab's busy machine: it is paused for 0.25 s three
    times). What arrives meanwhile waits in the TUN device's queue, which must hold it: the
    kernel's drops there are invisible to the relay and cut TCP's rate tenfold."""
    settle(wan)
    before = control(wan["control"])["counters"]
    sink = subprocess.Popen(["ip", "netns", "exec", wan["b"], sys.executable, "-c", (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{B}', 5001)); s.listen(1); c, _ = s.accept(); n = 0\n"
        "while (chunk := c.recv(1 << 20)):\n    n += len(chunk)\n"
        "print(n)\n")], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)

    def starve() -> None:
        time.sleep(0.8)
        for _ in range(3):
            os.kill(int(wan["pid"]), signal.SIGSTOP)
            time.sleep(0.25)
            os.kill(int(wan["pid"]), signal.SIGCONT)
            time.sleep(0.4)

    starving = threading.Thread(target=starve)
    starving.start()
    sent = run_in(wan["a"], sys.executable, "-c", (
        "import socket, time\n"
        f"s = socket.create_connection(('{B}', 5001)); block = b'x' * (1 << 20); start = time.monotonic()\n"
        f"for _ in range({BULK_BYTES >> 20}):\n    s.sendall(block)\n"
        "s.shutdown(socket.SHUT_WR); s.recv(1); print(time.monotonic() - start)\n"), timeout=120)
    starving.join()
    received = sink.communicate(timeout=60)[0]
    seconds = float(sent.stdout.strip())
    after = control(wan["control"])["counters"]
    rate = BULK_BYTES / seconds / 1e6
    print(f"bulk: {BULK_BYTES >> 20} MiB in {seconds:.1f} s ({rate:.1f} MB/s); queue drops "
          f"{after['queue_dropped'] - before['queue_dropped']}, relayed {after['relayed'] - before['relayed']}")
    assert int(received) == BULK_BYTES
    assert after["queue_dropped"] == before["queue_dropped"]
    assert rate >= BULK_FLOOR_MB_S


def test_jitter_spreads_the_round_trip_without_reordering(wan) -> None:
    settle(wan, jitter_ms=30)
    measured = rtts(wan["a"], B, count=60, interval=0.05)
    spread = max(measured) - min(measured)
    print(f"jitter 30 ms: RTT min {min(measured):.1f} max {max(measured):.1f} ms")
    assert len(measured) == 60 and spread > 20
    assert min(measured) >= TARGET_RTT_MS - 60 - TOLERANCE_MS


def test_a_blackout_drops_everything_for_its_length_then_nothing(wan) -> None:
    settle(wan)
    before = control(wan["control"])["counters"]["dropped_blackout"]
    control(wan["control"], blackout_s=1.0)
    measured = rtts(wan["a"], B, count=30, interval=0.1)
    # About 1 s of 3 s of probes is lost (and the replies of probes sent just before it).
    assert 16 <= len(measured) <= 22, len(measured)
    assert control(wan["control"])["counters"]["dropped_blackout"] > before
    assert len(rtts(wan["a"], B, count=10)) == 10


def test_loss_drops_about_that_share(wan) -> None:
    settle(wan, loss=0.5)
    measured = rtts(wan["a"], B, count=100, interval=0.02)
    # A probe comes back when both ways pass: 0.25 on average; 100 probes stay well inside 10..45.
    assert 10 <= len(measured) <= 45, len(measured)


def test_wireguard_crosses_the_relay_at_the_distance(wan, tmp_path: Path) -> None:
    """wireguard-go at both ends, as the servers run it: the tunnel's RTT is the relay's."""
    require_tool("wireguard-go")
    settle(wan)
    keys = {}
    for side in ("a", "b"):
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip()
        (tmp_path / side).write_text(private)
        keys[side] = public
    daemons = []
    try:
        for side, peer, own_ip, peer_ip, endpoint in (("a", "b", "10.77.0.1", "10.77.0.2", B),
                                                      ("b", "a", "10.77.0.2", "10.77.0.1", A)):
            ns = wan[side]
            # In the foreground, its output nowhere: a daemonised wireguard-go whose parent's
            # pipes were read to the end stops answering on its control socket.
            socket_path = Path(f"/var/run/wireguard/wgt{side}.sock")
            socket_path.unlink(missing_ok=True)
            daemons.append(subprocess.Popen(["ip", "netns", "exec", ns, "wireguard-go", "-f", f"wgt{side}"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 10
            while not socket_path.exists():
                assert time.monotonic() < deadline, "wireguard-go did not start"
                time.sleep(0.05)
            run_in(ns, "wg", "set", f"wgt{side}", "private-key", str(tmp_path / side), "listen-port", "51820",
                   "peer", keys[peer], "endpoint", f"{endpoint}:51820", "allowed-ips", f"{peer_ip}/32")
            netns.ip(ns, "addr", "add", f"{own_ip}/32", "peer", f"{peer_ip}/32", "dev", f"wgt{side}")
            netns.ip(ns, "link", "set", f"wgt{side}", "up", "mtu", "1420")
        rtts(wan["a"], "10.77.0.2", count=2)  # the handshake: one round trip more
        measured = rtts(wan["a"], "10.77.0.2", count=20)
        median = sorted(measured)[10]
        print(f"through WireGuard: RTT median {median:.1f} ms")
        assert len(measured) == 20 and abs(median - TARGET_RTT_MS) <= TOLERANCE_MS
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=10)
