"""The `unde-infra` command as a person runs it: files written, summaries printed, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from unde_infra.model import DEFAULT_TOPOLOGY

ROOT = Path(__file__).resolve().parents[2]
EXPORT_KEYS = {"urn", "type", "custom", "parent", "inputs", "dependencies", "protect", "ignoreChanges",
               "retainOnDelete", "importId"}  # fmt: skip


def unde(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unde_infra", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_validate_prints_the_inventory() -> None:
    result = unde("validate")
    assert result.returncode == 0, result.stderr
    assert "servers: 31 (20 helsinki stack, 11 local stack; 16 existing, 15 to create)" in result.stdout
    assert "etcd placement three-sites" in result.stdout


# Every command but `preview` starts without the Pulumi SDK (about a second of imports).
SDK_FREE_COMMANDS = """
import contextlib, io, json, sys
from unde_infra.cli import main
commands = json.loads(sys.argv[1])
imported = []
for argv in commands:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code != 0:
        sys.exit(f"{argv}: exit {code}")
    if "pulumi" in sys.modules:
        imported.append(argv[0])
print(json.dumps(imported))
"""


def test_commands_other_than_preview_start_without_the_sdk(committed_previews, tmp_path: Path) -> None:
    require_tool("dot")  # diagram's SVG
    previews = [committed_previews(name)[1] for name in ("a", "b")]
    commands = [["validate"], ["scenarios"], ["cost"], ["plan", "--mau", "5000"],
                ["runbook", "restore", "--shard", "0", "--target", "2026-11-24 10:00:00+00:00", "--now", "2026-11-25T00:00Z"],
                ["diagram", "--out", str(tmp_path / "diagram")], ["ops", "switchover", "--shard", "0", "--to", "replica"],
                ["diff", *map(str, previews)]]
    result = subprocess.run([sys.executable, "-c", SDK_FREE_COMMANDS, json.dumps(commands)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# The previews of the committed configuration are shared with test_diff.py (conftest).
pytestmark = pytest.mark.xdist_group("committed-previews")


@pytest.fixture
def default_preview(committed_previews) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`unde-infra preview --stack all` of the committed configuration, run once for the tests
    that only read what it printed and wrote."""
    return committed_previews("a")


