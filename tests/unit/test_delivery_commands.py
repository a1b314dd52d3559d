"""The delivery's command texts (unde_infra/render/delivery.py), run for real with `sh -c` on
paths under a temporary directory: a write that finds the file right changes nothing, a change
rewrites and marks, and an apply step runs only when marked and keeps the mark when it fails."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from unde_infra.render.delivery import apply_when_pending, marker_path, write_file

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def sh(text: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", text], input=stdin, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def target(tmp_path: Path) -> tuple[Path, Path, str]:
    """(the file, its marker, the exact command that writes it with mode 0600)."""
    path = tmp_path / "etc" / "unde" / "secrets" / "x.env"
    marker = Path(marker_path("unde.test.Host.apply", pending_dir=str(tmp_path / "pending")))
    return path, marker, write_file(str(path), "0600", OWNER, GROUP, str(marker))


def test_a_first_write_creates_the_file_with_its_mode_and_marks_its_apply(target) -> None:
    path, marker, text = target
    run = sh(text, "SECRET=1\n")
    assert run.returncode == 0, run.stderr
    assert path.read_text() == "SECRET=1\n" and oct(path.stat().st_mode & 0o7777) == "0o600"
    assert marker.exists() and run.stdout == f"written: {path}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.env"]  # no new file left beside it


def test_writing_the_same_content_again_changes_nothing(target) -> None:
    path, marker, text = target
    assert sh(text, "SECRET=1\n").returncode == 0
    marker.unlink()
    before = path.stat()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))  # an mtime a rewrite would change
    before = path.stat()
    run = sh(text, "SECRET=1\n")
    assert run.returncode == 0 and run.stdout == f"unchanged: {path}\n"
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (before.st_ino, before.st_mtime_ns, before.st_mode)
    assert not marker.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.env"]


def test_a_changed_content_or_mode_is_written_and_marked(target) -> None:
    path, marker, text = target
    assert sh(text, "SECRET=1\n").returncode == 0
    marker.unlink()
    inode = path.stat().st_ino
    assert sh(text, "SECRET=2\n").returncode == 0
    assert path.read_text() == "SECRET=2\n" and marker.exists() and path.stat().st_ino != inode
    marker.unlink()
    path.chmod(0o644)  # someone opened it up: the same content is written again, root-only
    assert sh(text, "SECRET=2\n").stdout == f"written: {path}\n"
    assert oct(path.stat().st_mode & 0o7777) == "0o600" and marker.exists()


def test_a_write_without_an_apply_step_leaves_no_marker(tmp_path: Path) -> None:
    path = tmp_path / "a" / "file"
    assert sh(write_file(str(path), "0644", OWNER, GROUP, None), "x\n").returncode == 0
    assert path.read_text() == "x\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_an_apply_step_runs_only_when_marked_and_keeps_the_mark_when_it_fails(tmp_path: Path) -> None:
    marker = tmp_path / "pending" / "unde.test.Host.apply"
    log = tmp_path / "log"
    succeeding = apply_when_pending(f"echo ran >> {log}", str(marker))
    run = sh(succeeding)
    assert run.returncode == 0 and not log.exists() and "nothing to apply" in run.stdout  # no marker: not run
    marker.parent.mkdir()
    marker.touch()
    failing = apply_when_pending(f"set -e\necho ran >> {log}\nfalse\necho after >> {log}\n", str(marker))
    run = sh(failing)
    assert run.returncode == 1 and log.read_text() == "ran\n" and marker.exists()  # the script's own set -e held
    assert sh(apply_when_pending(f"echo ran >> {log}\nexit 3", str(marker))).returncode == 3 and marker.exists()
    assert sh(succeeding).returncode == 0 and log.read_text() == "ran\nran\nran\n" and not marker.exists()


def test_the_command_texts_are_clean_posix_sh(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    script = tmp_path / "commands.sh"
    script.write_text(
        write_file("/etc/unde/secrets/x.env", "0600", "root", "root", marker_path("unde.test.Host.apply")) + "\n"
        + apply_when_pending("/usr/local/lib/unde/setup", marker_path("unde.test.Host.apply")) + "\n"
    )
    run = subprocess.run([shellcheck, "--shell=sh", "--severity=style", str(script)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout
