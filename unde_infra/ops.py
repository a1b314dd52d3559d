"""`unde-infra ops`: the day-2 operations an operator runs every month, as exact commands.

* `switchover --shard N --to replica|primary`: move a shard's leader with Patroni (maintenance of
  a site, or bringing the primary home after a failover);
* `reinit --shard N --member NAME`: wipe a replica and rebuild it (from the backup repository
  first, then from the leader), until it streams again;
* `redeliver-mek --server NAME`: the Master Encryption Key lives in RAM only (tmpfs), so after a
  reboot the local stack delivers it again, by replacing that one delivery command.

Each prints the commands; `--execute` runs exactly what was printed (one bash script) and then
waits until Patroni shows the expected state. Servers without a public address are reached
through a jump host: helsinki-gw for the Helsinki side (its address is in the topology), the
local entry host for the local site (`sshJump`, an output of the local stack), as the remote
commands of `pulumi up` reach them (components/hosts.py). The Patroni steps run the deployed patronictl
(on PATH on both systems) with the deployed configuration (render/node_setup.py, render/patroni.py).

The integration test (tests/integration/test_ops_drill.py) runs the patronictl commands these
plans contain against the drill's real cluster, inside its namespaces instead of over ssh.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .model import DEFAULT_TOPOLOGY, HELSINKI, LOCAL, ROOT, Inventory, Server, Shard, load_topology
from .naming import REMOTE_COMMAND_TYPE, delivery_name
from .render.app_secrets import MEK_PATH, MEK_TASKS
from .render.postgres import DEFAULT_LAYOUT, NodeLayout
from .settings import PROJECT, ExistingHost

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
LOCAL_JUMP_VARIABLE = "LOCAL_JUMP"
SSH_OPTIONS = ("-o", "ConnectTimeout=10")
# The component whose delivery command writes the key, per task (components/: AgentHost,
# ShardPair, WarmStandby); tests/unit/test_ops.py holds this against the preview's URNs.
MEK_DELIVERY_PARENT = {
    "orchestrator": "unde:local:AgentHost",
    "shard": "unde:local:ShardPair",
    "shard-replica": "unde:local:ShardPair",
    "standby-orchestrator": "unde:local:WarmStandby",
}
# How long --execute waits for Patroni to show the expected members, and how often it looks.
WAIT_SECONDS, WAIT_INTERVAL_SECONDS = 300, 5


class OpsError(Exception):
    """A bad request (exit 2): an unknown shard, member or server."""


@dataclass(frozen=True)
class Expect:
    """What `patronictl list` must show once the step is done."""

    leader: str
    streaming: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    comment: str
    argv: tuple[str, ...]  # the command, run on `server` (over ssh), or here when server is None
    server: Server | None = None
    expect: Expect | None = None


@dataclass(frozen=True)
class Route:
    """How ssh reaches a server from the operator's machine."""

    target: str  # user@address
    port: int = 22
    jump: str | None = None  # [user@]host[:port], or "$LOCAL_JUMP" (read from the local stack)
    sudo: bool = False


# ---------------------------------------------------------------------------------------------
# Reaching the servers


@dataclass(frozen=True)
class Reach:
    """The facts routes come from: the topology, and the local stack's provider and hosts."""

    inventory: Inventory
    local_provider: str = "hcloud"
    hosts: dict[str, ExistingHost] | None = None

    def route(self, server: Server) -> Route:
        gateway = self.inventory.gateway
        if server.name == gateway.name:
            return Route(f"root@{gateway.public_address}")
        if server.site != LOCAL:
            # Helsinki and the witness share the Helsinki network; helsinki-gw reaches them all.
            return Route(f"root@{server.ip}", jump=f"root@{gateway.public_address}")
        if self.local_provider == "existing":
            host = (self.hosts or {}).get(server.name)
            if host is None:
                raise OpsError(f"hosts.{server.name}: Pulumi.local.yaml gives no address for {server.name}")
            return Route(f"{host.user}@{host.address}", port=host.port, sudo=host.user != "root")
        return Route(f"root@{server.ip}", jump=f"${LOCAL_JUMP_VARIABLE}")