def test_preview_writes_resources_and_artifacts(default_preview: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = default_preview
    assert result.returncode == 0, result.stderr
    assert "helsinki: " in result.stdout and "local: " in result.stdout
    assert "servers: 19 hcloud (15 adopted, 4 created)" in result.stdout
    # The committed stack configs are not ready for a real run, and the preview says why.
    assert "  real run: BLOCKED by " in result.stdout
    assert "    importIds: running servers without their hcloud id: 15 (helsinki-gw, scraper, " in result.stdout
    assert "    Pulumi.helsinki.yaml: sshKeys[0]: a placeholder, not an admin's key" in result.stdout
    for stack in ("helsinki", "local"):
        resources = json.loads((out / stack / "resources.json").read_text())
        assert resources and all(EXPORT_KEYS <= set(entry) for entry in resources)
        names = {e["urn"].rsplit("::", 1)[1] for e in resources if e["type"] == "hcloud:index/server:Server"}
        for name in names:
            user_data = (out / stack / "artifacts" / name / "user-data.yaml").read_text()
            assert user_data.startswith("#cloud-config\n")
            assert yaml.safe_load(user_data)["hostname"] == name
    helsinki = json.loads((out / "helsinki" / "resources.json").read_text())
    gw = next(e for e in helsinki if e["urn"].endswith("Server::helsinki-gw"))
    from unde_infra.offline import stand_in_import_ids

    adopted = [e["urn"].rsplit("::", 1)[1] for e in helsinki if e["type"] == "hcloud:index/server:Server" and e["importId"]]
    assert gw["importId"] == stand_in_import_ids(adopted, [])["helsinki-gw"]  # derived from its name
    assert gw["protect"] is True and "userData" in gw["ignoreChanges"]
    posthog = next(e for e in helsinki if e["urn"].endswith("Server::posthog"))
    assert posthog["importId"] is None
    outputs = json.loads((out / "local" / "outputs.json").read_text())
    assert outputs["gatewayEndpoint"] == "46.62.233.30"  # from the helsinki run of the same preview


def test_preview_with_shards_option(tmp_path: Path) -> None:
    result = unde("preview", "--stack", "local", "--shards", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    resources = json.loads((tmp_path / "local" / "resources.json").read_text())
    pairs = [e for e in resources if e["type"] == "unde:local:ShardPair"]
    assert len(pairs) == 4
    assert not (tmp_path / "helsinki").exists()


def test_bad_topology_exits_2_with_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["servers"]["local-voice"]["ip"] = "10.2.0.11"
    data["servers"]["local-mood"]["size"] = {"vcpu": 32, "ram_gb": 8}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    for command in (["validate"], ["preview", "--stack", "all", "--out", str(out)]):
        result = unde(*command, "--topology", str(bad))
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[0] == f"{bad}: 2 problems"
        assert "  servers.local-voice.ip: 10.2.0.11 is already used by local-mood" in lines
        assert any(line.startswith("  servers.local-mood.size: over the local limit") for line in lines)
        assert "Traceback" not in result.stderr
    assert not out.exists()


def test_every_command_that_writes_files_reports_a_bad_out_as_out(tmp_path: Path) -> None:
    """One check (unde_infra/out_dir.py) for every command with `--out`: `--out: message`,
    exit 2, no traceback, nothing written or run."""
    import argparse

    from unde_infra.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    writing = sorted(name for name, parser in commands.items()
                     if any("--out" in action.option_strings for action in parser._actions))
    assert writing == ["diagram", "preview"]
    blocker = tmp_path / "file"
    blocker.write_text("keep me\n")
    for command in writing:
        for out in (blocker, blocker / "below"):
            result = unde(command, "--out", str(out))
            assert (result.returncode, result.stdout, result.stderr) == \
                (2, "", f"--out: {blocker} is a file, not a directory\n"), command
    assert blocker.read_text() == "keep me\n"


def test_bad_shard_count_exits_2() -> None:
    result = unde("validate", "--shards", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "--shards: the shard count is a whole number from 1 to 1024 (got 0)"


def test_runbook_prints_the_shards_restore_and_refuses_a_target_without_time_zone() -> None:
    restore = unde("runbook", "restore", "--shard", "0", "--target", "2026-11-24 10:00:00+00:00",
                   "--now", "2026-11-25 00:00:00+00:00")
    assert restore.returncode == 0, restore.stderr
    assert "--stanza=shard0" in restore.stdout and "--type=time" in restore.stdout
    assert "'--target=2026-11-24 10:00:00+00:00'" in restore.stdout and "patronictl" in restore.stdout
    assert "set -a; . /etc/unde/secrets/pgbackrest.env; set +a" in restore.stdout
    naive = unde("runbook", "restore", "--target", "2026-11-24 10:00")
    assert naive.returncode == 2 and "give a time zone" in naive.stderr
    assert unde("runbook", "restore", "--shard", "5", "--target", "2026-11-24T10:00Z").returncode == 2
    replica = unde("runbook", "replica", "--shard", "0")
    assert replica.returncode == 0 and "reinit --force shard0 shard-replica-0" in replica.stdout


def test_two_previews_of_one_commit_are_byte_identical(committed_previews) -> None:
    """Resource order, stand-in ids and addresses, dependencies: nothing depends on the order in
    which the SDK happened to register (nor on the processes' hash seeds), so a diff between two
    previews shows only real changes."""
    trees = []
    for result, out in (committed_previews("a"), committed_previews("b")):
        assert result.returncode == 0, result.stderr
        trees.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0].keys() == trees[1].keys()
    differing = [str(path) for path in trees[0] if trees[0][path] != trees[1][path]]
    assert differing == []
    assert len(trees[0]) > 100


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """`unde-infra scenarios --json | head -1`: the command ends quietly when its reader goes away."""
    process = subprocess.Popen([sys.executable, "-m", "unde_infra", "scenarios", "--json"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `head` does once it has its line (here: before the first)
    error = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in error and "BrokenPipeError" not in error
