"""The distance between the sites, in user space: a relay that holds every packet crossing
between them for half the round trip, and adds jitter and loss on demand.

This kernel has no `netem`, so the delay cannot come from a qdisc. The relay sits in the
namespace that routes between the sites (the lab's `inet`, or a test's router): packets between
the two sites' addresses are marked there (nftables), routed by that mark into a TUN device the
relay reads, and written back into the same device once their time has come, which hands them
to the kernel as if they had arrived from the far side. Only traffic between the two address
sets pays the distance; everything else (the archive proxy, the operator) is routed as before.

Packets keep their order (a later packet never overtakes an earlier one, as on a real path
whose jitter comes from queues), so jitter delays but never reorders. A blackout drops
everything for a while (a WAN hiccup); `loss` drops each packet with that probability.

Run as `python -m lab.wan_relay --namespace NS --site-a ADDR,... --site-b ADDR,...`; it sets up
the marks and routes, relays until stopped, and takes changes on a control socket
(`control(path, delay_ms=..., jitter_ms=..., loss=..., blackout_s=...)`, answered with its
counters)."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import random
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address

TUN_DEVICE = "wan0"
# The mark of a packet that crosses between the sites, and the routing table that sends it to the relay.
MARK = 0x57
TABLE = 87
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
DEFAULT_DELAY_MS = 60.0  # each way: SPEC's 120 ms round trip between the sites
MAX_PACKET = 65535
# The TUN device's queue, in packets. The kernel drops what does not fit while the relay is busy,
# silently to the relay: at the default 500 a TCP bulk transfer (pg_rewind's, a base backup's)
# lost 8 % of its packets in bursts and ran at under 1 MB/s. Ample room, and the drops counted.
TUN_QUEUE_PACKETS = 20000


@dataclass
class Settings:
    delay_ms: float = DEFAULT_DELAY_MS  # one way
    jitter_ms: float = 0.0  # each packet's delay is delay +- up to this (uniform)
    loss: float = 0.0  # probability that a packet is dropped
    blackout_until: float = 0.0  # monotonic time until which every packet is dropped


@dataclass
class Counters:
    relayed: int = 0
    dropped_loss: int = 0
    dropped_blackout: int = 0
    held_max: int = 0  # the most packets held at once


@dataclass
class Relay:
    fd: int
    settings: Settings = field(default_factory=Settings)
    namespace: str = ""  # where the TUN device is, to read the drops of its queue
    counters: Counters = field(default_factory=Counters)
    rng: random.Random = field(default_factory=random.Random)
    _last_due: float = 0.0
    _held: int = 0

    def on_readable(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                packet = os.read(self.fd, MAX_PACKET)
            except BlockingIOError:
                return
            self.take(packet, loop)

    def take(self, packet: bytes, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        settings = self.settings
        if time.monotonic() < settings.blackout_until:
            self.counters.dropped_blackout += 1
            return
        if settings.loss and self.rng.random() < settings.loss:
            self.counters.dropped_loss += 1
            return
        delay = settings.delay_ms
        if settings.jitter_ms:
            delay += self.rng.uniform(-settings.jitter_ms, settings.jitter_ms)
        # In order: a packet never leaves before the one read before it.
        due = max(now + max(delay, 0.0) / 1000, self._last_due)
        self._last_due = due
        self._held += 1
        self.counters.held_max = max(self.counters.held_max, self._held)
        loop.call_at(due, self._release, packet)

    def _release(self, packet: bytes) -> None:
        self._held -= 1
        try:
            os.write(self.fd, packet)
            self.counters.relayed += 1
        except OSError:
            self.counters.dropped_loss += 1  # the device refused it (down, or a packet too big)

    def change(self, request: dict[str, float]) -> dict[str, object]:
        for key in ("delay_ms", "jitter_ms", "loss"):
            if key in request:
                value = float(request[key])
                if value < 0 or (key == "loss" and value > 1):
                    raise ValueError(f"{key}: {value} is out of range")
                setattr(self.settings, key, value)
        if "blackout_s" in request:
            self.settings.blackout_until = time.monotonic() + float(request["blackout_s"])
        return {"settings": {k: v for k, v in asdict(self.settings).items() if k != "blackout_until"},
                "blackout_left_s": max(0.0, self.settings.blackout_until - time.monotonic()),
                "counters": asdict(self.counters) | {"queue_dropped": queue_dropped(self.namespace)}}


def queue_dropped(namespace: str) -> int:
    """Packets the kernel dropped at the TUN device's queue (the relay never saw them)."""
    if not namespace:
        return 0
    shown = subprocess.run(["ip", "netns", "exec", namespace, "cat", f"/sys/class/net/{TUN_DEVICE}/statistics/tx_dropped"],
                           capture_output=True, text=True, timeout=10)
    return int(shown.stdout.strip() or 0)


def open_tun(name: str = TUN_DEVICE) -> int:
    """The TUN device `name` of the current namespace (made persistent by setup), for reading."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


# --------------------------------------------------------------------------------------------
# Setting the namespace up


def _run(namespace: str, *args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, *args], input=stdin, text=True, check=True,
                   capture_output=True, timeout=30)


def ruleset(site_a: Sequence[str], site_b: Sequence[str]) -> str:
    """The nftables table that marks packets between the two sites' addresses."""
    def elements(addresses: Sequence[str], version: int) -> str:
        chosen = sorted({a for a in addresses if ip_address(a).version == version})
        return ", ".join(chosen)

    lines = ["table inet unde_wan {"]
    for family, version in (("ipv4_addr", 4), ("ipv6_addr", 6)):
        for side, addresses in (("a", site_a), ("b", site_b)):
            found = elements(addresses, version)
            lines.append(f"  set {side}{version} {{ type {family};" + (f" elements = {{ {found} }};" if found else "") + " }")
    lines += ["  chain prerouting {", "    type filter hook prerouting priority mangle; policy accept;",
              f'    iifname "{TUN_DEVICE}" return']
    for version, keyword in ((4, "ip"), (6, "ip6")):
        lines.append(f"    {keyword} saddr @a{version} {keyword} daddr @b{version} meta mark set {MARK}")
        lines.append(f"    {keyword} saddr @b{version} {keyword} daddr @a{version} meta mark set {MARK}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def setup(namespace: str, site_a: Sequence[str], site_b: Sequence[str]) -> None:
    """The TUN device, the marks and the routes in `namespace`, the router between the sites."""
    _run(namespace, "ip", "tuntap", "add", "dev", TUN_DEVICE, "mode", "tun")
    _run(namespace, "ip", "link", "set", TUN_DEVICE, "txqueuelen", str(TUN_QUEUE_PACKETS), "up")
    for key in ("net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{TUN_DEVICE}.rp_filter"):
        _run(namespace, "sysctl", "-q", "-w", f"{key}=0")
    _run(namespace, "nft", "-f", "-", stdin=ruleset(site_a, site_b))
    for family in ("-4", "-6"):
        _run(namespace, "ip", family, "rule", "add", "fwmark", str(MARK), "lookup", str(TABLE), "pref", "1000")
        _run(namespace, "ip", family, "route", "add", "default", "dev", TUN_DEVICE, "table", str(TABLE))


def teardown(namespace: str) -> None:
    for args in (["nft", "delete", "table", "inet", "unde_wan"],
                 ["ip", "-4", "rule", "del", "fwmark", str(MARK), "lookup", str(TABLE)],
                 ["ip", "-6", "rule", "del", "fwmark", str(MARK), "lookup", str(TABLE)],
                 ["ip", "link", "del", TUN_DEVICE]):
        subprocess.run(["ip", "netns", "exec", namespace, *args], capture_output=True, timeout=30)


# --------------------------------------------------------------------------------------------
# Control


def control(path: str, timeout: float = 5, **request: float) -> dict[str, object]:
    """Change the running relay's settings (any of delay_ms, jitter_ms, loss, blackout_s) and
    return its settings and counters."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    reply = json.loads(answer)
    if "error" in reply:
        raise ValueError(reply["error"])
    return reply  # type: ignore[no-any-return]


async def _serve(relay: Relay, control_path: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline() or b"{}")
            reply = relay.change(request)
        except (ValueError, TypeError) as error:
            reply = {"error": str(error)}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    loop.add_reader(relay.fd, relay.on_readable, loop)
    if os.path.exists(control_path):
        os.unlink(control_path)
    server = await asyncio.start_unix_server(handle, control_path)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.wan_relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True, help="the namespace that routes between the sites")
    parser.add_argument("--site-a", required=True, help="the first site's addresses, comma-separated")
    parser.add_argument("--site-b", required=True, help="the second site's addresses, comma-separated")
    parser.add_argument("--delay-ms", type=float, default=DEFAULT_DELAY_MS, help="one way (default 60: 120 ms RTT)")
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--control", required=True, help="the control socket's path")
    args = parser.parse_args(argv)
    site_a, site_b = args.site_a.split(","), args.site_b.split(",")
    for address in (*site_a, *site_b):
        ip_address(address)
    teardown(args.namespace)
    setup(args.namespace, site_a, site_b)
    try:
        from lab import netns

        with netns.entered(args.namespace):
            fd = open_tun()
        relay = Relay(fd, Settings(args.delay_ms, args.jitter_ms, args.loss), namespace=args.namespace)
        print(f"wan relay: {len(site_a)} + {len(site_b)} addresses, {args.delay_ms:g} ms each way", flush=True)
        asyncio.run(_serve(relay, args.control))
    finally:
        teardown(args.namespace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
