"""`unde-infra runbook`: the commands of a shard's point-in-time restore and of re-creating a
replica from the backup repository, printed for the shard and the target the operator names.

A restore's target must be one the backups reach: not in the future (PostgreSQL would end
recovery without reaching it, after Patroni was stopped and the shard's state removed) and after
the end of the oldest backup (pgBackRest picks the newest backup that ended before the target,
and stops when there is none). The oldest backup is read from `pgbackrest info --output=json`
(`--info-json`, which step 0 of the plan writes); without it, from the retention, as an estimate.
The plan says how ssh reaches each server, as `unde-infra ops` does.

The restore drill (tests/integration/test_restore_drill.py) runs the pgBackRest restore command
that `restore_command` renders, against a real S3 server, so the printed command is a tested one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import ops
from .model import DEFAULT_TOPOLOGY, Shard, load_topology
from .render.pgbackrest import ENV_FILE_NAME, FULL_BACKUP_INTERVAL_DAYS, RETENTION_FULL
from .render.postgres import DEFAULT_LAYOUT, NodeLayout

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def parse_time(text: str, option: str) -> datetime:
    """A time given on the command line; it must name its time zone, or a restore would use the server's."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{option}: not an ISO 8601 time: {text!r}") from exc
    if value.tzinfo is None:
        raise ValueError(f"{option}: give a time zone (e.g. {text}+00:00), got {text!r}")
    return value


def shown(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="seconds")


# ---------------------------------------------------------------------------------------------
# What the backups reach


@dataclass(frozen=True)
class BackupWindow:
    """How far back a restore reaches: a target must be after `oldest`; after `certain` it is
    reachable for sure (the same time when the repository was read, later for an estimate)."""

    oldest: datetime
    certain: datetime
    source: str
    estimate: bool


def window_from_retention(now: datetime) -> BackupWindow:
    """The retention keeps RETENTION_FULL weekly fulls: the oldest one is between one interval
    fewer and RETENTION_FULL intervals old, depending on the day."""
    interval = timedelta(days=FULL_BACKUP_INTERVAL_DAYS)
    return BackupWindow(
        now - RETENTION_FULL * interval, now - (RETENTION_FULL - 1) * interval,
        f"an estimate from the retention: {RETENTION_FULL} full backups kept, one every {FULL_BACKUP_INTERVAL_DAYS} days",
        estimate=True)


def _database(item: dict[str, Any]) -> tuple[Any, Any]:
    database = item.get("database") or {}
    return database.get("id"), database.get("repo-key")


def _wal_kept(backup: dict[str, Any], archive_min: dict[tuple[Any, Any], str]) -> bool:
    """The backup's first WAL segment is still in the archive (segment names sort in WAL order)."""
    first = (backup.get("archive") or {}).get("start")
    oldest_wal = archive_min.get(_database(backup))
    return first is None or oldest_wal is None or first >= oldest_wal


def window_from_info(info_json: str, stanza: str) -> BackupWindow:
    """The window `pgbackrest info --output=json` shows for `stanza` (pgBackRest 2.45-2.55: a list
    of stanzas, each with `backup[]` (`label`, `timestamp.start/stop` in epoch seconds, `archive.
    start/stop` WAL segments, `database.id/repo-key`), `archive[]` (`min`/`max` WAL segments per
    database) and `db[]` (the databases, the newest id the current one)); ValueError when it
    shows none."""
    not_info = "not the output of pgbackrest info --output=json"
    try:
        stanzas = json.loads(info_json)
        names = [str(s.get("name")) for s in stanzas]
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{not_info} ({error})") from error
    if stanza not in names:
        raise ValueError(f"no stanza {stanza} in it (stanzas: {', '.join(names) or 'none'})")
    entry = stanzas[names.index(stanza)]
    try:
        current: dict[Any, Any] = {}  # repository -> its newest database id (the stanza's PostgreSQL now)
        for db in entry.get("db", []):
            current[db["repo-key"]] = max(db["id"], current.get(db["repo-key"], db["id"]))

        def of_current(item: dict[str, Any]) -> bool:
            """Of today's PostgreSQL: a backup from before a stanza-upgrade would not start."""
            db_id, repo_key = _database(item)
            return bool(current.get(repo_key, db_id) == db_id)

        archives = [a for a in entry.get("archive", []) if of_current(a)]
        archive_min = {_database(a): a["min"] for a in archives if a.get("min")}
        backups = sorted((int(b["timestamp"]["stop"]), str(b["label"]))
                         for b in entry.get("backup", []) if of_current(b) and _wal_kept(b, archive_min))
        last_wal = max((str(a["max"]) for a in archives if a.get("max")), default=None)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{not_info} (stanza {stanza}: {error!r})") from error
    if not backups:
        status = entry.get("status") or {}
        raise ValueError(f"{stanza} has no backup to restore from (pgbackrest info: {status.get('message', 'no status')})")
    stop, label = backups[0]
    oldest = datetime.fromtimestamp(stop, tz=UTC)
    archived = f"; WAL archived up to {last_wal}" if last_wal else ""
    return BackupWindow(oldest, oldest, f"pgbackrest info: the oldest backup, {label}, ended then{archived}",
                        estimate=False)


