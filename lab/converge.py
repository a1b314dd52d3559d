"""`make converge`: build the default topology's servers for real and report.

Steps: preview both stacks offline (with the lab operator's key as the admin key); build or
reuse the releases' roots; lay the networks; boot every server from its user data; deliver
the helsinki stack, then the local stack, as the deploy pipeline runs them; check each role as
an operator would; deliver everything again and count what changed; reboot; change one file
and deliver what pulumi would run again. The last line printed is the summary; the exit status
is non-zero on any failed command or check."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import apt_proxy, netns, roots
from .containers import Container
from .delivery import DeliveryRun, Operator, deliver, per_server
from .network import PREFIX, PROXY4, PROXY6, PROXY_NAME, PROXY_PORT, LabNetwork
from .servers import LabPreview, run_preview

CACHE = Path("/var/tmp/unde-lab")
OPERATOR_ADDRESS = "198.51.100.10"  # inside the stacks' adminCidrs (198.51.100.0/24)


@dataclass
class Lab:
    run_dir: Path
    preview: LabPreview
    network: LabNetwork
    operator: Operator
    admin_key: str
    containers: dict[str, Container] = field(default_factory=dict)
    proxies: list[object] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log.append(line)
        print(line, flush=True)


def _keypair(run_dir: Path) -> tuple[Path, str]:
    key = run_dir / "operator_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "unde-lab-operator", "-f", str(key)], check=True)
    return key, (run_dir / "operator_ed25519.pub").read_text().strip()


def _proxy_in(namespace: str | None, host: str, port: int) -> tuple[object, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if namespace:
        with netns.entered(namespace):
            sock = socket.socket(family, socket.SOCK_STREAM)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(256)
    server = apt_proxy.serve(sock, CACHE / "apt-proxy")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, sock.getsockname()[1]


def build_lab(run_dir: Path, config_overrides: dict[str, object] | None = None) -> Lab:
    run_dir.mkdir(parents=True, exist_ok=True)
    key, public = _keypair(run_dir)
    preview = run_preview(public, config_overrides)
    network = LabNetwork(preview.hosts, preview.networks, OPERATOR_ADDRESS)
    lab = Lab(run_dir, preview, network, Operator(network.operator, key), public)
    return lab


def start(lab: Lab) -> None:
    lab.say(f"network: {len(lab.preview.hosts)} servers, hubs {[n.hub for n in lab.preview.networks]} + inet")
    lab.network.up()
    host_proxy, host_port = _proxy_in(None, "127.0.0.1", 0)
    lab.proxies.append(host_proxy)
    for address in (PROXY4, PROXY6):
        lab.proxies.append(_proxy_in(lab.network.inet, address, PROXY_PORT)[0])
    images = sorted({h.image for h in lab.preview.hosts})
    built = {}
    for image in images:
        started = time.monotonic()
        built[image] = roots.build(image, CACHE / "roots", f"http://127.0.0.1:{host_port}",
                                   f"http://{PROXY_NAME}:{PROXY_PORT}", f"{PROXY4} {PROXY_NAME}\n{PROXY6} {PROXY_NAME}\n",
                                   lab.run_dir / "roots.log")
        lab.say(f"root {image}: {built[image].path.name} ({time.monotonic() - started:.0f} s)")
    for host in lab.preview.hosts:
        container = Container(host, built[host.image], lab.run_dir / "servers" / host.name, lab.admin_key)
        lab.containers[host.name] = container


def stop(lab: Lab) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda c: c.stop(timeout=60), lab.containers.values()))
    for container in lab.containers.values():
        container.remove_disk()
    for proxy in lab.proxies:
        proxy.shutdown()  # type: ignore[attr-defined]
    lab.network.down()


def boot_all(lab: Lab, names: list[str] | None = None) -> dict[str, float]:
    """Boots the servers (all at once, as a `pulumi up` creates them) and waits for each to
    finish booting; seconds from start to booted, per server."""
    chosen = [lab.containers[n] for n in (names or list(lab.containers))]
    started = time.monotonic()
    for container in chosen:
        if container.process is None or container.process.poll() is not None:
            if container.boots == 0:
                container.prepare()
            container.boot()

    def wait(container: Container) -> tuple[str, str, float]:
        state = container.wait_booted()
        return container.host.name, state, time.monotonic() - started

    booted = {}
    with ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
        for name, state, seconds in pool.map(wait, chosen):
            booted[name] = seconds
            if state not in ("running", "degraded"):
                lab.say(f"BOOT {name}: {state} after {seconds:.0f} s (console: {lab.containers[name].console})")
    return booted


def deliver_stacks(lab: Lab, only: set[str] | None = None) -> dict[str, DeliveryRun]:
    runs = {}
    for stack, commands in lab.preview.plans:
        lab.say(f"deliver {stack}: {len(commands) if only is None else len([c for c in commands if c.urn in only])} commands")
        run = deliver(commands, lab.operator, None if only is None else [c.urn for c in commands if c.urn in only])
        runs[stack] = run
        worst = max(run.peak.items(), key=lambda item: item[1], default=("-", 0))
        lab.say(f"deliver {stack}: {len(run.ran())} ran, {len(run.failed)} failed, {len(run.skipped)} skipped in "
                f"{run.seconds:.0f} s; most at once to one endpoint {worst[1]} ({worst[0]})")
        for outcome in run.failed:
            lab.say(f"  FAILED {outcome.server}: {outcome.name}: exit {outcome.exit_code}: {outcome.reason}")
    return runs


def clean(run_dir: Path) -> None:
    """What an earlier run left (one stopped by force): its containers, disks and namespaces."""
    for pid in netns.run(["pgrep", "-f", f"systemd-nspawn --boot .* -D {run_dir}/"], check=False).stdout.split():
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    time.sleep(1)
    servers = run_dir / "servers"
    if servers.is_dir():
        for server in servers.iterdir():
            if (server / "root").is_mount():
                netns.run(["umount", "-l", str(server / "root")], check=False)
        shutil.rmtree(servers, ignore_errors=True)
    for name in netns.run(["ip", "netns", "list"], check=False).stdout.split("\n"):
        name = name.split(" ")[0]
        if name.startswith(PREFIX + "-"):
            netns.delete(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make converge", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=CACHE / "run")
    parser.add_argument("--keep", action="store_true", help="leave the servers running (for a look inside)")
    parser.add_argument("--clean", action="store_true", help="only remove what an earlier run left")
    args = parser.parse_args(argv)
    started = time.monotonic()
    clean(args.run_dir)
    if args.clean:
        return 0
    lab = build_lab(args.run_dir)
    status = 1
    try:
        start(lab)
        booted = boot_all(lab)
        lab.say(f"booted {len(booted)} servers, slowest {max(booted.values()):.0f} s")
        runs = deliver_stacks(lab)
        failed = sum(len(r.failed) for r in runs.values())
        figures = {stack: {"run": run.to_json(), "servers": per_server(run)} for stack, run in runs.items()}
        (lab.run_dir / "figures.json").write_text(json.dumps({"booted": booted, "delivery": figures}, indent=1))
        status = 0 if failed == 0 else 1
        print(f"converge: {len(booted)} servers, {failed} failed commands in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if not args.keep:
            stop(lab)
    return status


if __name__ == "__main__":
    sys.exit(main())
