"""The Master Encryption Key's presence, for the MasterEncryptionKeyMissing alert: the collector
(files/mek_presence.sh) run on fixture files, and which servers get it (every key holder, from
whichever stack builds it: the standby orchestrator from helsinki, the others from local)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from unde_infra.render.app_secrets import (
    MEK_PRESENCE_METRIC,
    MEK_PRESENCE_SCRIPT,
    MEK_PRESENCE_UNIT,
    MEK_TASKS,
    mek_presence_files,
)


def test_the_collector_reports_the_key_and_never_reads_it(tmp_path: Path) -> None:
    key, textfile = tmp_path / "master-encryption-key", tmp_path / "unde_mek_presence.prom"
    files = mek_presence_files(str(key), str(textfile), str(tmp_path / "mek-presence"))
    for path, text in files.items():
        if path.startswith(str(tmp_path)):
            Path(path).write_text(text)
    script = tmp_path / "mek-presence"

    def run() -> str:
        done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return textfile.read_text()

    assert f"{MEK_PRESENCE_METRIC} 0\n" in run()  # after a reboot: the tmpfs is empty
    key.write_text("c2VjcmV0LWtleS1ub3QtcmVhZA==\n")
    text = run()
    assert f"{MEK_PRESENCE_METRIC} 1\n" in text and "c2VjcmV0" not in text
    key.write_text("")  # an empty file is no key
    assert f"{MEK_PRESENCE_METRIC} 0\n" in run()
    assert not (tmp_path / "unde_mek_presence.prom.tmp").exists()


def test_every_key_holder_and_nothing_else_gets_the_collector(run_stack) -> None:
    holders = {}
    for stack in ("local", "helsinki"):
        result = run_stack(stack)
        for server, files in result.artifacts.items():
            if MEK_PRESENCE_SCRIPT in files:
                holders[server] = files
    assert set(holders) == {"local-orchestrator", "local-shard-0", "shard-replica-0", "standby-orchestrator"}
    assert MEK_TASKS == {"orchestrator", "standby-orchestrator", "shard", "shard-replica"}
    timer = holders["standby-orchestrator"][f"/etc/systemd/system/{MEK_PRESENCE_UNIT}.timer"]
    assert "OnUnitActiveSec=1min" in timer
