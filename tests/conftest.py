"""Shared fixtures. Tools the tests rely on are installed by `make test`; a missing tool fails
the test that needs it (it is never skipped as if it had passed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

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
def deployed_patroni() -> str:
    """The Patroni the servers run: the pinned version, installed into a virtualenv by the same
    script the servers run (files/patroni_install.sh, render/node_setup.patroni_install). Kept in
    /var/tmp between runs (the install is skipped when that version is there) and readable by the
    postgres user."""
    import os
    import subprocess
    import tempfile

    from unde_infra.render.node_setup import PATRONI_VERSION, patroni_install

    venv = f"/var/tmp/unde-patroni-{PATRONI_VERSION}"
    with tempfile.TemporaryDirectory() as tools:
        step = patroni_install(venv, path=f"{tools}/patroni-install")
        for path, text in step.files().items():
            Path(path).write_text(text)
        result = subprocess.run(["sh", step.path], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"installing Patroni {PATRONI_VERSION} failed:\n{result.stdout}{result.stderr}")
    os.chmod(venv, 0o755)
    return f"{venv}/bin/patroni"


# An admin key and network as a team would set them (not the committed placeholders).
TEAM_SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1ho4d0mZ2fJ9Fp3XhXqA5U2n0S2gk2U0m8Q5xS8Z2F admin@unde"
TEAM_ADMIN_CIDR = "145.40.64.0/24"


@pytest.fixture
def real_run_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stack config and topology with nothing left that blocks a real run
    (readiness.blockers): what the team fills in before its first `pulumi up`. The program then
    runs as it does under the CLI, enforcing readiness itself."""
    import yaml

    from unde_infra.model import DEFAULT_TOPOLOGY
    from unde_infra.settings import TOPOLOGY_OVERRIDE_ENV, read_stack_config

    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    for spec in data["servers"].values():
        if spec.get("existing") and "inbound" not in spec and "dedicated" not in spec:
            spec["inbound"] = []  # serves nothing publicly but SSH (the team checked)
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(TOPOLOGY_OVERRIDE_ENV, str(topology))
    inventory = load_topology(topology)

    def config(stack: str, **overrides: Any) -> dict[str, Any]:
        base = read_stack_config(stack)
        existing = [s.name for s in inventory.stack_servers(stack) if s.existing and s.dedicated is None]
        base.update(sshKeys=[TEAM_SSH_KEY], adminCidrs=[TEAM_ADMIN_CIDR], telegramChatId=-1001234567890,
                    importIds={name: str(5000 + i) for i, name in enumerate(existing, 1)})
        if stack == "helsinki":
            base.update(sshKeyImportIds={"0": "new"}, networkImport={"id": 4242, "subnets": ["10.1.0.0/24"]})
        else:
            base.update(dnsZone="unde.example", dnsZoneImport="new", acmeEmail="ops@unde.example")
        return {**base, **overrides}

    return config


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test without an `xdist_group` is in its file's group: `make test` runs the unit part
    with `--dist loadgroup`, so a file's module-scoped runs happen on one worker, and the files
    that share session runs (a group of their own) on one worker too."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


