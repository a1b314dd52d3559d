"""One systemd container a server: the release's root under an overlay, booted with
systemd-nspawn on the server's own network namespace, seeded the way its cloud seeds it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import netns
from .network import LabHost
from .roots import Root

BOOT_TIMEOUT = 900.0


def cgroup_hierarchies() -> list[Path]:
    """Where the containers' cgroups go: a hybrid layout's unified and systemd hierarchies, or
    a unified-only /sys/fs/cgroup."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.procs").exists():
        return [root]
    return [root / "unified", root / "systemd"]
# What the container's PID 1 needs from this machine: nspawn cannot register with machined
# here (PID 1 is no systemd), and wireguard-go needs the TUN device.
# /proc/sys/net is the server's own (its namespace): writable, as on a VM, for the gateway's
# forwarding sysctls.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}


def exec_in(leader: int, *command: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`command` inside the container whose init is `leader`, in all its namespaces."""
    return subprocess.run(["nsenter", "-t", str(leader), "-a", *command], capture_output=True, text=True,
                          timeout=timeout, input=stdin)


@dataclass
class Container:
    host: LabHost
    root: Root
    run_dir: Path
    admin_key: str  # the operator's public key: hcloud's ssh_keys, put in root's authorized_keys
    process: subprocess.Popen[bytes] | None = None
    boots: int = 0
    first_boot: float = 0.0  # time.monotonic() of its first boot
    console: Path = field(init=False)

    def __post_init__(self) -> None:
        self.console = self.run_dir / "console.log"

    @property
    def merged(self) -> Path:
        return self.run_dir / "root"

    def prepare(self) -> None:
        """The server's disk: an overlay on the release's root, seeded as its cloud would."""
        self.remove_disk()
        for part in ("upper", "work", "root"):
            (self.run_dir / part).mkdir(parents=True, exist_ok=True)
        netns.run(["mount", "-t", "overlay", "overlay", "-o",
                   f"lowerdir={self.root.path},upperdir={self.run_dir / 'upper'},workdir={self.run_dir / 'work'}",
                   str(self.merged)])
        root = self.merged
        (root / "etc/hostname").write_text(self.host.name + "\n")
        if self.host.user_data is None:
            # An adopted server runs already: cloud-init did its work long ago, and its admin
            # key is in place.
            (root / "etc/cloud/cloud-init.disabled").write_text("adopted: booted as it runs today\n")
            keys = root / "root/.ssh"
            keys.mkdir(mode=0o700, parents=True, exist_ok=True)
            (keys / "authorized_keys").write_text(self.admin_key + "\n")
            os.chmod(keys / "authorized_keys", 0o600)
        else:
            seed = root / "var/lib/cloud/seed/nocloud"
            seed.mkdir(parents=True, exist_ok=True)
            # hcloud's metadata: the instance, its name and the stack's SSH keys (for root).
            (seed / "meta-data").write_text(
                f"instance-id: {self.host.name}\nlocal-hostname: {self.host.name}\npublic-keys:\n  - {self.admin_key}\n")
            (seed / "user-data").write_text(self.host.user_data)

    def install_offline(self, packages: tuple[str, ...], proxy: str) -> None:
        """Packages installed into the disk before the server boots (what an adopted server runs
        already), with no service started (policy-rc.d says no, as in a chroot build)."""
        policy = self.merged / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        try:
            for args in (["update", "-q"], ["install", "-y", "-q", *packages]):
                # nspawn without --boot: /proc and /dev in place, this machine's network (the proxy).
                subprocess.run(["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--timezone=off",
                                "--resolv-conf=off", "-D", str(self.merged), "--setenv=DEBIAN_FRONTEND=noninteractive",
                                "apt-get", "-o", f"Acquire::http::Proxy={proxy}", *args],
                               check=True, capture_output=True, timeout=600, stdin=subprocess.DEVNULL,
                               env={**os.environ, **NSPAWN_ENV})
        finally:
            policy.unlink()

    def _own_cgroup(self) -> None:
        """Runs in the child before nspawn starts: a cgroup of its own in the unified and the
        systemd hierarchies. nspawn --keep-unit builds the container's tree under the cgroup it
        starts in; containers that share one would share their units' cgroups too (one
        container's `systemctl restart etcd` would kill another's etcd), and their managers fail
        units with 219/CGROUP as they step on each other."""
        for hierarchy in cgroup_hierarchies():
            group = hierarchy / "unde-lab" / self.host.name
            if hierarchy.is_dir():
                group.mkdir(parents=True, exist_ok=True)
                (group / "cgroup.procs").write_text(str(os.getpid()))

    def boot(self) -> None:
        self.boots += 1
        if self.boots == 1:
            self.first_boot = time.monotonic()
        out = self.console.open("ab")
        self.process = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet", "-D", str(self.merged),
             f"--network-namespace-path=/run/netns/{self.host.namespace}", f"--machine={self.host.name}",
             # Its own network namespace: the capability a VM's root has there (routes, tunnels,
             # forwarding), which nspawn grants only to the networks it makes itself. The console
             # is copied to console.log (`passive` leaves it unread, and PID 1 blocks on it once
             # its buffer is full).
             "--capability=CAP_NET_ADMIN", "--bind=/dev/net/tun", "--console=read-only",
             # The server's own clock zone and resolver files, writable as on a VM (tzdata's
             # postinst replaces /etc/localtime).
             "--timezone=off", "--resolv-conf=off"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **NSPAWN_ENV}, start_new_session=True, preexec_fn=self._own_cgroup,
        )

    def leader(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return None
        return int(pids[0]) if pids else None

    def exec(self, *command: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        leader = self.leader()
        if leader is None:
            raise RuntimeError(f"{self.host.name}: container is not running")
        return exec_in(leader, *command, timeout=timeout, stdin=stdin)

    def wait_sshd(self, timeout: float = BOOT_TIMEOUT) -> bool:
        """Waits until sshd listens: what a `pulumi up` waits for before its commands dial (the
        server resource is done once it runs; cloud-init may still be at work)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leader() is not None:
                try:
                    if self.exec("ss", "-Hltn", "sport = :22", timeout=10).stdout.strip():
                        return True
                except (subprocess.TimeoutExpired, RuntimeError):
                    pass
            elif self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(1)
        return False

    def wait_booted(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Waits until systemd has finished starting up (and cloud-init with it); the state."""
        deadline = time.monotonic() + timeout
        state = "no container"
        while time.monotonic() < deadline:
            if self.leader() is not None:
                try:
                    state = self.exec("systemctl", "is-system-running", timeout=10).stdout.strip()
                except (subprocess.TimeoutExpired, RuntimeError):
                    state = "unknown"
                if state in ("running", "degraded"):
                    break
            elif self.process is not None and self.process.poll() is not None:
                return f"exited with {self.process.returncode}"
            time.sleep(1)
        if self.host.user_data is not None and state in ("running", "degraded"):
            self.exec("cloud-init", "status", "--wait", timeout=max(10.0, deadline - time.monotonic()))
        return state

    def reboot(self, timeout: float = 120) -> None:
        """`systemctl reboot` inside; nspawn exits with 133 then, and the lab boots it again
        (what systemd-nspawn@.service does with RestartForceExitStatus=133)."""
        self.exec("systemctl", "reboot", timeout=30)
        self._wait_exit(timeout)
        self.boot()

    def stop(self, timeout: float = 60) -> None:
        if self.leader() is not None:
            try:
                self.exec("systemctl", "poweroff", timeout=20)
            except (subprocess.TimeoutExpired, RuntimeError):
                pass
        self._wait_exit(timeout)

    def _wait_exit(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def remove_disk(self) -> None:
        if self.merged.is_mount():
            netns.run(["umount", "-l", str(self.merged)], check=False)
        for part in ("upper", "work", "root"):
            shutil.rmtree(self.run_dir / part, ignore_errors=True)
