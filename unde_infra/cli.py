"""The `unde-infra` command: validate the topology, preview both stacks offline."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from . import capacity, cost, diagram, diff, ops, runbook, scenarios
from .errors import TopologyError, one_line
from .model import LOCAL, ROOT, STACKS, Inventory, stack_of
from .out_dir import OutDirError, require_out_dir

EXIT_OK, EXIT_POLICY, EXIT_BAD_INPUT = 0, 1, 2
# A real run of the stack would stop (validate --real-run): something it needs is missing.
EXIT_NOT_READY = 4


def _describe(inventory: Inventory) -> str:
    by_stack = Counter(stack_of(s) for s in inventory.servers.values())
    existing = sum(1 for s in inventory.servers.values() if s.existing)
    members = ", ".join(f"{m.member}@{m.host.name} ({m.site})" for m in inventory.etcd)
    lines = [
        f"{inventory.source}: ok (plan v{inventory.plan_version})",
        f"  servers: {len(inventory.servers)} ({by_stack['helsinki']} helsinki stack, {by_stack[LOCAL]} local stack; "
        f"{existing} existing, {len(inventory.servers) - existing} to create)",
        f"  shards: {len(inventory.shards)} (replica type {inventory.shards[0].replica.hcloud_type if inventory.shards else '-'})",
        f"  tunnels: {len(inventory.tunnels())} local servers, each with its own tunnel to {inventory.gateway.name}",
        f"  etcd placement {inventory.etcd_placement}: {members}",
    ]
    lines += [f"  note: {note}" for note in inventory.notes]
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    """The topology and the stack configs, checked as `preview` checks them; with --real-run,
    every blocker of a real run of the chosen stacks (exit EXIT_NOT_READY if any)."""
    from .readiness import check_stacks

    stacks = list(STACKS) if args.stack == "all" else [args.stack]
    checked = check_stacks(stacks, args.topology, args.shards, project_dir=args.project_dir)
    print(_describe(checked[0].inventory))
    blocked = 0
    for item in checked:
        count = len(item.blockers)
        blocked += count
        print(f"  Pulumi.{item.stack}.yaml: ok; real run: "
              + ("ready" if not count else f"{count} blocker{'s' if count != 1 else ''}"))
        if args.real_run or count:
            shown = item.blockers if args.real_run else []
            print("\n".join(f"    {one_line(b.line(item.stack))}" for b in shown)) if shown else None
    if blocked and not args.real_run:
        print(f"  (`unde-infra validate --real-run --stack {args.stack}` lists them)")
    return EXIT_NOT_READY if args.real_run and blocked else EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    import pulumi  # here, not at the top: validate and the other commands need no Pulumi SDK

    from .preview import preview, stacks_for, summary

    stacks = stacks_for(args.stack)
    require_out_dir(args.out, directories=stacks)
    print(f"previewing {', '.join(stacks)} offline (Pulumi SDK mock monitor; no CLI, no credentials)", flush=True)
    try:
        results = preview(stacks, args.topology, args.shards, args.out, project_dir=args.project_dir, leave_frozen=args.process_ends)
    except pulumi.RunError as error:
        if isinstance(error.__cause__, TopologyError):
            raise error.__cause__ from None
        raise
    for result in results:
        print(summary(result))
    print(f"written: {', '.join(str(args.out / r.run.stack) for r in results)}")
    if any(r.mandatory_violations for r in results):
        print("mandatory policy violations: see policy.json of each stack", file=sys.stderr)
        return EXIT_POLICY
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unde-infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser(
        "validate", help="check the topology and the stack configs, print the derived inventory "
                         "(--real-run: every blocker of a real run, exit 4 if any)")
    validate.add_argument("--topology", type=Path, default=None, help="default: the stack config's topology")
    validate.add_argument("--shards", type=int, default=None, help="override shards.count")
    validate.add_argument("--stack", choices=["helsinki", "local", "all"], default="all")
    validate.add_argument(
        "--project-dir", type=Path, default=ROOT,
        help="read Pulumi.<stack>.yaml (and the topology they name, inside it) from DIR; default: this checkout",
    )
    validate.add_argument("--real-run", action="store_true",
                          help="list everything a real run of the stack needs and lacks; exit 4 if anything")
    validate.set_defaults(func=cmd_validate)
    prev = sub.add_parser("preview", help="run the Pulumi program offline and write what it registers")
    prev.add_argument("--stack", choices=["helsinki", "local", "all"], default="all")
    prev.add_argument("--topology", type=Path, default=None, help="default: the stack config's topology")
    prev.add_argument("--shards", type=int, default=None, help="override shards.count")
    prev.add_argument("--out", type=Path, default=Path("build/preview"))
    prev.add_argument(
        "--project-dir", type=Path, default=ROOT,
        help="read Pulumi.<stack>.yaml (and the topology they name, inside it) from DIR; default: this checkout",
    )
    prev.set_defaults(func=cmd_preview)
    scenarios.register(sub)
    runbook.register(sub)
    cost.register(sub)
    capacity.register(sub)
    diagram.register(sub)
    diff.register(sub)
    ops.register(sub)
    return parser


def main(argv: list[str] | None = None, *, process_ends: bool = False) -> int:
    """Run the command `argv` (default: the process's arguments). `process_ends`: the process
    exits with the command, so the preview leaves its heap to the exit (gc_settings.quiet_gc)."""
    from .errors import PreviewInputError
    from .provider_schema import ProviderSchemaError

    args = build_parser().parse_args(argv)
    args.process_ends = process_ends
    try:
        return int(args.func(args))
    except TopologyError as error:
        print(error.report(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except PreviewInputError as error:
        print(str(error), file=sys.stderr)
        return EXIT_BAD_INPUT
    except OutDirError as error:
        print(error.report(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ProviderSchemaError as error:
        print(error.report(), file=sys.stderr)
        return EXIT_BAD_INPUT


def command() -> int:
    """The `unde-infra` console script and `python -m unde_infra`: the process ends with the command."""
    try:
        return main(process_ends=True)
    except BrokenPipeError:
        # The reader went away (`unde-infra scenarios --json | head`): no traceback, and no second
        # error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process killed by SIGPIPE (128 + 13)


if __name__ == "__main__":
    sys.exit(command())