# Set before xdist reads the groups (its own hook of the same name adds them to the test ids).
pytest_collection_modifyitems = pytest.hookimpl(tryfirst=True)(pytest_collection_modifyitems)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under `--dist loadgroup` every test id carries its group: where one does not, xdist
    would hand the tests out one by one and run the shared runs on every worker, silently
    (pytest-dev/pytest-xdist#1386, with pytest 9.2)."""
    if session.config.getoption("dist", "no") != "loadgroup" or not hasattr(session.config, "workerinput"):
        return
    ungrouped = [item.nodeid for item in session.items if "@" not in item.nodeid]
    if ungrouped:
        raise pytest.UsageError(f"--dist loadgroup: xdist did not group {len(ungrouped)} tests, e.g. {ungrouped[0]}"
                                " (pytest-dev/pytest-xdist#1386)")


@pytest.fixture(scope="session")
def committed_previews(tmp_path_factory: pytest.TempPathFactory):
    """`unde-infra preview --stack all [ARGS]` of the committed configuration as its own process,
    by name: "a" and "b" (two previews of one commit), "two-shards" (`--shards 2`). Each is made
    once per session, when a test first asks, for the tests that only read what it printed and
    wrote (their files share the group "committed-previews")."""
    import sys

    arguments = {"a": [], "b": [], "two-shards": ["--shards", "2"]}
    made: dict[str, tuple[subprocess.CompletedProcess[str], Path]] = {}

    def preview(name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        if name not in made:
            out = tmp_path_factory.mktemp(f"preview-{name}") / "out"
            result = subprocess.run([sys.executable, "-m", "unde_infra", "preview", "--stack", "all", "--out", str(out),
                                     *arguments[name]], capture_output=True, text=True, cwd=ROOT, timeout=600)
            made[name] = (result, out)
        return made[name]

    return preview


@pytest.fixture(scope="session")
def shared_stack_runs() -> dict[tuple[Any, ...], Any]:
    """Runs of a stack (run_stack), by what they were run with: made once per session by the
    first test that asks, then read by every other."""
    return {}


@pytest.fixture(scope="session")
def default_preview_runs() -> dict[str, Any]:
    """Both stacks as `unde-infra preview` runs them (local reads what helsinki exported), as
    committed, by stack: run once per session for the tests that only read it."""
    import asyncio

    from unde_infra.gc_settings import quiet_gc
    from unde_infra.preview import prepare, run_stacks

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with quiet_gc(leave_frozen=True):
            return {r.run.stack: r for r in run_stacks(prepare(["helsinki", "local"], None, None))}
    finally:
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def run_stack(fresh_event_loop, shared_stack_runs, request):
    """Run the real program (__main__.py) offline as a stack, with stack-config overrides, under
    the offline runner's GC settings, its heap left frozen (gc_settings.quiet_gc: a worker's
    runs are freed when it exits, some 20 MB each). Tests only read results, so the session
    shares each run among the tests that ask for the same one: the same stack, shard count,
    overrides and topology text. A test that uses `monkeypatch` gets runs of its own: what it
    patches may change what the program does."""
    import hashlib
    import json

    from unde_infra.gc_settings import quiet_gc
    from unde_infra.preview import prepare, run_stacks

    def run(stack: str, shards: int | None = None, topology: Path | None = None, **overrides):
        text = hashlib.sha256(topology.read_bytes()).hexdigest() if topology is not None else None
        key = (stack, shards, text, json.dumps(overrides, sort_keys=True, default=str))
        shared = "monkeypatch" not in request.fixturenames
        if shared and key in shared_stack_runs:
            return shared_stack_runs[key]
        with quiet_gc(leave_frozen=True):
            (result,) = run_stacks(prepare([stack], topology, shards, config_overrides=overrides))
        if shared:
            shared_stack_runs[key] = result
        return result

    return run


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """`unde-infra ARGS` in this process, as the console script runs it (its heap left to the
    exit, as the other runs' of a test worker), with a fresh event loop:
    (exit code, stdout, stderr). An exception escapes, so a traceback fails the test; a usage
    error exits with argparse's status, as the command would."""
    import asyncio
    import contextlib
    import io

    from unde_infra.cli import main

    out, err = io.StringIO(), io.StringIO()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args, process_ends=True)
            except SystemExit as exit_:  # argparse's usage errors, as the process would exit
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    return code, out.getvalue(), err.getvalue()


def unde(*args: str) -> subprocess.CompletedProcess[str]:
    """`unde-infra ARGS` run in this process from the checkout (run_cli), its result shaped as
    a finished process's: for the tests of what a command prints and exits with (without an
    interpreter's start for each). tests/unit/test_cli.py runs the command as a process."""
    import contextlib

    with contextlib.chdir(ROOT):
        code, stdout, stderr = run_cli(list(args))
    return subprocess.CompletedProcess(["unde-infra", *args], code, stdout, stderr)


def project_copy(tmp: Path) -> Path:
    """A project directory with copies of the committed stack configs and topology, for
    `unde-infra preview --project-dir`."""
    project = tmp / "project"
    (project / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "topology.yaml", project / "config" / "topology.yaml")
    for stack in ("helsinki", "local"):
        shutil.copy(ROOT / f"Pulumi.{stack}.yaml", project / f"Pulumi.{stack}.yaml")
    return project
