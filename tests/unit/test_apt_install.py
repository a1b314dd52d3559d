"""files/apt_install.sh, the one script every day-2 install goes through, run with sh against
stand-ins for dpkg-query, apt-get, cloud-init and sleep that record how they were called."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from unde_infra.files import APT_INSTALL_SCRIPT, source

STUBS = {
    # Installed: whatever is listed in $STATE/installed.
    "dpkg-query": 'grep -qx "$3" "$STATE/installed" && echo "install ok installed" || exit 1',
    # apt-get update fails with the lists' lock as many times as $STATE/locked says, or with
    # $STATE/update-error; install records what it was asked.
    "apt-get": ('echo "apt-get $*" >> "$STATE/calls"\n'
                'case "$*" in *" update "*)\n'
                '  if [ -s "$STATE/update-error" ]; then cat "$STATE/update-error" >&2; exit 100; fi\n'
                '  n=$(cat "$STATE/locked" 2>/dev/null || echo 0)\n'
                '  if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$STATE/locked"; '
                'echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 7 (apt-get)" >&2; exit 100; fi;;\n'
                'esac'),
    "cloud-init": 'echo "cloud-init $*" >> "$STATE/calls"',
    "sleep": 'echo "sleep $*" >> "$STATE/calls"',
}


def run(tmp_path: Path, *packages: str, installed: tuple[str, ...] = (), locked: int = 0,
        update_error: str = "") -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    (tmp_path / "installed").write_text("".join(f"{p}\n" for p in installed))
    (tmp_path / "locked").write_text(str(locked))
    (tmp_path / "update-error").write_text(update_error)
    (tmp_path / "calls").write_text("")
    script = tmp_path / "apt-install"
    script.write_text(source(APT_INSTALL_SCRIPT))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(tmp_path)}
    result = subprocess.run(["sh", str(script), *packages], capture_output=True, text=True, env=env, timeout=30)
    return result, (tmp_path / "calls").read_text().splitlines()


def test_nothing_missing_touches_nothing(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "nftables", "redis-server", installed=("nftables", "redis-server"))
    assert result.returncode == 0 and calls == []


def test_what_is_missing_is_installed_after_cloud_init_and_a_fresh_update(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "nftables", "redis-server", installed=("nftables",))
    assert result.returncode == 0, result.stderr
    assert calls[0] == "cloud-init status --wait"
    assert calls[1] == "apt-get -o DPkg::Lock::Timeout=600 update -q"
    assert calls[2] == ("apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef "
                        "-o Dpkg::Options::=--force-confold install -y -q redis-server")
    assert len(calls) == 3


def test_the_lists_lock_is_waited_for(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "etcd-server", locked=2)
    assert result.returncode == 0, result.stderr
    assert [c for c in calls if c.startswith("sleep")] == ["sleep 10", "sleep 10"]
    assert calls[-1].endswith("install -y -q etcd-server")


@pytest.mark.parametrize("locked, status", [(29, 0), (30, 1)])
def test_the_wait_is_bounded(tmp_path: Path, locked: int, status: int) -> None:
    result, calls = run(tmp_path, "etcd-server", locked=locked)
    assert result.returncode == status
    assert any(c.endswith("install -y -q etcd-server") for c in calls) == (status == 0)


def test_another_update_failure_ends_at_once(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "pgbackrest", update_error="E: The repository 'http://deb.debian.org/debian bookworm "
                                                              "Release' does not have a Release file.")
    assert result.returncode == 1
    assert "does not have a Release file" in result.stderr
    assert not any(c.startswith("sleep") or " install " in c for c in calls)