def reach_from_stack_config(inventory: Inventory, project_dir: Path = ROOT) -> Reach:
    from .settings import stack_settings

    settings = stack_settings(LOCAL, project_dir)
    return Reach(inventory, settings.provider, dict(settings.hosts))


def _quote(word: str) -> str:
    """Shell words; "$LOCAL_JUMP" stays a variable (in double quotes)."""
    return f'"{word}"' if word.startswith("$") else shlex.quote(word)


def ssh_line(route: Route, argv: tuple[str, ...]) -> str:
    remote = " ".join(shlex.quote(a) for a in argv)
    if route.sudo:
        remote = f"sudo -n {remote}"
    words = ["ssh", *SSH_OPTIONS]
    if route.port != 22:
        words += ["-p", str(route.port)]
    if route.jump:
        words += ["-J", route.jump]
    words += [route.target, remote]
    return " ".join(_quote(w) for w in words)


def command_line(step: Step, reach: Reach) -> str:
    if step.server is None:
        return " ".join(shlex.quote(a) for a in step.argv)
    return ssh_line(reach.route(step.server), step.argv)


def preamble(steps: list[Step], reach: Reach, local_jump: str | None) -> list[str]:
    """The local jump host, when a step needs it: given, or read from the local stack's outputs."""
    needed = any(s.server is not None and f"${LOCAL_JUMP_VARIABLE}" == reach.route(s.server).jump for s in steps)
    if not needed:
        return []
    if local_jump:
        return [f"{LOCAL_JUMP_VARIABLE}={shlex.quote(local_jump)}  # the local site's jump host"]
    return [f'{LOCAL_JUMP_VARIABLE}="${{{LOCAL_JUMP_VARIABLE}:-$(pulumi stack output -s local sshJump)}}"'
            "  # the local site's jump host (local-app)"]


def script(steps: list[Step], reach: Reach, local_jump: str | None = None) -> str:
    lines = preamble(steps, reach, local_jump)
    for step in steps:
        lines += [f"# {line}" for line in step.comment.splitlines()]
        lines.append(command_line(step, reach))
        if step.expect is not None:
            lines.append(f"# --execute then waits (up to {WAIT_SECONDS} s) until {step.expect.leader} leads"
                         + (f" and {', '.join(step.expect.streaming)} streams" if step.expect.streaming else ""))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Patroni plans


def patronictl(layout: NodeLayout, *args: str) -> tuple[str, ...]:
    return (layout.patronictl, "-c", layout.patroni_config, *args)


def shard_of(inventory: Inventory, index: int) -> Shard:
    if not 0 <= index < len(inventory.shards):
        raise OpsError(f"--shard: {index} is not a shard (0..{len(inventory.shards) - 1})")
    return inventory.shards[index]


def member(shard: Shard, which: str) -> Server:
    """`primary` / `replica` (the shard's local and Helsinki node) or a member's name."""
    by_name = {shard.primary.name: shard.primary, shard.replica.name: shard.replica}
    named = {"primary": shard.primary, "replica": shard.replica}.get(which) or by_name.get(which)
    if named is None:
        raise OpsError(f"{which!r} is no member of {shard.scope} (primary, replica, {', '.join(by_name)})")
    return named


LayoutFor = Callable[[Server], NodeLayout]


