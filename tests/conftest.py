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


@pytest.fixture
def fresh_event_loop():
    """One event loop per test: the Pulumi SDK keeps per-loop state (outputs, RPCs)."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def run_stack(fresh_event_loop):
    """Run the real program (__main__.py) offline as a stack, with stack-config overrides."""
    from unde_infra.preview import prepare, run_stacks

    def run(stack: str, shards: int | None = None, topology: Path | None = None, **overrides):
        (result,) = run_stacks(prepare([stack], topology, shards, config_overrides=overrides))
        return result

    return run