def target_problems(target: datetime, now: datetime, window: BackupWindow | None) -> list[str]:
    """Why the backups cannot reach `target` (pgBackRest needs a backup that ended before it)."""
    if target > now:
        return [f"--target: {shown(target)} is in the future (now {shown(now)}): PostgreSQL would end "
                "recovery without reaching it, after Patroni was stopped and the shard's state removed"]
    if window is not None and target <= window.oldest:
        exact = "; --info-json with `pgbackrest info --output=json` (step 0) gives the exact time" if window.estimate else ""
        return [f"--target: {shown(target)} is older than the backups reach ({shown(window.oldest)}: "
                f"{window.source}{exact})"]
    return []


def restore_command(stanza: str, target: datetime, layout: NodeLayout = DEFAULT_LAYOUT,
                    data_dir: str | None = None) -> list[str]:
    """pgBackRest's point-in-time restore into `data_dir` (default: the node's own), promoting
    at the target so the restored cluster takes writes."""
    return [
        "pgbackrest", f"--config={layout.pgbackrest_config}", f"--stanza={stanza}",
        f"--pg1-path={data_dir or layout.data_dir}", "--delta", "--type=time",
        f"--target={target.isoformat(sep=' ')}", "--target-action=promote", "restore",
    ]


def info_command(stanza: str, layout: NodeLayout = DEFAULT_LAYOUT) -> list[str]:
    return ["pgbackrest", f"--config={layout.pgbackrest_config}", f"--stanza={stanza}", "info", "--output=json"]


def repository_keys(layout: NodeLayout) -> str:
    """The shell line that loads the repository's keys into the shell (pgBackRest reads them from there)."""
    return f"set -a; . {layout.secrets_dir}/{ENV_FILE_NAME}; set +a"