def switchover_steps(shard: Shard, to: str, via: str = "replica",
                     layout_for: LayoutFor = lambda server: DEFAULT_LAYOUT) -> list[Step]:
    candidate = member(shard, to)
    other = shard.primary if candidate == shard.replica else shard.replica
    node = member(shard, via)
    layout = layout_for(node)
    where = "Helsinki" if candidate.site == HELSINKI else "the local site"
    return [
        Step(f"Switchover of {shard.scope}: the leader moves to {candidate.name} ({where}); writes pause for a few "
             f"seconds.\n1. The members now (run on {node.name}; {candidate.name} must be a streaming replica):",
             patronictl(layout, "list", shard.scope), node),
        Step(f"2. Patroni demotes the leader, lets {candidate.name} catch up, promotes it ('is already the leader' "
             "means there is nothing to do):",
             patronictl(layout, "switchover", shard.scope, "--candidate", candidate.name, "--force"), node,
             Expect(candidate.name, (other.name,))),
        Step(f"3. {candidate.name} leads; {other.name} streams from it again (pg_rewind where it had diverged):",
             patronictl(layout, "list", shard.scope), node),
    ]


def reinit_steps(shard: Shard, target: str, via: str | None = None,
                 layout_for: LayoutFor = lambda server: DEFAULT_LAYOUT) -> list[Step]:
    rebuilt = member(shard, target)
    other = shard.replica if rebuilt == shard.primary else shard.primary
    node = member(shard, via) if via else other
    layout = layout_for(node)
    return [
        Step(f"Reinitialise {rebuilt.name} of {shard.scope}: its data directory is wiped and rebuilt, from the\n"
             "backup repository first (create_replica_methods: pgbackrest, then basebackup), and it streams again.\n"
             f"Only a replica: patronictl refuses the leader.\n1. The members now (run on {node.name}):",
             patronictl(layout, "list", shard.scope), node),
        Step(f"2. Rebuild {rebuilt.name}, waiting until it is done:",
             patronictl(layout, "reinit", shard.scope, rebuilt.name, "--force", "--wait"), node,
             Expect(other.name, (rebuilt.name,))),
        Step(f"3. {rebuilt.name} streams from {other.name}:", patronictl(layout, "list", shard.scope), node),
    ]


def expectation_problem(members_json: str, expect: Expect) -> str | None:
    """None when `patronictl list -f json` shows the expected leader and streaming members."""
    try:
        members = {m["Member"]: m for m in json.loads(members_json)}
    except (ValueError, KeyError, TypeError):
        return f"not the output of patronictl list -f json: {members_json[:200]!r}"
    leader = members.get(expect.leader)
    if leader is None or leader.get("Role") != "Leader" or leader.get("State") != "running":
        state = f"{leader.get('Role')}, {leader.get('State')}" if leader else "not listed"
        return f"{expect.leader} is not the running leader ({state})"
    for name in expect.streaming:
        found = members.get(name)
        if found is None or found.get("State") != "streaming":
            return f"{name} is not streaming ({found.get('State') if found else 'not listed'})"
    return None


# ---------------------------------------------------------------------------------------------
# The Master Encryption Key


def mek_servers(inventory: Inventory) -> list[Server]:
    return [s for s in inventory.servers.values() if s.task in MEK_TASKS]


def mek_urn(server: Server, stack: str = LOCAL) -> str:
    """The URN of the command that writes `server`'s key, as the local stack names it."""
    parent = MEK_DELIVERY_PARENT[server.task]
    return f"urn:pulumi:{stack}::{PROJECT}::{parent}${REMOTE_COMMAND_TYPE}::{delivery_name(server.name, MEK_PATH)}"


def redeliver_mek_steps(inventory: Inventory, name: str) -> list[Step]:
    servers = {s.name: s for s in mek_servers(inventory)}
    server = servers.get(name)
    if server is None:
        raise OpsError(f"--server: {name!r} receives no master encryption key (those that do: {', '.join(servers)})")
    return [
        Step(f"The key lives in RAM only ({MEK_PATH}, a tmpfs), so a reboot of {server.name} lost it. The local\n"
             "stack delivers it again by replacing that one delivery command (nothing else changes); from the\n"
             "repository's root, with the local stack's secrets at hand:",
             ("pulumi", "up", "-s", LOCAL, "--target-replace", mek_urn(server))),
        Step(f"Check: the file is back on {server.name}, root-only (mode,owner,bytes: 400,root,45; never its content):",
             ("stat", "-c", "%a,%U,%s", MEK_PATH), server),
    ]


