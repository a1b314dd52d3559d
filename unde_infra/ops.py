"""`unde-infra ops`: the day-2 operations an operator runs every month, as exact commands.

* `switchover --shard N --to replica|primary`: move a shard's leader with Patroni (maintenance of
  a site, or bringing the primary home after a failover);
* `reinit --shard N --member NAME`: wipe a replica and rebuild it (from the backup repository
  first, then from the leader), until it streams again;
* `redeliver-mek --server NAME`: the Master Encryption Key lives in RAM only (tmpfs), so after a
  reboot the local stack delivers it again, by replacing that one delivery command.

Each prints the commands; `--execute` asks for confirmation (the shard's or server's name, typed
on a terminal; `--yes` in CI), reads the state the plan says it needs over the same ssh route as
its steps and stops, before any action, unless every precondition it printed holds (who leads,
the target streaming and how far behind, maintenance mode off); then it runs exactly what was
printed (one bash script) and waits until Patroni shows the expected state.

Servers without a public address are reached through a jump host: helsinki-gw for the Helsinki
side (its address is in the topology), the local entry host for the local site (`sshJump`, an
output of the local stack), as the remote commands of `pulumi up` reach them
(components/hosts.py); `runbook restore` prints the same routes. The Patroni steps run the
deployed patronictl (on PATH on both systems) with the deployed configuration
(render/node_setup.py, render/patroni.py).

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
from typing import Any

import yaml

from . import timings
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


# ---------------------------------------------------------------------------------------------
# What a shard's members show: `patronictl list -f json` (and `show-config` for maintenance mode)

# Columns of `patronictl list -f json` (Patroni's ctl.output_members). A column whose value is
# empty is left out of a member's object: the leader has no lag, an unknown lag is no column in 4.1.
LEADER_ROLES = ("Leader", "Standby Leader")
# The lag of a replica, in MB: Debian 13's Patroni 4.0 shows one column (an int, or "unknown"),
# the 4.1 the adopted Debian 12 servers run shows the received and the replayed WAL's.
LAG_COLUMNS = ("Lag in MB", "Receive Lag", "Replay Lag")
# A switchover target further behind than this is refused before anything runs: the bound
# Patroni itself applies to a failover (maximum_lag_on_failover), in the MB patronictl shows.
MAX_SWITCHOVER_LAG_MB = timings.MAXIMUM_LAG_ON_FAILOVER_BYTES // (1024 * 1024)

Members = dict[str, dict[str, Any]]


def parse_members(members_json: str) -> Members:
    """The members of `patronictl list -f json`, by name; ValueError for anything else."""
    try:
        listed = json.loads(members_json)
        return {str(m["Member"]): m for m in listed}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not the output of patronictl list -f json: {members_json[:200]!r}") from error


def is_paused(config_text: str) -> bool:
    """Maintenance mode, from `patronictl show-config` (YAML; nothing at all when the cluster has
    no dynamic configuration). Patroni reads `pause` with parse_bool: on, true, yes, 1."""
    try:
        config = yaml.safe_load(config_text) if config_text.strip() else {}
    except yaml.YAMLError as error:
        raise ValueError(f"not the output of patronictl show-config: {config_text[:200]!r}") from error
    if not isinstance(config, dict):
        raise ValueError(f"not the output of patronictl show-config: {config_text[:200]!r}")
    return str(config.get("pause")).lower() in ("on", "true", "yes", "1")


def lag_mb(member: dict[str, Any]) -> int | None:
    """How far a replica is behind, in MB (the larger lag where two are shown); None: not shown."""
    lags = [member[c] for c in LAG_COLUMNS if isinstance(member.get(c), int) and not isinstance(member.get(c), bool)]
    return max(lags) if lags else None


def _leader(members: Members) -> str:
    leaders = [name for name, m in members.items() if m.get("Role") in LEADER_ROLES]
    return ", ".join(leaders) or "none"


@dataclass(frozen=True)
class ClusterState:
    """A shard as its members show it; `paused` is None when it was not read."""

    members: Members
    paused: bool | None = None


def _seen(member: dict[str, Any] | None) -> str:
    """A member's role and state as patronictl lists them, for a precondition's report."""
    return f"{member.get('Role')}, {member.get('State')}" if member else "not listed"


@dataclass(frozen=True)
class Leads:
    """`member` is the shard's leader, running."""

    member: str

    def text(self, scope: str) -> str:
        return f"{self.member} leads {scope}, running"

    def problem(self, state: ClusterState) -> str | None:
        found = state.members.get(self.member)
        if found is not None and found.get("Role") == "Leader" and found.get("State") == "running":
            return None
        return f"{self.member} is not the running leader ({_seen(found)}; leader: {_leader(state.members)})"


@dataclass(frozen=True)
class Streams:
    """`member` is a replica receiving WAL from the leader, at most `max_lag_mb` behind (None: any)."""

    member: str
    max_lag_mb: int | None = None

    def text(self, scope: str) -> str:
        bound = f", at most {self.max_lag_mb} MB behind" if self.max_lag_mb is not None else ""
        return f"{self.member} is a streaming replica{bound}"

    def problem(self, state: ClusterState) -> str | None:
        found = state.members.get(self.member)
        if found is None or found.get("Role") in LEADER_ROLES or found.get("State") != "streaming":
            return f"{self.member} is not streaming ({_seen(found)})"
        if self.max_lag_mb is None:
            return None
        lag = lag_mb(found)
        if lag is None:
            shown = {c: found[c] for c in LAG_COLUMNS if c in found}
            return f"{self.member} shows no lag ({shown or 'no lag column'})"
        if lag > self.max_lag_mb:
            return f"{self.member} is {lag} MB behind"
        return None


@dataclass(frozen=True)
class NotLeader:
    """`member` is listed and does not lead (patronictl rebuilds only a replica)."""

    member: str

    def text(self, scope: str) -> str:
        return f"{self.member} is a member of {scope} and not its leader"

    def problem(self, state: ClusterState) -> str | None:
        found = state.members.get(self.member)
        if found is None:
            return f"{self.member} is not listed (members: {', '.join(state.members) or 'none'})"
        if found.get("Role") in LEADER_ROLES:
            return f"{self.member} is the {found.get('Role')} ({found.get('State')}); switch over first"
        return None


@dataclass(frozen=True)
class NotPaused:
    """Maintenance mode is off (`patronictl pause` turns it on: someone is working on the shard)."""

    def text(self, scope: str) -> str:
        return f"{scope} is not paused (maintenance mode off)"

    def problem(self, state: ClusterState) -> str | None:
        return "maintenance mode is on (patronictl show-config: pause)" if state.paused else None


Precondition = Leads | Streams | NotLeader | NotPaused


def precondition_problems(preconditions: tuple[Precondition, ...], scope: str, state: ClusterState) -> list[str]:
    """One line for each precondition that does not hold: what it needs, then what was seen."""
    problems = []
    for precondition in preconditions:
        seen = precondition.problem(state)
        if seen is not None:
            problems.append(f"{precondition.text(scope)}: no, {seen}")
    return problems


@dataclass(frozen=True)
class Step:
    comment: str
    argv: tuple[str, ...]  # the command, run on `server` (over ssh), or here when server is None
    server: Server | None = None
    expect: Expect | None = None
    # What --execute reads on `server` (its shard's members) and needs to hold before the first action.
    require: tuple[Precondition, ...] = ()


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


def _ssh_words(route: Route) -> list[str]:
    words = ["ssh", *SSH_OPTIONS]
    if route.port != 22:
        words += ["-p", str(route.port)]
    if route.jump:
        words += ["-J", route.jump]
    return words


def _ssh_command(route: Route, remote: str) -> str:
    return " ".join(_quote(w) for w in [*_ssh_words(route), route.target, remote])


def ssh_line(route: Route, argv: tuple[str, ...]) -> str:
    remote = " ".join(shlex.quote(a) for a in argv)
    return _ssh_command(route, f"sudo -n {remote}" if route.sudo else remote)


def ssh_shell_line(route: Route, shell: str) -> str:
    """`shell`, a line for the remote shell (`;`, `.`), run there as root."""
    return _ssh_command(route, f"sudo -n sh -c {shlex.quote(shell)}" if route.sudo else shell)


def login_line(route: Route) -> str:
    """An interactive root shell on the server (`sudo -i` where the login is not root's)."""
    if route.sudo:
        return " ".join(_quote(w) for w in [*_ssh_words(route), "-t", route.target, "sudo -i"])
    return " ".join(_quote(w) for w in [*_ssh_words(route), route.target])


