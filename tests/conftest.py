"""Shared fixtures. Tools the tests rely on are installed by `make test`; a missing tool fails
the test that needs it (it is never skipped as if it had passed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from unde_infra.model import Inventory, load_topology

ROOT = Path(__file__).resolve().parent.parent


def require_tool(name: str) -> str:
    """The absolute path of a command the test needs, or a failure naming the Debian package."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/lib/postgresql/15/bin") / name) if p.exists()), None
    )
    if path is None:
        pytest.fail(f"{name} is not installed; `make test` installs it (as root)")
    return path


@pytest.fixture(scope="session")
def inventory() -> Inventory:
    return load_topology()
