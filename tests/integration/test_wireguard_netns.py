"""Real WireGuard (wireguard-go, wg-quick, nftables) between network namespaces, configured only
from the rendered artifacts.

The lab (every address is a documentation or private address and lives only in namespaces that
this test creates; nothing is sent outside them):

    local-* (one ns per local server) --+                          +-- hel (10.1.0.3, a Helsinki server)
      pub0 192.0.2.10+i, lo 10.2.0.x/32 |                          |
                                    inet (bridge, 192.0.2.254;     hnet (bridge: the Helsinki network)
                                    admin 192.0.2.250)             |
                                        +-- gw (helsinki-gw: pub0 192.0.2.1, priv0 10.1.0.2)
                                        +-- wit (etcd-witness: pub0 192.0.2.3, priv0 10.1.3.2) --+

192.0.2.1 stands in for helsinki-gw's public address. `hel` and `wit` get the routes the hcloud
network gives every server (10.2.0.0/24, 10.3.0.0/16 and 0.0.0.0/0 via helsinki-gw).

Each emulated host also gets its own mount namespace (a holder process) with a private
/run/wireguard, because wireguard-go's control sockets are named after the interface and the
gateway's wg-app would otherwise collide with local-app's wg-app; its /etc/wireguard is a bind mount
of the directory the rendered files were written to, so `wg-quick up <interface>` reads the
artifact at its real path.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require_tool
from unde_infra.model import Inventory, Server, load_topology
from unde_infra.render import wireguard as wg

pytestmark = pytest.mark.integration

GW_PUBLIC = "192.0.2.1"
WITNESS_PUBLIC = "192.0.2.3"
INTERNET_HOST = "192.0.2.254"
ADMIN_HOST = "192.0.2.250"
HELSINKI_HOST = "10.1.0.3"
PROBE_PORT = 8000
PREFIX = f"uwg{os.getpid() % 100000}"

# A tiny TCP server: answers every connection with the peer address it sees, then closes.
PEER_ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
while True:
    c, a = s.accept(); c.sendall(a[0].encode()); c.close()
"""
# Connect with a timeout; print the answer, or "refused" / "timeout".
PROBE = """
import socket, sys
dst, port, src, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(); s.settimeout(timeout)
if src != "-": s.bind((src, 0))
try:
    s.connect((dst, port)); print(s.recv(64).decode() or "connected")
except ConnectionRefusedError: print("refused")
except OSError as e: print("timeout" if isinstance(e, TimeoutError) else f"error {e.errno}")
"""