def command_line(step: Step, reach: Reach) -> str:
    if step.server is None:
        return " ".join(shlex.quote(a) for a in step.argv)
    return ssh_line(reach.route(step.server), step.argv)


def preamble(steps: list[Step], reach: Reach, local_jump: str | None) -> list[str]:
    """The local jump host, when a step needs it: given, or read from the local stack's outputs."""
    return jump_preamble([s.server for s in steps if s.server is not None], reach, local_jump)


def jump_preamble(servers: list[Server], reach: Reach, local_jump: str | None) -> list[str]:
    """The local jump host, when ssh reaches one of `servers` through it."""
    if not any(f"${LOCAL_JUMP_VARIABLE}" == reach.route(server).jump for server in servers):
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
        if step.require:
            lines.append(f"# --execute reads this first (list -f json{', show-config' if needs_config(step) else ''}) "
                         "and stops before any action unless:")
            lines += [f"#   {p.text(scope_of(step))}" for p in step.require]
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
    leader = shard.primary if candidate == shard.replica else shard.replica
    node = member(shard, via)
    layout = layout_for(node)
    return [
        Step(f"Switchover of {shard.scope}: the leader moves from {leader.name} ({site_name(leader)}) to {candidate.name} "
             f"({site_name(candidate)}); writes pause for a few seconds.\n1. The members now (run on {node.name}):",
             patronictl(layout, "list", shard.scope), node,
             require=(Leads(leader.name), Streams(candidate.name, MAX_SWITCHOVER_LAG_MB), NotPaused())),
        Step(f"2. Patroni demotes the leader, lets {candidate.name} catch up, promotes it ('is already the leader' "
             "means there is nothing to do):",
             patronictl(layout, "switchover", shard.scope, "--candidate", candidate.name, "--force"), node,
             Expect(candidate.name, (leader.name,))),
        Step(f"3. {candidate.name} leads; {leader.name} streams from it again (pg_rewind where it had diverged):",
             patronictl(layout, "list", shard.scope), node),
    ]


def site_name(server: Server) -> str:
    return "Helsinki" if server.site == HELSINKI else "the local site"


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
             patronictl(layout, "list", shard.scope), node,
             require=(Leads(other.name), NotLeader(rebuilt.name))),
        Step(f"2. Rebuild {rebuilt.name}, waiting until it is done:",
             patronictl(layout, "reinit", shard.scope, rebuilt.name, "--force", "--wait"), node,
             Expect(other.name, (rebuilt.name,))),
        Step(f"3. {rebuilt.name} streams from {other.name}:", patronictl(layout, "list", shard.scope), node),
    ]


def expectation_problem(members_json: str, expect: Expect) -> str | None:
    """None when `patronictl list -f json` shows the expected leader and streaming members."""
    try:
        state = ClusterState(parse_members(members_json))
    except ValueError as error:
        return str(error)
    checks: list[Precondition] = [Leads(expect.leader), *(Streams(name) for name in expect.streaming)]
    return next((p for p in (c.problem(state) for c in checks) if p is not None), None)


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


def scope_of(step: Step) -> str:
    """The shard a patronictl step works on (`list|switchover|reinit <scope> ...`)."""
    return step.argv[4]


def patronictl_list_json(step: Step) -> tuple[str, ...]:
    """The step's own patronictl, listing its shard as JSON."""
    program, flag, config = step.argv[:3]
    return (program, flag, config, "list", "-f", "json", scope_of(step))


def patronictl_show_config(step: Step) -> tuple[str, ...]:
    """The step's own patronictl, showing its shard's dynamic configuration (`pause` among it)."""
    program, flag, config = step.argv[:3]
    return (program, flag, config, "show-config", scope_of(step))


def needs_config(step: Step) -> bool:
    return any(isinstance(p, NotPaused) for p in step.require)


def run_on(server: Server, argv: tuple[str, ...], reach: Reach, local_jump: str | None,
           project_dir: Path) -> subprocess.CompletedProcess[str]:
    """`argv` on `server`, over the route the printed steps take, its output captured."""
    read = Step("", argv, server)
    lines = [*preamble([read], reach, local_jump), command_line(read, reach)]
    return subprocess.run(["bash", "-c", "\n".join(lines)], cwd=project_dir, capture_output=True, text=True)


def _failed(result: subprocess.CompletedProcess[str]) -> str:
    last = result.stderr.strip().splitlines()[-1:] or ["no message"]
    return f"exit {result.returncode}: {last[0]}"


