"""The units of the routing watcher and of the Master Encryption Key's presence collector, as
rendered, pass `systemd-analyze verify` (which warns on stderr about unknown keys, bad values and
commands that are not there); a broken one does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool
from unde_infra.model import Inventory
from unde_infra.render import shard_routing
from unde_infra.render.app_secrets import MEK_PRESENCE_UNIT, mek_presence_files
from unde_infra.render.postgres import NodeLayout


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)


def test_the_routing_watchers_unit(inventory: Inventory, tmp_path: Path) -> None:
    layout = NodeLayout(tools_dir=str(tmp_path), secrets_dir=str(tmp_path), systemd_dir=str(tmp_path),
                        textfile_dir=str(tmp_path))
    files = shard_routing.routing_files(inventory.shards[0], "replica", inventory.servers["local-redis"], "pw", layout)
    for path, rendered in files.items():
        Path(path).write_text(rendered.content)
    unit = tmp_path / f"{shard_routing.UNIT}.service"
    result = verify(unit)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    unit.write_text(unit.read_text().replace("Restart=always", "Restart=sometimes"))
    assert "Failed to parse service restart specifier" in verify(unit).stderr


def test_the_key_presence_collectors_units(tmp_path: Path) -> None:
    script = tmp_path / "mek-presence"
    files = mek_presence_files(str(tmp_path / "key"), str(tmp_path / "out.prom"), str(script))
    units = tmp_path / "units"
    units.mkdir()
    for path, text in files.items():
        target = units / Path(path).name if path.startswith("/etc/systemd") else Path(path)
        target.write_text(text)
    script.chmod(0o755)
    for suffix in ("service", "timer"):
        result = verify(units / f"{MEK_PRESENCE_UNIT}.{suffix}")
        assert result.returncode == 0 and result.stderr == "", result.stderr
    script.unlink()  # the command must exist: verify says so
    assert "mek-presence" in verify(units / f"{MEK_PRESENCE_UNIT}.service").stderr