def _sh(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def info_file(shard: Shard) -> str:
    return f"{shard.scope}-backups.json"


def pitr_steps(shard: Shard, target: datetime, layout: NodeLayout = DEFAULT_LAYOUT) -> list[str]:
    primary, replica = shard.primary.name, shard.replica.name
    patronictl = f"{layout.patronictl} -c {layout.patroni_config}"
    return [
        f"# 1. Stop writes: on {replica}, then on {primary}:",
        "systemctl stop patroni",
        f"# 2. Forget the shard's cluster state in etcd (asks to type the cluster name), on {primary}:",
        f"{patronictl} remove {shard.scope}",
        f"# 3. Restore on {primary} (delta: only changed files are fetched):",
        f"{repository_keys(layout)}  # the repository keys, for this shell only",
        f"runuser -u postgres -- {_sh(restore_command(shard.scope, target, layout))}",
        f"# 4. Start Patroni on {primary}: PostgreSQL replays WAL to the target, promotes, takes the leader lock:",
        "systemctl start patroni",
        f"curl -fsS http://{shard.primary.ip}:{layout.patroni_port}/primary",
        "# 5. A new full backup: the restored cluster is on a new timeline.",
        "systemctl start unde-pgbackrest-backup@full.service",
        f"# 6. On {replica}: start Patroni; its timeline diverged, so it is rebuilt from the repository:",
        "systemctl start patroni",
        f"{patronictl} list {shard.scope}",
    ]


def restore_plan(shard: Shard, target: datetime, window: BackupWindow, reach: ops.Reach, local_jump: str | None,
                 layout: NodeLayout = DEFAULT_LAYOUT) -> list[str]:
    """The restore's steps, headed by what the backups reach and how ssh reaches each server;
    with an estimated window, step 0 reads the repository (for --info-json)."""
    servers = [shard.replica, shard.primary]
    routes = {server.name: reach.route(server) for server in servers}
    if window.estimate:
        reached = [f"# The backups reach back to a time between {shown(window.oldest)} and {shown(window.certain)} "
                   f"({window.source}); step 0 reads it."]
        if target <= window.certain:
            reached.append("# The target is in that span: run step 0 and check it with --info-json before step 1.")
    else:
        reached = [f"# The backups reach back to {shown(window.oldest)} ({window.source})."]
    lines = [
        *ops.jump_preamble(servers, reach, local_jump),
        f"# Point-in-time restore of {shard.scope} to {target.isoformat()}: everything written after it is lost.",
        *reached,
        "# The commands run as root on the server each step names; ssh opens a shell there:",
        *(f"#   {name}: {ops.login_line(route)}" for name, route in routes.items()),
    ]
    if window.estimate:
        info = f"{repository_keys(layout)}; runuser -u postgres -- {_sh(info_command(shard.scope, layout))}"
        lines += [f"# 0. From here: what the backups of {shard.scope} reach; then check the target with "
                  f"--info-json {info_file(shard)}:",
                  f"{ops.ssh_shell_line(routes[shard.primary.name], info)} > {info_file(shard)}"]
    return lines + pitr_steps(shard, target, layout)


def replica_steps(shard: Shard, layout: NodeLayout = DEFAULT_LAYOUT) -> list[str]:
    patronictl = f"{layout.patronictl} -c {layout.patroni_config}"
    return [
        f"# Re-create {shard.replica.name} from the backup repository (create_replica_methods: pgbackrest",
        "# first, so the copy comes from the bucket next door, not across the 120 ms link); on any member:",
        f"{patronictl} reinit --force {shard.scope} {shard.replica.name}",
        f"{patronictl} list {shard.scope}",
    ]


def restore_request(args: argparse.Namespace, shard: Shard) -> tuple[datetime | None, BackupWindow | None, list[str]]:
    """The target and the backups' window, and every reason the backups cannot reach the target."""
    problems: list[str] = []
    target = now = window = None
    if args.target is None:
        problems.append("--target: the restore needs a target time")
    else:
        try:
            target = parse_time(args.target, "--target")
        except ValueError as exc:
            problems.append(str(exc))
    try:
        now = parse_time(args.now, "--now") if args.now else datetime.now(UTC)
    except ValueError as exc:
        problems.append(str(exc))
    if args.info_json is not None:
        try:
            window = window_from_info(args.info_json.read_text(encoding="utf-8"), shard.scope)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--info-json: cannot read {args.info_json}: {exc.strerror if isinstance(exc, OSError) else exc}")
        except ValueError as exc:
            problems.append(f"--info-json: {exc}")
    elif now is not None:
        window = window_from_retention(now)
    if target is not None and now is not None:
        problems += target_problems(target, now, window)
    return target, window, problems


def cmd_runbook(args: argparse.Namespace) -> int:
    inventory = load_topology(args.topology)
    try:
        shard = ops.shard_of(inventory, args.shard)
    except ops.OpsError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.procedure == "replica":
        print("\n".join(replica_steps(shard)))
        return EXIT_OK
    target, window, problems = restore_request(args, shard)
    if problems or target is None or window is None:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        reach = ops.reach_from_stack_config(inventory)
        print("\n".join(restore_plan(shard, target, window, reach, args.local_jump)))
    except ops.OpsError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("runbook", help="commands for a shard's point-in-time restore or a replica from backup")
    parser.add_argument("procedure", choices=("restore", "replica"))
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--target", help="restore: the recovery target time, ISO 8601 with a time zone")
    parser.add_argument("--info-json", type=Path, default=None,
                        help="restore: `pgbackrest info --output=json` of the repository (step 0 writes it); "
                             "without it the oldest reachable time is estimated from the retention")
    parser.add_argument("--now", default=None,
                        help="restore: the time the target is judged against, ISO 8601 with a time zone "
                             "(default: this machine's clock)")
    ops.add_local_jump_argument(parser)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.set_defaults(func=cmd_runbook)
