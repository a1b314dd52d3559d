"""Every server's user data, as the offline preview writes it, passes cloud-init's own schema check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from unde_infra.preview import prepare, run_stacks, write_results


@pytest.fixture(scope="module")
def preview_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    asyncio.set_event_loop(asyncio.new_event_loop())
    out = tmp_path_factory.mktemp("preview")
    write_results(run_stacks(prepare(["helsinki", "local"], None, 4)), out)
    return out


def test_every_user_data_is_valid_cloud_config(preview_dir: Path) -> None:
    cloud_init = require_tool("cloud-init")
    files = sorted(preview_dir.glob("*/artifacts/*/user-data.yaml"))
    # helsinki stack servers but production-db; local at 4 shards (8 and local-monitoring, + 4 pairs)
    assert len(files) == 19 + 17
    for path in files:
        result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stdout}{result.stderr}"
        assert "Valid cloud-config" in result.stdout


def test_the_schema_check_rejects_a_broken_config(tmp_path: Path) -> None:
    cloud_init = require_tool("cloud-init")
    broken = tmp_path / "user-data.yaml"
    broken.write_text("#cloud-config\nusers: 5\n")
    result = subprocess.run([cloud_init, "schema", "--config-file", str(broken)], capture_output=True, text=True)
    assert result.returncode != 0
