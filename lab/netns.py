"""Network namespaces the lab creates, and sockets opened inside them.

A socket belongs to the namespace its thread was in when it was created, so a process in the
host's namespace can listen inside the lab (the archive proxy) without any route between the
lab and the host."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def run(args: Sequence[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def ip(namespace: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *(["-n", namespace] if namespace else []), *args], check=check)


def exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def create(name: str) -> None:
    if exists(name):
        delete(name)
    run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")


def delete(name: str) -> None:
    if exists(name):
        # Killing what still runs inside first: a namespace with processes lingers after `del`.
        pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "del", name], check=False)


def sysctl(namespace: str, key: str, value: str) -> None:
    run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", f"{key}={value}"])


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread inside namespace `name` (sockets made there stay there)."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)