def unmet_preconditions(step: Step, reach: Reach, local_jump: str | None, project_dir: Path) -> list[str]:
    """Read the shard's state on the step's server and say which of its preconditions do not hold."""
    assert step.server is not None
    scope = scope_of(step)
    listed = run_on(step.server, patronictl_list_json(step), reach, local_jump, project_dir)
    if listed.returncode != 0:
        return [f"could not list {scope}'s members on {step.server.name} ({_failed(listed)})"]
    config_text = None
    if needs_config(step):
        config = run_on(step.server, patronictl_show_config(step), reach, local_jump, project_dir)
        if config.returncode != 0:
            return [f"could not read {scope}'s configuration on {step.server.name} ({_failed(config)})"]
        config_text = config.stdout
    try:
        state = ClusterState(parse_members(listed.stdout), None if config_text is None else is_paused(config_text))
    except ValueError as error:
        return [str(error)]
    return precondition_problems(step.require, scope, state)


def execute(steps: list[Step], reach: Reach, local_jump: str | None, *, project_dir: Path = ROOT,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """Check the preconditions the plan printed; run the printed script; then wait for the
    expected Patroni state of the steps that have one."""
    for step in steps:
        if not step.require or step.server is None:
            continue
        unmet = unmet_preconditions(step, reach, local_jump, project_dir)
        if unmet:
            print("\n".join(f"ops: nothing ran: {line}" for line in unmet), file=sys.stderr)
            return EXIT_FAILED
        print(f"ops: checked on {step.server.name}: " + "; ".join(p.text(scope_of(step)) for p in step.require),
              flush=True)
    text = script(steps, reach, local_jump)
    result = subprocess.run(["bash", "-c", "set -euo pipefail -x\n" + text], cwd=project_dir)
    if result.returncode != 0:
        print(f"ops: a command failed (exit {result.returncode}); nothing after it ran", file=sys.stderr)
        return EXIT_FAILED
    for step in steps:
        if step.expect is None or step.server is None:
            continue
        deadline = time.monotonic() + WAIT_SECONDS
        problem: str | None = "not checked yet"
        while time.monotonic() < deadline:
            out = run_on(step.server, patronictl_list_json(step), reach, local_jump, project_dir)
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


def confirmed(word: str) -> bool:
    """The operator typed `word` on the terminal."""
    print(f"ops: type {word} to run the commands above (anything else stops): ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip() == word


def cmd_ops(args: argparse.Namespace) -> int:
    if args.execute and not args.yes and not sys.stdin.isatty():
        print("--execute: stdin is not a terminal to confirm on; --yes runs without asking (CI)", file=sys.stderr)
        return EXIT_BAD_INPUT
    inventory = load_topology(args.topology)
    try:
        if args.operation == "switchover":
            shard = shard_of(inventory, args.shard)
            subject, steps = shard.scope, switchover_steps(shard, args.to, args.via)
        elif args.operation == "reinit":
            shard = shard_of(inventory, args.shard)
            subject, steps = shard.scope, reinit_steps(shard, args.member, args.via)
        else:
            subject, steps = args.server, redeliver_mek_steps(inventory, args.server)
        reach = reach_from_stack_config(inventory)
        print(script(steps, reach, args.local_jump), end="", flush=True)
    except OpsError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.execute:
        return EXIT_OK
    if not args.yes and not confirmed(subject):
        print("ops: not confirmed; nothing ran", file=sys.stderr)
        return EXIT_FAILED
    print("# --execute: running the commands above", flush=True)
    return execute(steps, reach, args.local_jump)


def add_local_jump_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local-jump", default=None,
                        help="the local site's jump host, user@host (default: `pulumi stack output -s local sshJump`)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("ops", help="day-2 operations: switchover, reinit of a replica, MEK re-delivery")
    ops = parser.add_subparsers(dest="operation", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--execute", action="store_true",
                        help="check the printed preconditions, run the printed commands, wait for Patroni; "
                             "asks to type the shard's or server's name first")
    common.add_argument("--yes", action="store_true", help="with --execute: do not ask (CI, no terminal)")
    add_local_jump_argument(common)
    common.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    switchover = ops.add_parser("switchover", parents=[common], help="move a shard's leader")
    switchover.add_argument("--shard", type=int, required=True)
    switchover.add_argument("--to", choices=("replica", "primary"), required=True,
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
