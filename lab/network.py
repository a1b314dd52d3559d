"""The lab's networks, on namespaces of its own, with the topology's addresses.

Three hubs play what the providers give:
- `inet`, the internet: every public address on one bridge behind Hetzner's public gateway
  (172.31.1.1 and fe80::1, as on hcloud), the archive proxy, and the operator who runs the
  delivery from an address of the stacks' adminCidrs;
- `hel`, the Helsinki private network (hcloud): the network's gateway and the routes the
  program registers (the local and tunnel ranges, and the default route, via helsinki-gw);
- `sin`, the local site's private network.
Each server gets a namespace with `eth0` (public, where it has an address) and `enp7s0`
(private), addressed as hcloud's DHCP addresses them: a /32 and an on-link route to the
gateway, and the network's range through it. Nothing in the lab has a route to the host or
beyond: the only way out is the proxy, which listens inside `inet`."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import netns

PREFIX = "unde-lab"
# The hub of the local site's private network: its servers are the far side of the WAN.
LOCAL_HUB = "sin"
PUBLIC_GATEWAY4 = "172.31.1.1"
PUBLIC_GATEWAY6 = "fe80::1"
# The archive proxy and the operator, on the lab's internet.
PROXY4 = "203.0.113.250"
PROXY6 = "2001:db8:ff::250"
PROXY_PORT = 3142
PROXY_NAME = "archive-proxy.unde-lab"
# The object storage endpoint's stand-in (lab/s3.py), on the lab's internet.
S3_ADDRESS = "203.0.113.251"
S3_ADDRESS6 = "2001:db8:ff::251"


@dataclass
class LabHost:
    name: str
    image: str  # debian-12 or debian-13
    network: str  # the hub of its private network: hel or sin
    private: str
    public4: str | None = None
    public6: str | None = None
    user_data: str | None = None  # None: an adopted server, booted as it is
    stack: str = ""  # the stack that creates it ("": it runs already)
    namespace: str = ""


@dataclass
class PrivateNetwork:
    hub: str
    ip_range: str
    gateway: str
    routes: list[tuple[str, str]] = field(default_factory=list)  # (destination, via)


@dataclass
class LabNetwork:
    hosts: list[LabHost]
    networks: list[PrivateNetwork]
    operator4: str
    prefix: str = PREFIX
    created: list[str] = field(default_factory=list)
    # The WAN relay between the local site and the others (lab/wan_relay.py), while it runs.
    wan: subprocess.Popen[str] | None = None
    wan_control: str = ""
    wan_log: TextIO | None = None

    def namespace(self, hub: str) -> str:
        return f"{self.prefix}-{hub}"

    @property
    def operator(self) -> str:
        return self.namespace("admin")

    @property
    def inet(self) -> str:
        return self.namespace("inet")

    def up(self) -> None:
        self._check_addresses()
        for hub in ["inet", *(n.hub for n in self.networks)]:
            self._hub(hub)
        netns.ip(self.inet, "addr", "add", f"{PUBLIC_GATEWAY4}/32", "dev", "br0")
        netns.ip(self.inet, "addr", "add", f"{PUBLIC_GATEWAY6}/64", "dev", "br0")
        netns.ip(self.inet, "addr", "add", f"{PROXY4}/32", "dev", "br0")
        netns.ip(self.inet, "addr", "add", f"{PROXY6}/128", "dev", "br0", "nodad")
        netns.ip(self.inet, "addr", "add", f"{S3_ADDRESS}/32", "dev", "br0")
        netns.ip(self.inet, "addr", "add", f"{S3_ADDRESS6}/128", "dev", "br0", "nodad")
        for network in self.networks:
            ns = self.namespace(network.hub)
            prefix = ipaddress.ip_network(network.ip_range).prefixlen
            netns.ip(ns, "addr", "add", f"{network.gateway}/{prefix}", "dev", "br0")
        for index, host in enumerate(self.hosts):
            host.namespace = f"{self.prefix}-h{index}"
            self._host(index, host)
        # Routes through hosts come last: a route's gateway must be reachable when it is added.
        for network in self.networks:
            for destination, via in network.routes:
                netns.ip(self.namespace(network.hub), "route", "replace", destination, "via", via, "dev", "br0", "onlink")
        self._operator()

    def site_addresses(self) -> tuple[list[str], list[str]]:
        """The public addresses of the local site's servers, and of everything far from it: every
        other server and the object storage (Hetzner's, in Europe: the local site's WAL archive
        crosses the distance too)."""
        local = [a for h in self.hosts if h.network == LOCAL_HUB for a in (h.public4, h.public6) if a]
        others = [a for h in self.hosts if h.network != LOCAL_HUB for a in (h.public4, h.public6) if a]
        return local, others + [S3_ADDRESS, S3_ADDRESS6]

    def start_wan(self, run_dir: Path, delay_ms: float) -> None:
        """The distance between the sites: every packet between a local server's public address
        and another server's crosses the relay in `inet`, `delay_ms` each way."""
        local, others = self.site_addresses()
        self.wan_control = str(run_dir / "wan.sock")
        self.wan_log = open(run_dir / "wan-relay.log", "w")  # noqa: SIM115 - the relay's for as long as it runs
        self.wan = subprocess.Popen(
            [sys.executable, "-m", "lab.wan_relay", "--namespace", self.inet, "--site-a", ",".join(local),
             "--site-b", ",".join(others), "--delay-ms", str(delay_ms), "--control", self.wan_control],
            cwd=Path(__file__).resolve().parent.parent, stdout=self.wan_log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.wan_control):
            if self.wan.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the WAN relay did not start: {(run_dir / 'wan-relay.log').read_text()[-500:]}")
            time.sleep(0.1)

    def stop_wan(self) -> None:
        if self.wan is not None:
            self.wan.terminate()
            self.wan.wait(timeout=30)
            self.wan = None
        if self.wan_log is not None:
            self.wan_log.close()
            self.wan_log = None

    def down(self) -> None:
        self.stop_wan()
        for name in reversed(self.created):
            netns.delete(name)
        self.created.clear()

    def _check_addresses(self) -> None:
        seen: dict[str, str] = {}
        for host in self.hosts:
            for address in (host.private, host.public4, host.public6):
                if address is None:
                    continue
                if address in seen and seen[address] != host.name:
                    raise ValueError(f"{host.name}: address {address} is {seen[address]}'s too")
                if address in (PROXY4, PROXY6, S3_ADDRESS, S3_ADDRESS6, self.operator4):
                    raise ValueError(f"{host.name}: address {address} is the lab's own")
                seen[address] = host.name

    def _new_namespace(self, name: str) -> None:
        netns.create(name)
        self.created.append(name)

    def _hub(self, hub: str) -> None:
        ns = self.namespace(hub)
        self._new_namespace(ns)
        netns.ip(ns, "link", "add", "br0", "type", "bridge")
        netns.ip(ns, "link", "set", "br0", "up")
        netns.sysctl(ns, "net.ipv4.ip_forward", "1")
        netns.sysctl(ns, "net.ipv6.conf.all.forwarding", "1")

    def _link(self, hub: str, host_ns: str, outside: str, inside: str) -> None:
        """A veth from the hub's bridge into the host's namespace, named `inside` there."""
        ns = self.namespace(hub)
        netns.ip(ns, "link", "add", outside, "type", "veth", "peer", "name", "tmp-" + outside)
        netns.ip(ns, "link", "set", "tmp-" + outside, "netns", host_ns)
        netns.ip(host_ns, "link", "set", "tmp-" + outside, "name", inside)
        netns.ip(ns, "link", "set", outside, "master", "br0", "up")
        netns.ip(host_ns, "link", "set", inside, "up")

    def _host(self, index: int, host: LabHost) -> None:
        self._new_namespace(host.namespace)
        network = next(n for n in self.networks if n.hub == host.network)
        self._link(network.hub, host.namespace, f"v{index}", "enp7s0")
        netns.ip(host.namespace, "addr", "add", f"{host.private}/32", "dev", "enp7s0")
        netns.ip(host.namespace, "route", "add", network.gateway, "dev", "enp7s0", "scope", "link")
        netns.ip(host.namespace, "route", "add", network.ip_range, "via", network.gateway, "dev", "enp7s0")
        netns.ip(self.namespace(network.hub), "route", "replace", f"{host.private}/32", "dev", "br0")
        if host.public4 or host.public6:
            self._link("inet", host.namespace, f"p{index}", "eth0")
        if host.public4:
            netns.ip(host.namespace, "addr", "add", f"{host.public4}/32", "dev", "eth0")
            netns.ip(host.namespace, "route", "add", PUBLIC_GATEWAY4, "dev", "eth0", "scope", "link")
            netns.ip(host.namespace, "route", "add", "default", "via", PUBLIC_GATEWAY4, "dev", "eth0")
            netns.ip(self.inet, "route", "replace", f"{host.public4}/32", "dev", "br0")
        if host.public6:
            netns.ip(host.namespace, "addr", "add", f"{host.public6}/64", "dev", "eth0", "nodad")
            netns.ip(host.namespace, "-6", "route", "add", "default", "via", PUBLIC_GATEWAY6, "dev", "eth0")
            netns.ip(self.inet, "-6", "route", "replace", f"{host.public6}/128", "dev", "br0")

    def _operator(self) -> None:
        self._new_namespace(self.operator)
        self._link("inet", self.operator, "op0", "eth0")
        netns.ip(self.operator, "addr", "add", f"{self.operator4}/32", "dev", "eth0")
        netns.ip(self.operator, "route", "add", PUBLIC_GATEWAY4, "dev", "eth0", "scope", "link")
        netns.ip(self.operator, "route", "add", "default", "via", PUBLIC_GATEWAY4, "dev", "eth0")
        netns.ip(self.inet, "route", "replace", f"{self.operator4}/32", "dev", "br0")
