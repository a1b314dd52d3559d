#!/usr/bin/python3
"""pgBackRest runner of one stanza. Delivered by unde-infra; edits are overwritten.

  pgbackrest-run is-primary      exit 0 on the node that takes writes, 1 elsewhere
  pgbackrest-run stanza          create the stanza where it does not exist yet
  pgbackrest-run backup TYPE     full|diff|incr, only on the primary; then metrics
  pgbackrest-run metrics         write the textfile-collector metrics

Runs as root; pgBackRest and psql run as the postgres user, with this process's environment
(the repository keys that systemd read from the root-only environment file). Its parameters
are in the JSON file beside it (`<this file>.json`, rendered by unde-infra)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

BACKUP_TYPES = ("full", "diff", "incr")


def load_settings(path: str | None = None) -> dict[str, Any]:
    with open(path or os.path.abspath(__file__) + ".json", encoding="utf-8") as f:
        settings: dict[str, Any] = json.load(f)
    return settings


def exposition(stanza: str, entry: Mapping[str, Any] | None, names: Mapping[str, str]) -> tuple[str, int]:
    """The textfile metrics of a stanza from its `pgbackrest info` entry (None: unreadable),
    and whether the repository was read (1) or not (0)."""
    last = dict.fromkeys(BACKUP_TYPES, 0.0)
    size, count, ok = 0, 0, 0
    if entry is not None:
        ok = 1 if entry.get("status", {}).get("code") in (0, 2) else 0  # 2: no backup yet
        for backup in entry.get("backup", []):
            kind = backup.get("type")
            stop = float(backup.get("timestamp", {}).get("stop", 0))
            if kind in last:
                last[kind] = max(last[kind], stop)
            size += int(backup.get("info", {}).get("repository", {}).get("delta", 0))
            count += 1
    label = f'stanza="{stanza}"'
    last_name, size_name, count_name, ok_name = names["last"], names["size"], names["count"], names["ok"]
    lines = [
        f"# HELP {last_name} Stop time of the newest backup of each type (0 when there is none).",
        f"# TYPE {last_name} gauge",
        *(f'{last_name}{{{label},type="{kind}"}} {value:.0f}' for kind, value in sorted(last.items())),
        f"# HELP {size_name} Bytes the kept backups occupy in the repository (WAL archive not counted).",
        f"# TYPE {size_name} gauge",
        f"{size_name}{{{label}}} {size}",
        f"# HELP {count_name} Backups kept in the repository.",
        f"# TYPE {count_name} gauge",
        f"{count_name}{{{label}}} {count}",
        f"# HELP {ok_name} 1 when pgbackrest info read the stanza.",
        f"# TYPE {ok_name} gauge",
        f"{ok_name}{{{label}}} {ok}",
    ]
    return "\n".join(lines) + "\n", ok


class Runner:
    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    def as_postgres(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", self.settings["os_user"], "--"]
        return subprocess.run(prefix + args, **kwargs)

    def pgbackrest(self, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = ["pgbackrest", "--config=" + self.settings["config"], "--stanza=" + self.settings["stanza"], *args]
        return self.as_postgres(cmd, check=check, text=True, capture_output=capture, timeout=self.settings["timeout"])

    def info_entry(self) -> dict[str, Any] | None:
        """The stanza's entry of `pgbackrest info`, or None when the repository could not be read."""
        try:
            out = self.pgbackrest("--output=json", "--log-level-file=off", "info", check=False, capture=True)
            entries = json.loads(out.stdout)
        except (subprocess.SubprocessError, OSError, ValueError):
            return None
        return next((e for e in entries if e.get("name") == self.settings["stanza"]), None)

    def stanza_status(self) -> int | None:
        """pgBackRest's status code of the stanza (0 ok, 1 missing stanza path, 2 no backup yet,
        3 missing stanza data, ...), or None when the repository could not be read."""
        entry = self.info_entry()
        return None if entry is None else entry.get("status", {}).get("code")

    def ensure_stanza(self) -> int:
        """Create the stanza where it does not exist yet. stanza-create takes the archive lock,
        which the asynchronous archiver holds while it pushes (or retries) WAL: wait for it."""
        for _ in range(20):
            if self.stanza_status() not in (None, 1, 3):
                return 0
            created = self.pgbackrest("stanza-create", check=False)
            if created.returncode == 0:
                return 0
            if created.returncode != 50:  # 50: lock held by another pgBackRest process
                return created.returncode
            time.sleep(3)
        return 50

    def is_primary(self) -> bool:
        api = self.settings["patroni_api"]
        if api:
            # Patroni answers 200 on /primary only on the member that holds the leader lock.
            try:
                with urllib.request.urlopen(api + "/primary", timeout=5) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False
        s = self.settings
        out = self.as_postgres([s["psql"], "-h", s["socket_dir"], "-p", str(s["port"]), "-XAtqc",
                                "SELECT pg_is_in_recovery()"], text=True, capture_output=True, timeout=30)
        return out.returncode == 0 and out.stdout.strip() == "f"

    def metrics(self) -> int:
        text, ok = exposition(self.settings["stanza"], self.info_entry(), self.settings["metrics"])
        directory = self.settings["textfile_dir"]
        if not os.path.isdir(directory):
            return ok
        path = os.path.join(directory, self.settings["metrics_file"])
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # node_exporter never reads a half-written file
        return ok

    def backup(self, kind: str) -> int:
        if not self.is_primary():
            print("not the primary: no backup here", file=sys.stderr)
            self.metrics()
            return 0
        started = time.time()
        created = self.ensure_stanza()
        if created != 0:
            return created
        result = self.pgbackrest("--type=" + kind, "backup", check=False)
        self.metrics()
        print(f"{kind} backup of {self.settings['stanza']}: exit {result.returncode} after "
              f"{time.time() - started:.0f} s", file=sys.stderr)
        return result.returncode


def main(argv: Sequence[str], settings: Mapping[str, Any] | None = None) -> int:
    runner = Runner(settings if settings is not None else load_settings())
    command = argv[0] if argv else ""
    if command == "is-primary" and len(argv) == 1:
        return 0 if runner.is_primary() else 1
    if command == "stanza" and len(argv) == 1:
        return runner.ensure_stanza()
    if command == "metrics" and len(argv) == 1:
        runner.metrics()
        return 0
    if command == "backup" and len(argv) == 2 and argv[1] in BACKUP_TYPES:
        return runner.backup(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
