"""The delivery as `pulumi up` runs it: every remote command over real OpenSSH, each as soon as
the commands it depends on are done (the engine's default, unbounded parallelism), through the
jump host where the program sets one.

The OpenSSH client stands in for pulumi-command's Go client: one connection a command (two
through a jump host: ssh -J opens the jump's session and a direct-tcpip channel through it, as
pulumi-command's proxy does), the command's text sent as the session's command with its stdin.
Like pulumi-command, a dial that fails before the session starts is tried again, a limited
number of times; every such retry is counted, since against sshd's defaults the delivery is
meant to need none."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unde_infra.delivery_plan import PlannedCommand

# pulumi-command's defaults: dialErrorLimit 10, perDialTimeout 15 s.
DIAL_ATTEMPTS = 10
DIAL_TIMEOUT = 15
COMMAND_TIMEOUT = 1200
# What OpenSSH's client prints when the connection never got to run the command. A refused key
# is one of them: pulumi-command's dial is the whole handshake, login included (on a new server
# sshd listens before cloud-init has put the keys in place).
DIAL_FAILURES = (
    "Permission denied (publickey",
    "kex_exchange_identification", "Connection closed by", "Connection reset by", "Connection refused",
    "Connection timed out", "No route to host", "banner exchange", "port 65535", "channel 0: open failed",
    "stdio forwarding failed", "Network is unreachable",
)


Command = PlannedCommand


def fingerprint(command: Command) -> str:
    """What makes pulumi run a command again: its inputs (the text, stdin and triggers)."""
    data = json.dumps([command.create, command.stdin, command.triggers, command.host, command.jump],
                      sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass
class Outcome:
    urn: str
    name: str
    server: str
    status: str  # ok, failed, skipped
    exit_code: int | None = None
    seconds: float = 0.0
    dial_retries: int = 0
    reason: str = ""
    ended: float = 0.0  # time.monotonic() when it finished


@dataclass
class DeliveryRun:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # Connections opened to each endpoint (a target, or a jump host it was dialled through).
    opened: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.status == "failed"]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.status == "skipped"]

    def ran(self) -> list[str]:
        return sorted(o.urn for o in self.outcomes.values() if o.status != "skipped" and o.reason != "unchanged")

    def to_json(self) -> dict[str, object]:
        return {"seconds": self.seconds, "opened": dict(self.opened), "peak": dict(self.peak),
                "outcomes": [asdict(o) for o in self.outcomes.values()]}


@dataclass
class Operator:
    """Who runs the delivery: a namespace on the lab's internet and a key."""

    namespace: str
    key_file: Path

    def ssh(self, command: Command) -> list[str]:
        options = ["-i", str(self.key_file), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                   "-o", f"ConnectTimeout={DIAL_TIMEOUT}", "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        jump: list[str] = []
        if command.jump:
            # The jump's own options: ssh -J would not pass -i and the rest on.
            proxy = " ".join(["ssh", *options, "-W", "%h:%p", f"root@{command.jump}"])
            jump = ["-o", f"ProxyCommand={proxy}"]
        return ["ip", "netns", "exec", self.namespace, "ssh", *options, *jump, "-p", str(command.port),
                f"{command.user}@{command.host}", "--", command.create or ""]


class _Gauge:
    def __init__(self, run: DeliveryRun) -> None:
        self.run = run
        self.open: Counter[str] = Counter()

    def enter(self, endpoints: Iterable[str]) -> None:
        for endpoint in endpoints:
            self.run.opened[endpoint] += 1
            self.open[endpoint] += 1
            self.run.peak[endpoint] = max(self.run.peak[endpoint], self.open[endpoint])

    def leave(self, endpoints: Iterable[str]) -> None:
        for endpoint in endpoints:
            self.open[endpoint] -= 1


def _endpoints(command: Command) -> list[str]:
    return [command.host, *([command.jump] if command.jump else [])]


def _dial_failed(returncode: int, stderr: str) -> bool:
    return returncode == 255 and any(marker in stderr for marker in DIAL_FAILURES)


async def _run_one(command: Command, operator: Operator, gauge: _Gauge, attempts: int) -> Outcome:
    started = time.monotonic()
    retries = 0
    while True:
        gauge.enter(_endpoints(command))
        try:
            process = await asyncio.create_subprocess_exec(
                *operator.ssh(command), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            try:
                stdout, stderr = await asyncio.wait_for(
                    process.communicate((command.stdin or "").encode()), COMMAND_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
                return Outcome(command.urn, command.name, command.server, "failed", None, time.monotonic() - started, retries,
                               f"timed out after {COMMAND_TIMEOUT} s")
        finally:
            gauge.leave(_endpoints(command))
        text = stderr.decode(errors="replace")
        code = process.returncode if process.returncode is not None else -1
        if _dial_failed(code, text) and retries + 1 < attempts:
            retries += 1
            await asyncio.sleep(min(2 ** retries, 16) * 0.25)
            continue
        seconds = time.monotonic() - started
        if code == 0:
            return Outcome(command.urn, command.name, command.server, "ok", 0, seconds, retries)
        reason = _last_lines(text or stdout.decode(errors="replace"))
        return Outcome(command.urn, command.name, command.server, "failed", code, seconds, retries, reason)


def _last_lines(text: str, count: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])[:800] or "no output"


async def _deliver(commands: Sequence[Command], operator: Operator, selected: set[str], attempts: int) -> DeliveryRun:
    run = DeliveryRun()
    gauge = _Gauge(run)
    done: dict[str, asyncio.Future[Outcome]] = {}
    loop = asyncio.get_running_loop()
    for command in commands:
        done[command.urn] = loop.create_future()

    async def one(command: Command) -> None:
        for dependency in command.after:
            if dependency in done:
                await asyncio.shield(done[dependency])
        failed = [d for d in command.after if d in done and done[d].result().status != "ok"]
        if failed:
            outcome = Outcome(command.urn, command.name, command.server, "skipped",
                              reason=f"after {failed[0].rsplit('::', 1)[-1]}: not done")
        elif command.urn not in selected:
            # Not run again (pulumi sees its inputs unchanged): done, for what waits on it.
            outcome = Outcome(command.urn, command.name, command.server, "ok", reason="unchanged")
        else:
            outcome = await _run_one(command, operator, gauge, attempts)
        outcome.ended = time.monotonic()
        run.outcomes[command.urn] = outcome
        done[command.urn].set_result(outcome)

    started = time.monotonic()
    await asyncio.gather(*(one(c) for c in commands))
    run.seconds = time.monotonic() - started
    return run


def deliver(commands: Sequence[Command], operator: Operator, only: Iterable[str] | None = None,
            attempts: int = DIAL_ATTEMPTS) -> DeliveryRun:
    """Run `commands` (all, or those whose URNs are in `only`: what pulumi would run again)."""
    selected = {c.urn for c in commands} if only is None else set(only)
    return asyncio.run(_deliver(commands, operator, selected, attempts))


def failure_lines(run: DeliveryRun) -> list[str]:
    """The report of what did not get done: the server, the command and why, one line each."""
    lines = []
    for outcome in sorted(run.outcomes.values(), key=lambda o: (o.server, o.name)):
        if outcome.status == "failed":
            code = "no exit status" if outcome.exit_code is None else f"exit {outcome.exit_code}"
            retried = f", after {outcome.dial_retries} dial retries" if outcome.dial_retries else ""
            lines.append(f"FAILED {outcome.server}: {outcome.name}: {code}{retried}: {outcome.reason}")
        elif outcome.status == "skipped":
            lines.append(f"SKIPPED {outcome.server}: {outcome.name}: {outcome.reason}")
    return lines


def changed(commands: Sequence[Command], state: dict[str, str]) -> list[str]:
    """The commands pulumi would run again: new ones and those whose inputs changed."""
    return [c.urn for c in commands if state.get(c.urn) != fingerprint(c)]


def state_of(commands: Sequence[Command]) -> dict[str, str]:
    return {c.urn: fingerprint(c) for c in commands}


def per_server(runs: Sequence[DeliveryRun], commands: Iterable[Command],
               since: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per server: commands run, SSH connections opened to it, the most open to it at once,
    the most open at once to its jump host, and seconds from `since` (its boot) until its last
    command finished (`since`: each server's boot, time.monotonic())."""
    addresses: dict[str, set[str]] = defaultdict(set)  # a server is reached at one address per stack
    jumps: dict[str, set[str]] = defaultdict(set)
    for command in commands:
        addresses[command.server].add(command.host)
        if command.jump:
            jumps[command.server].add(command.jump)
    figures: dict[str, dict[str, float]] = {}
    for run in runs:
        for outcome in run.outcomes.values():
            if outcome.status == "skipped" or outcome.reason == "unchanged":
                continue
            entry = figures.setdefault(outcome.server, {"commands": 0, "converged_s": 0.0, "dial_retries": 0})
            entry["commands"] += 1
            entry["dial_retries"] += outcome.dial_retries
            entry["converged_s"] = max(entry["converged_s"], outcome.ended - since.get(outcome.server, outcome.ended))
    for server, entry in figures.items():
        entry["opened"] = sum(run.opened.get(host, 0) for run in runs for host in addresses[server])
        entry["peak"] = max((run.peak.get(host, 0) for run in runs for host in addresses[server]), default=0)
        if jumps[server]:
            entry["jump_peak"] = max(run.peak.get(jump, 0) for run in runs for jump in jumps[server])
    return figures