# ---------------------------------------------------------------------------------------------
# Running a plan


def execute(steps: list[Step], reach: Reach, local_jump: str | None, *, project_dir: Path = ROOT,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """Run the printed script, then wait for the expected Patroni state of the steps that have one."""
    text = script(steps, reach, local_jump)
    result = subprocess.run(["bash", "-c", "set -euo pipefail -x\n" + text], cwd=project_dir)
    if result.returncode != 0:
        print(f"ops: a command failed (exit {result.returncode}); nothing after it ran", file=sys.stderr)
        return EXIT_FAILED
    for step in steps:
        if step.expect is None or step.server is None:
            continue
        check = Step("", patronictl_list_json(step), step.server)
        lines = [*preamble([check], reach, local_jump), command_line(check, reach)]
        deadline = time.monotonic() + WAIT_SECONDS
        problem: str | None = "not checked yet"
        while time.monotonic() < deadline:
            out = subprocess.run(["bash", "-c", "\n".join(lines)], cwd=project_dir, capture_output=True, text=True)
            problem = expectation_problem(out.stdout, step.expect) if out.returncode == 0 else out.stderr.strip()
            if problem is None:
                print(f"ops: {step.expect.leader} leads" + (f", {', '.join(step.expect.streaming)} streams"
                                                            if step.expect.streaming else ""))
                break
            sleep(WAIT_INTERVAL_SECONDS)
        if problem is not None:
            print(f"ops: after {WAIT_SECONDS} s: {problem}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


def patronictl_list_json(step: Step) -> tuple[str, ...]:
    """The step's own patronictl, listing its shard as JSON."""
    program, flag, config = step.argv[:3]
    scope = step.argv[4]  # switchover|reinit <scope> ...
    return (program, flag, config, "list", "-f", "json", scope)


def cmd_ops(args: argparse.Namespace) -> int:
    inventory = load_topology(args.topology)
    try:
        if args.operation == "switchover":
            steps = switchover_steps(shard_of(inventory, args.shard), args.to, args.via)
        elif args.operation == "reinit":
            steps = reinit_steps(shard_of(inventory, args.shard), args.member, args.via)
        else:
            steps = redeliver_mek_steps(inventory, args.server)
        reach = reach_from_stack_config(inventory)
        print(script(steps, reach, args.local_jump), end="")
    except OpsError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.execute:
        return EXIT_OK
    print("# --execute: running the commands above", flush=True)
    return execute(steps, reach, args.local_jump)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("ops", help="day-2 operations: switchover, reinit of a replica, MEK re-delivery")
    ops = parser.add_subparsers(dest="operation", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--execute", action="store_true", help="run the printed commands (and wait for Patroni)")
    common.add_argument("--local-jump", default=None,
                        help="the local site's jump host, user@host (default: `pulumi stack output -s local sshJump`)")
    common.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    switchover = ops.add_parser("switchover", parents=[common], help="move a shard's leader")
    switchover.add_argument("--shard", type=int, required=True)
    switchover.add_argument("--to", choices=("replica", "primary"), default="replica",
                            help="replica: to Helsinki; primary: home to the local site")
    switchover.add_argument("--via", choices=("replica", "primary"), default="replica",
                            help="the member patronictl runs on (default: the Helsinki replica)")
    reinit = ops.add_parser("reinit", parents=[common], help="rebuild a replica until it streams again")
    reinit.add_argument("--shard", type=int, required=True)
    reinit.add_argument("--member", required=True, help="primary, replica, or the member's name")
    reinit.add_argument("--via", default=None, help="the member patronictl runs on (default: the other one)")
    mek = ops.add_parser("redeliver-mek", parents=[common], help="deliver the master encryption key after a reboot")
    mek.add_argument("--server", required=True)
    parser.set_defaults(func=cmd_ops)
