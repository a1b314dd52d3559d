"""`unde-infra runbook`: the commands of a shard's point-in-time restore and of re-creating a
replica from the backup repository, printed for the shard and the target the operator names.

The restore drill (tests/integration/test_restore_drill.py) runs the pgBackRest restore command
that `restore_command` renders, against a real S3 server, so the printed command is a tested one.
"""

from __future__ import annotations

import argparse
import shlex
from datetime import datetime
from pathlib import Path

from .model import DEFAULT_TOPOLOGY, Shard, load_topology
from .render.pgbackrest import ENV_FILE_NAME
from .render.postgres import DEFAULT_LAYOUT, NodeLayout


def parse_target(text: str) -> datetime:
    """A recovery target time; it must name its time zone, or the restore would use the server's."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"--target: not an ISO 8601 time: {text!r}") from exc
    if value.tzinfo is None:
        raise ValueError(f"--target: give a time zone (e.g. {text}+00:00), got {text!r}")
    return value


def restore_command(stanza: str, target: datetime, layout: NodeLayout = DEFAULT_LAYOUT,
                    data_dir: str | None = None) -> list[str]:
    """pgBackRest's point-in-time restore into `data_dir` (default: the node's own), promoting
    at the target so the restored cluster takes writes."""
    return [
        "pgbackrest", f"--config={layout.pgbackrest_config}", f"--stanza={stanza}",
        f"--pg1-path={data_dir or layout.data_dir}", "--delta", "--type=time",
        f"--target={target.isoformat(sep=' ')}", "--target-action=promote", "restore",
    ]


def _sh(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def pitr_steps(shard: Shard, target: datetime, layout: NodeLayout = DEFAULT_LAYOUT) -> list[str]:
    primary, replica = shard.primary.name, shard.replica.name
    patronictl = f"{layout.patronictl} -c {layout.patroni_config}"
    return [
        f"# Point-in-time restore of {shard.scope} to {target.isoformat()}: everything written after it is lost.",
        f"# 1. Stop writes: on {replica}, then on {primary}:",
        "systemctl stop patroni",
        f"# 2. Forget the shard's cluster state in etcd (asks to type the cluster name), on {primary}:",
        f"{patronictl} remove {shard.scope}",
        f"# 3. Restore on {primary} (delta: only changed files are fetched):",
        f"set -a; . {layout.secrets_dir}/{ENV_FILE_NAME}; set +a  # the repository keys, for this shell only",
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


def replica_steps(shard: Shard, layout: NodeLayout = DEFAULT_LAYOUT) -> list[str]:
    patronictl = f"{layout.patronictl} -c {layout.patroni_config}"
    return [
        f"# Re-create {shard.replica.name} from the backup repository (create_replica_methods: pgbackrest",
        "# first, so the copy comes from the bucket next door, not across the 120 ms link); on any member:",
        f"{patronictl} reinit --force {shard.scope} {shard.replica.name}",
        f"{patronictl} list {shard.scope}",
    ]


def cmd_runbook(args: argparse.Namespace) -> int:
    inventory = load_topology(args.topology)
    if not 0 <= args.shard < len(inventory.shards):
        print(f"--shard: {args.shard} is not a shard (0..{len(inventory.shards) - 1})")
        return 2
    shard = inventory.shards[args.shard]
    if args.procedure == "restore":
        if args.target is None:
            print("--target: the restore needs a target time")
            return 2
        try:
            target = parse_target(args.target)
        except ValueError as exc:
            print(exc)
            return 2
        print("\n".join(pitr_steps(shard, target)))
    else:
        print("\n".join(replica_steps(shard)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("runbook", help="commands for a shard's point-in-time restore or a replica from backup")
    parser.add_argument("procedure", choices=("restore", "replica"))
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--target", help="restore: the recovery target time, ISO 8601 with a time zone")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.set_defaults(func=cmd_runbook)