def _run(args: list[str], *, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        # Commands here never carry key material on their command line or in their output.
        raise AssertionError(f"{' '.join(args)} -> {result.returncode}: {result.stderr.strip()}")
    return result


@dataclass
class Host:
    name: str
    ns: str
    etc: Path
    holder: subprocess.Popen[str] | None = None
    configs: dict[str, str] = field(default_factory=dict)  # interface -> rendered text

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", self.ns, *args], check=check)

    def run(self, *args: str, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.ns, *args], timeout=timeout, check=check)

    def run_mnt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """In this host's network and mount namespaces (where its /etc/wireguard and sockets are)."""
        assert self.holder is not None
        env = ["env", "WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go"]
        return _run(["nsenter", "-t", str(self.holder.pid), "-m", "-n", *env, *args], check=check)

    def install(self, files: dict[str, str]) -> None:
        """Write rendered files: /etc/wireguard/* into the bind-mounted directory (0600, as delivered);
        anything else under this host's scratch root at its real path."""
        for path, text in files.items():
            target = (
                self.etc / "wireguard" / Path(path).name if path.startswith(wg.WG_DIR) else self.root / path.lstrip("/")
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(0o600 if wg.is_secret(path) else 0o644)
            if path.startswith(wg.WG_DIR):
                self.configs[Path(path).stem] = text

    @property
    def root(self) -> Path:
        return self.etc.parent

    def up(self, interface: str) -> None:
        self.run_mnt("wg-quick", "up", interface)

    def down(self, interface: str) -> None:
        self.run_mnt("wg-quick", "down", interface, check=False)

    def restart(self, interface: str, text: str | None = None) -> None:
        """Bring an interface up from `text` (a possibly mutated artifact) or its rendered file."""
        self.down(interface)
        path = self.etc / "wireguard" / f"{interface}.conf"
        path.write_text(text if text is not None else self.configs[interface])
        self.up(interface)


class Lab:
    def __init__(self, inventory: Inventory, scratch: Path) -> None:
        self.inventory = inventory
        self.scratch = scratch
        self.hosts: dict[str, Host] = {}
        self.locals: list[Server] = [s for s, _ in wg.local_tunnels(inventory)]
        self.keys = {s.name: wg.TunnelKeys.generate() for s in self.locals}
        self.witness_keys = wg.TunnelKeys.generate()
        self.background: list[subprocess.Popen[str]] = []
        self.made_run_dir = False

    def host(self, key: str, name: str) -> Host:
        etc = self.scratch / key / "etc"
        (etc / "wireguard").mkdir(parents=True, mode=0o700)
        host = Host(name, f"{PREFIX}-{key}", etc)
        self.hosts[key] = host
        _run(["ip", "netns", "add", host.ns])
        host.ip("link", "set", "lo", "up")
        return host

    def start_holder(self, host: Host) -> None:
        script = (
            "mount -t tmpfs -o mode=0700 tmpfs /run/wireguard && "
            f"mount --bind {host.etc / 'wireguard'} /etc/wireguard && echo ready && exec sleep 3600"
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        host.holder = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the holder either prints or dies at once
        assert line.strip() == "ready", (
            f"{host.name}: mount namespace failed: {proc.stderr.read() if proc.stderr else ''}"
        )

    def link(self, bridge_ns: Host, port: str, host: Host, address: str) -> None:
        bridge_ns.ip("link", "add", port, "type", "veth", "peer", "name", f"tmp-{port}", "netns", host.ns)
        bridge_ns.ip("link", "set", port, "master", "br0", "up")
        ifname = "pub0" if bridge_ns.name == "internet" else "priv0"
        host.ip("link", "set", f"tmp-{port}", "name", ifname)
        host.ip("addr", "add", address, "dev", ifname)
        host.ip("link", "set", ifname, "up")

    def build(self) -> None:
        if not os.path.isdir("/run/wireguard"):
            os.makedirs("/run/wireguard", mode=0o700)
            self.made_run_dir = True
        inet = self.host("inet", "internet")
        hnet = self.host("hnet", "helsinki-network")
        for bridge in (inet, hnet):
            bridge.ip("link", "add", "br0", "type", "bridge")
            bridge.ip("link", "set", "br0", "up")
        inet.ip("addr", "add", f"{INTERNET_HOST}/24", "dev", "br0")
        inet.ip("addr", "add", f"{ADMIN_HOST}/24", "dev", "br0")

        gw = self.host("gw", self.inventory.gateway.name)
        self.link(inet, "i-gw", gw, f"{GW_PUBLIC}/24")
        self.link(hnet, "h-gw", gw, f"{self.inventory.gateway.ip}/16")
        gw.ip("route", "add", "default", "via", INTERNET_HOST)

        hel = self.host("hel", "scraper")
        self.link(hnet, "h-hel", hel, f"{HELSINKI_HOST}/16")
        witness = wg.witness_tunnel(self.inventory)
        assert witness is not None
        wit = self.host("wit", witness.remote.name)
        self.link(hnet, "h-wit", wit, f"{witness.remote.ip}/16")
        self.link(inet, "i-wit", wit, f"{WITNESS_PUBLIC}/24")
        # What the hcloud network's routes give every Helsinki-network server.
        for host in (hel, wit):
            for dest in (self.inventory.sites["local"].range, self.inventory.network.tunnel_range):
                host.ip("route", "add", str(dest), "via", str(self.inventory.gateway.ip))
        hel.ip("route", "add", "default", "via", str(self.inventory.gateway.ip))
        wit.ip("route", "add", "default", "via", INTERNET_HOST)

        for i, server in enumerate(self.locals):
            host = self.host(f"l{i}", server.name)
            self.link(inet, f"i-l{i}", host, f"192.0.2.{10 + i}/24")
            # The local server's private address (on its local network NIC in production; there
            # is no dummy link type in this kernel, and lo holds a /32 just as well).
            host.ip("addr", "add", f"{server.ip}/32", "dev", "lo")

        for host in self.hosts.values():
            if host.name not in ("internet", "helsinki-network"):
                self.start_holder(host)

        # Rendered artifacts only, keys supplied by the test.
        gateway_files = wg.gateway_files(self.inventory, self.keys, [f"{ADMIN_HOST}/32"], "linux")
        gw.install(gateway_files)
        gw.run("sysctl", "-q", "-p", str(gw.root / wg.SYSCTL_PATH.lstrip("/")))
        gw.run("nft", "-f", str(gw.root / wg.NFTABLES_PATH.lstrip("/")))
        for _, tunnel in wg.local_tunnels(self.inventory):
            gw.up(tunnel.interface)
        for i, server in enumerate(self.locals):
            host = self.hosts[f"l{i}"]
            host.install(wg.local_tunnel_files(server, self.inventory, self.keys[server.name], endpoint_host=GW_PUBLIC))
            assert server.tunnel is not None
            host.up(server.tunnel.interface)
        direct = wg.witness_files(self.inventory, self.witness_keys, endpoint_host=WITNESS_PUBLIC)
        wit.install(direct[witness.remote.name])
        wit.up(witness.interface)
        etcd_host = self.local_host(witness.local.name)
        etcd_host.install(direct[witness.local.name])
        etcd_host.up(witness.interface)

        self.background.append(self.spawn(hel, sys.executable, "-c", PEER_ECHO, str(PROBE_PORT)))
        # An SSH stand-in on the gateway: it answers, so a timeout can only come from the firewall.
        self.background.append(self.spawn(gw, sys.executable, "-c", PEER_ECHO, str(wg.SSH_PORT)))
        self.wait_listening(hel, PROBE_PORT)
        self.wait_listening(gw, wg.SSH_PORT)

    def spawn(self, host: Host, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", host.ns, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )

    def wait_listening(self, host: Host, port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if f":{port} " in host.run("ss", "-Htln").stdout:
                return
            time.sleep(0.1)
        raise AssertionError(f"nothing listens on {host.name}:{port}")

    def local_host(self, name: str) -> Host:
        return next(h for h in self.hosts.values() if h.name == name)

    def teardown(self) -> None:
        for proc in self.background:
            proc.terminate()
        # Only processes started inside this test's namespaces: holders, wireguard-go, probes.
        pids = {
            int(pid)
            for host in self.hosts.values()
            for pid in _run(["ip", "netns", "pids", host.ns], check=False).stdout.split()
        }
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = {pid for pid in pids if _alive(pid)}
                time.sleep(0.05)
        for host in self.hosts.values():
            _run(["ip", "netns", "del", host.ns], check=False)
        for proc in [*self.background, *(h.holder for h in self.hosts.values() if h.holder is not None)]:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if self.made_run_dir:
            try:
                os.rmdir("/run/wireguard")
            except OSError:
                pass

    # --- probes --------------------------------------------------------------------------------

    def ping(self, host: Host, dst: str, *, within: float) -> bool:
        """True as soon as one echo reply arrives; bounded by `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            result = host.run("ping", "-n", "-c", "1", "-W", "1", dst, check=False, timeout=5)
            if result.returncode == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def probe(self, host: Host, dst: str, port: int, *, src: str = "-", timeout: float = 1.5) -> str:
        return host.run(
            sys.executable, "-c", PROBE, dst, str(port), src, str(timeout), timeout=timeout + 10
        ).stdout.strip()

    def reach(self, host: Host, server: Server, *, within: float) -> bool:
        """The local server reaches the Helsinki server, and the Helsinki server reaches it back."""
        return self.ping(host, HELSINKI_HOST, within=within) and self.ping(
            self.hosts["hel"], str(server.ip), within=within
        )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has already exited
    except OSError:
        return False


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for tool in ("ip", "wg", "wg-quick", "wireguard-go", "nft", "ping", "nsenter", "unshare", "sysctl", "ss"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.fail("the WireGuard integration test creates network namespaces and needs root")
    inventory = load_topology()
    scratch = tmp_path_factory.mktemp("wglab")
    scratch.chmod(0o700)
    lab = Lab(inventory, scratch)
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()


def _tunnel_name(server: Server) -> str:
    assert server.tunnel is not None
    return server.tunnel.interface


def test_every_local_server_reaches_helsinki_through_its_own_tunnel(lab: Lab) -> None:
    gw, hel = lab.hosts["gw"], lab.hosts["hel"]
    for i, server in enumerate(lab.locals):
        host = lab.hosts[f"l{i}"]
        interface = _tunnel_name(server)
        route = host.run("ip", "route", "get", HELSINKI_HOST).stdout
        assert f"dev {interface} " in route and f"src {server.ip}" in route, route
        assert lab.ping(host, HELSINKI_HOST, within=10), f"{server.name} cannot reach {HELSINKI_HOST}"
        # TCP both ways: Helsinki sees the local server's private address (not the tunnel address).
        assert lab.probe(host, HELSINKI_HOST, PROBE_PORT) == str(server.ip)
        assert lab.ping(hel, str(server.ip), within=5), f"Helsinki cannot reach {server.name} at {server.ip}"
        # And the traffic went through this server's own tunnel on the gateway.
        handshake = gw.run_mnt("wg", "show", interface, "latest-handshakes").stdout.split()
        assert len(handshake) == 2 and int(handshake[1]) > 0, f"no handshake on the gateway's {interface}"
    transfer = gw.run_mnt("wg", "show", "all", "transfer").stdout.splitlines()
    assert len(transfer) == len(lab.locals) and all(int(line.split()[2]) > 0 for line in transfer)


def test_gateway_drops_internet_traffic_into_helsinki_and_nats_helsinki_out(lab: Lab) -> None:
    inet, hel = lab.hosts["inet"], lab.hosts["hel"]
    # Helsinki's private servers reach the internet through the gateway's NAT (the internet host has
    # no route back to 10.1.0.0/16, so an answer proves the masquerade).
    assert lab.ping(hel, INTERNET_HOST, within=5)
    inet.ip("route", "add", "10.0.0.0/8", "via", GW_PUBLIC)
    try:
        assert not lab.ping(inet, HELSINKI_HOST, within=2), "the gateway forwards internet traffic into Helsinki"
        assert lab.probe(inet, HELSINKI_HOST, PROBE_PORT) == "timeout"
        assert not lab.ping(inet, str(lab.locals[0].ip), within=1), (
            "the gateway forwards internet traffic into a tunnel"
        )
    finally:
        inet.ip("route", "del", "10.0.0.0/8", "via", GW_PUBLIC)


def test_ssh_only_from_admin_networks(lab: Lab) -> None:
    inet, local0 = lab.hosts["inet"], lab.hosts["l0"]
    tunnel = lab.locals[0].tunnel
    assert tunnel is not None
    assert lab.probe(inet, GW_PUBLIC, wg.SSH_PORT, src=ADMIN_HOST) == ADMIN_HOST
    # Dropped, not refused: something listens there, only the firewall can make it time out.
    assert lab.probe(inet, GW_PUBLIC, wg.SSH_PORT, src=INTERNET_HOST) == "timeout"
    assert lab.probe(local0, GW_PUBLIC, wg.SSH_PORT) == "timeout"
    assert lab.probe(local0, str(tunnel.helsinki_ip), wg.SSH_PORT) == "timeout"
    # A port without a rule is dropped too (refused would mean no firewall).
    assert lab.probe(inet, GW_PUBLIC, 2222, src=ADMIN_HOST) == "timeout"


def test_gateway_drops_traffic_between_two_tunnels(lab: Lab) -> None:
    """A local server that tries to reach another one through Helsinki (here: local-app, its
    runtime state tampered with to send there) is stopped by the gateway's forward chain."""
    gw = lab.hosts["gw"]
    src_server, dst_server = lab.locals[0], lab.locals[1]
    src = lab.hosts["l0"]
    interface = _tunnel_name(src_server)
    gw_public = lab.keys[src_server.name].remote_public
    normal = ",".join(str(n) for n in wg.local_allowed_ips(src_server, lab.inventory))

    def dropped() -> int:
        out = gw.run("nft", "list", "counter", "inet", wg.NFT_TABLE, wg.TUNNEL_DROP_COUNTER).stdout
        match = re.search(r"\bpackets (\d+) bytes \d+", out)
        assert match, "the tunnel-to-tunnel counter is missing from the gateway's ruleset"
        return int(match.group(1))

    before = dropped()
    src.run_mnt("wg", "set", interface, "peer", gw_public, "allowed-ips", f"{normal},{dst_server.ip}/32")
    src.ip("route", "add", f"{dst_server.ip}/32", "dev", interface, "src", str(src_server.ip))
    try:
        assert not lab.ping(src, str(dst_server.ip), within=2)
        assert dropped() > before, "the tunnel-to-tunnel packets did not hit the gateway's drop rule"
    finally:
        src.ip("route", "del", f"{dst_server.ip}/32", "dev", interface, check=False)
        src.run_mnt("wg", "set", interface, "peer", gw_public, "allowed-ips", normal)
    assert lab.ping(src, HELSINKI_HOST, within=5)


def _drop_line(text: str, prefix: str) -> str:
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(prefix)]
    assert len(kept) == len(lines) - 1, f"expected exactly one line starting with {prefix!r}"
    return "".join(kept)


@pytest.mark.parametrize("mutation", ["local-peer-key", "gateway-allowed-ips", "local-route"])
def test_connectivity_breaks_when_an_artifact_is_wrong(lab: Lab, mutation: str) -> None:
    """The connectivity checks above would catch a wrong key, AllowedIPs entry or route: one
    rendered artifact is mutated, both ends restarted, and the tunnel must stop carrying traffic;
    with the artifacts restored it carries traffic again."""
    index = next(i for i, s in enumerate(lab.locals) if s.name == "local-mood")
    server = lab.locals[index]
    interface = _tunnel_name(server)
    local, gw = lab.hosts[f"l{index}"], lab.hosts["gw"]
    local_text, gw_text = local.configs[interface], gw.configs[interface]
    assert lab.reach(local, server, within=10)
    if mutation == "local-peer-key":
        # The gateway key of another tunnel: a well-formed key that is simply the wrong one.
        other = lab.keys[lab.locals[(index + 1) % len(lab.locals)].name].remote_public
        right = lab.keys[server.name].remote_public
        assert f"PublicKey = {right}\n" in local_text
        local_text = local_text.replace(f"PublicKey = {right}\n", f"PublicKey = {other}\n")
    elif mutation == "gateway-allowed-ips":
        tunnel = server.tunnel
        assert tunnel is not None
        line = f"AllowedIPs = {tunnel.local_ip}/32, {server.ip}/32\n"
        assert line in gw_text
        gw_text = gw_text.replace(line, f"AllowedIPs = {tunnel.local_ip}/32\n")
    else:
        local_text = _drop_line(local_text, f"PostUp = ip -4 route replace {wg.helsinki_ranges(lab.inventory)[0]} ")
    try:
        gw.restart(interface, gw_text)
        local.restart(interface, local_text)
        assert not lab.ping(local, HELSINKI_HOST, within=3), f"{mutation}: local -> Helsinki still works"
        assert not lab.ping(lab.hosts["hel"], str(server.ip), within=2), f"{mutation}: Helsinki -> local still works"
    finally:
        gw.restart(interface)
        local.restart(interface)
    assert lab.reach(local, server, within=10), "the restored artifacts did not bring the tunnel back"


def test_etcd_witness_tunnel_survives_losing_the_gateway(lab: Lab) -> None:
    witness = wg.witness_tunnel(lab.inventory)
    assert witness is not None
    etcd1, wit, gw = lab.local_host(witness.local.name), lab.hosts["wit"], lab.hosts["gw"]
    route = etcd1.run("ip", "route", "get", str(witness.remote.ip)).stdout
    assert f"dev {witness.interface} " in route and f"src {witness.local.ip}" in route, route
    assert lab.ping(etcd1, str(witness.remote.ip), within=10)
    assert lab.probe(wit, str(witness.local.ip), PROBE_PORT) == "refused", "witness -> etcd-1 not delivered"
    # Helsinki (the gateway) is lost: its public side goes dark.
    gw.ip("link", "set", "pub0", "down")
    try:
        assert not lab.ping(etcd1, HELSINKI_HOST, within=2), "the gateway was not actually cut off"
        assert lab.ping(etcd1, str(witness.remote.ip), within=5), "etcd-1 lost the witness with the gateway"
        assert lab.ping(wit, str(witness.local.ip), within=5), "the witness lost etcd-1 with the gateway"
    finally:
        gw.ip("link", "set", "pub0", "up")
    assert lab.ping(etcd1, HELSINKI_HOST, within=30)
