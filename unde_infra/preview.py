"""The offline preview: check everything, run each stack's real program under mocks, then write
`resources.json`, `outputs.json` and the artifacts every server receives.

Nothing is written unless every stack ran: the results are assembled in a temporary directory
and moved into place at the end."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import readiness
from .config_files import load_config
from .errors import Problems
from .firewall import newly_blocked
from .gc_settings import quiet_gc
from .model import HELSINKI, ROOT, STACKS, Inbound, Inventory, Server
from .naming import REMOTE_COMMAND_TYPE, REMOTE_COPY_TYPE, SERVER_TYPE, bootstrapped_server, delivered_file
from .offline import (
    OFFLINE_SECRET_PREFIX,
    STACK_OUTPUTS_FILE,
    StackRun,
    run_program,
    stand_in_import_ids,
    unwrap_secrets,
)
from .out_dir import writing_to
from .provider_schema import ProviderSchemaError, SchemaViolation, check_records
from .readiness import Blocker
from .settings import (
    TOPOLOGY_OVERRIDE_ENV,
    StackSettings,
    entry_settings_missing,
    missing_import_ids,
    needs_entry_dns,
    needs_telegram_chat,
    parse_settings,
)

# A chat id of the right shape (a Telegram group's), so the offline Alertmanager config is one
# amtool accepts; a real run stops until the stack config names the team's chat.
OFFLINE_TELEGRAM_CHAT_ID = -1000000000001
# A zone under a reserved top-level domain (RFC 2606): plainly not the team's real domain.
OFFLINE_DNS_ZONE = "unde.example"
# Names under the reserved .invalid domain, so that the offline nginx and certbot files have their
# real shape; a real run stops until the stack config names the real ones.
OFFLINE_ENTRY_SETTINGS = {"entryDomain": "api.unde.invalid", "acmeEmail": "acme@unde.invalid"}

USER_DATA_ARTIFACT = "user-data.yaml"
FIREWALL_TYPE = "hcloud:index/firewall:Firewall"



@dataclass
class PreparedStack:
    stack: str
    config: dict[str, Any]
    settings: StackSettings
    inventory: Inventory
    topology: Path
    stand_ins: list[str] = field(default_factory=list)
    # What keeps a real run of the stack from starting (with what the preview stood in for it).
    blockers: list[Blocker] = field(default_factory=list)


@dataclass
class StackResult:
    run: StackRun
    inventory: Inventory
    seconds: float
    artifacts: dict[str, dict[str, str]]  # server -> absolute path -> content
    violations: list[Any] = field(default_factory=list)  # policies.rules.Violation
    blockers: list[Blocker] = field(default_factory=list)
    # What running servers serve publicly today that the new firewalls stop (firewall.newly_blocked).
    blocked: list[tuple[Server, Inbound]] = field(default_factory=list)

    @property
    def mandatory_violations(self) -> list[Any]:
        return [v for v in self.violations if v.enforcement == "mandatory"]


def prepare(
    stacks: list[str],
    topology: Path | None,
    shards: int | None,
    project_dir: Path = ROOT,
    config_overrides: dict[str, Any] | None = None,
) -> list[PreparedStack]:
    """Check the topology, the policy configuration and every stack's settings before anything
    runs (all problems at once). `topology`, the operator's --topology, may be any file; the
    stack config's own `topology` must stay inside the project."""
    prepared = []
    for checked in readiness.check_stacks(stacks, topology, shards, project_dir, config_overrides):
        stack, config, settings, inventory = checked.stack, dict(checked.config), checked.settings, checked.inventory
        # What the program cannot run without is stood in, and the blocker says with what.
        stood_in: dict[str, str] = {}
        stand_ins = missing_import_ids(settings, inventory)
        if stand_ins:
            ids = dict(config.get("importIds") or {})
            ids.update(stand_in_import_ids(stand_ins, ids.values()))
            config["importIds"] = ids
            stood_in.update({f"importIds.{name}": ids[name] for name in stand_ins})
        if needs_telegram_chat(settings, inventory) and settings.telegram_chat_id == 0:
            config["telegramChatId"] = OFFLINE_TELEGRAM_CHAT_ID
            stood_in["telegramChatId"] = str(OFFLINE_TELEGRAM_CHAT_ID)
        if needs_entry_dns(settings, inventory) and settings.dns_zone is None:
            config["dnsZone"] = OFFLINE_DNS_ZONE
            stood_in["dnsZone"] = OFFLINE_DNS_ZONE
        settings = parse_settings(stack, config, Problems(), project_dir=project_dir)
        missing = entry_settings_missing(settings, inventory)
        config.update({key: OFFLINE_ENTRY_SETTINGS[key] for key in missing})
        stood_in.update({key: OFFLINE_ENTRY_SETTINGS[key] for key in missing})
        settings = parse_settings(stack, config, Problems(), project_dir=project_dir)
        blockers = [replace(b, stand_in=stood_in.get(b.path, b.stand_in)) for b in checked.blockers]
        prepared.append(PreparedStack(stack, config, settings, inventory, checked.topology, stand_ins, blockers))
    return prepared


def documented_stack_outputs() -> dict[str, dict[str, Any]]:
    from .stack_outputs import check_stack_outputs

    return check_stack_outputs(load_config(STACK_OUTPUTS_FILE), str(STACK_OUTPUTS_FILE))


@contextmanager
def topology_for_program(path: Path) -> Iterator[None]:
    """The program reads the topology this preview checked (components/sites.load_stack)."""
    saved = os.environ.get(TOPOLOGY_OVERRIDE_ENV)
    os.environ[TOPOLOGY_OVERRIDE_ENV] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(TOPOLOGY_OVERRIDE_ENV, None)
        else:
            os.environ[TOPOLOGY_OVERRIDE_ENV] = saved


def run_stacks(
    prepared: list[PreparedStack], secret_prefix: str = OFFLINE_SECRET_PREFIX, gc_tuning: bool = True,
    secret_values: dict[str, str] | None = None,
) -> list[StackResult]:
    stack_outputs = documented_stack_outputs()
    results = []
    schema_violations: list[SchemaViolation] = []
    for item in prepared:
        public = {s.name: str(s.public_address) for s in item.inventory.servers.values() if s.public_address}
        started = time.perf_counter()
        with topology_for_program(item.topology.resolve()), readiness.reported_by_preview():
            run = run_program(
                item.stack,
                item.config,
                stack_outputs=stack_outputs,
                public_addresses=public,
                stand_ins=item.stand_ins,
                secret_prefix=secret_prefix,
                server_names=list(item.inventory.servers),
                public_servers=[s.name for s in item.inventory.servers.values() if s.public_ipv4],
                gc_tuning=gc_tuning,
                secret_values=secret_values,
            )
        seconds = time.perf_counter() - started
        # What the providers would refuse, checked against their published schemas.
        schema_violations += check_records(run.records)
        if item.stack == HELSINKI:
            # The local stack reads what helsinki really exported in this same preview.
            stack_outputs = {**stack_outputs, HELSINKI: run.plain_outputs()}
        result = StackResult(run, item.inventory, seconds, collect_artifacts(run), blockers=item.blockers)
        if any(r.type == FIREWALL_TYPE for r in run.records):
            result.blocked = newly_blocked(item.inventory, item.stack, item.settings.admin_cidrs)
        result.violations = check_policies(result, item.settings)
        results.append(result)
    if schema_violations:
        raise ProviderSchemaError(schema_violations)
    return results


def check_policies(result: StackResult, settings: StackSettings) -> list[Any]:
    """The policy pack's rules over what this stack registered (the same functions the Pulumi
    CLI runs with `--policy-pack policies`)."""
    from policies.rules import evaluate
    from policies.views import context_for, from_record

    ctx = context_for(
        result.run.stack,
        inventory=result.inventory,
        admin_cidrs=tuple(str(c) for c in settings.admin_cidrs),
        import_ids=settings.import_ids,
    )
    return evaluate([from_record(r) for r in result.run.records], ctx)


def collect_artifacts(run: StackRun) -> dict[str, dict[str, str]]:
    """Every file each server receives, from what the program registered: an hcloud server's
    user data, an existing host's bootstrap, and each file delivery named `<server>:<path>`."""
    files: dict[str, dict[str, str]] = {}
    for record in run.records:
        inputs = unwrap_secrets(record.inputs)
        if record.type == SERVER_TYPE and "userData" in inputs:
            files.setdefault(inputs.get("name", record.name), {})[USER_DATA_ARTIFACT] = inputs["userData"]
            continue
        bootstrapped = bootstrapped_server(record.type, record.name)
        if bootstrapped is not None and "stdin" in inputs:
            files.setdefault(bootstrapped, {})[USER_DATA_ARTIFACT] = inputs["stdin"]
            continue
        delivered = delivered_file(record.name)
        if delivered is None:
            continue
        server, path = delivered
        if record.type == REMOTE_COMMAND_TYPE and "stdin" in inputs:
            files.setdefault(server, {})[path] = inputs["stdin"]
        elif record.type == REMOTE_COPY_TYPE and hasattr(inputs.get("source"), "text"):
            files.setdefault(server, {})[path] = inputs["source"].text
    return files


def secret_artifacts(run: StackRun) -> list[str]:
    """`server:path` of every file built from secret values. Offline those values are
    placeholders (generated secrets and config secrets alike), so the artifacts show the files'
    shape and never a real secret; a real run delivers them root-only."""
    content_input = {REMOTE_COMMAND_TYPE: "stdin", REMOTE_COPY_TYPE: "source"}
    return sorted(
        r.name
        for r in run.records
        if delivered_file(r.name) is not None and content_input.get(r.type) in r.secret_paths
    )


def write_results(results: list[StackResult], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".preview-", dir=out))
    try:
        for result in results:
            stack_dir = staging / result.run.stack
            (stack_dir / "artifacts").mkdir(parents=True)
            _write_json(stack_dir / "resources.json", result.run.resources())
            _write_json(stack_dir / "outputs.json", result.run.masked_outputs())
            _write_json(stack_dir / "policy.json", [v.as_dict() for v in result.violations])
            _write_json(stack_dir / "secret-files.json", secret_artifacts(result.run))
            _write_artifacts(stack_dir / "artifacts", result.artifacts)
        for result in results:
            final = out / result.run.stack
            if final.exists():
                shutil.rmtree(final)
            (staging / result.run.stack).rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_artifacts(root: Path, artifacts: dict[str, dict[str, str]]) -> None:
    """Every server's files under `root/<server>/<path>` (root exists, empty): each directory
    made with one mkdir, parents first, then each file written with one open."""
    targets = {
        f"{server}/{path.lstrip('/')}": content for server, files in artifacts.items() for path, content in files.items()
    }
    directories: set[str] = set()
    for target in targets:
        parts = target.split("/")[:-1]
        directories.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    for directory in sorted(directories, key=lambda d: (d.count("/"), d)):
        os.mkdir(root / directory)
    for target, content in targets.items():
        with open(root / target, "w", encoding="utf-8") as file:
            file.write(content)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def summary(result: StackResult) -> str:
    """What a person reads at a glance: counts by component and type, adopted vs created."""
    run = result.run
    records = run.records
    servers = [r for r in records if r.type == SERVER_TYPE]
    adopted = [r for r in servers if r.import_id]
    components = [r for r in records if not r.custom]
    custom = [r for r in records if r.custom]
    lines = [
        f"{run.stack}: {len(records)} resources ({len(components)} components, {len(custom)} resources) "
        f"in {result.seconds:.2f} s",
        f"  servers: {len(servers)} hcloud ({len(adopted)} adopted, {len(servers) - len(adopted)} created)"
        + _other_hosts(result),
    ]
    by_component = Counter(r.type for r in components)
    lines.append("  components:")
    lines += [f"    {count:>4}  {kind}" for kind, count in sorted(by_component.items())]
    by_type = Counter(r.type for r in custom)
    adopted_by_type = Counter(r.type for r in custom if r.import_id)
    protected_by_type = Counter(r.type for r in custom if r.protect)
    lines.append("  resources:")
    for kind, count in sorted(by_type.items()):
        notes = []
        if adopted_by_type[kind]:
            notes.append(f"{adopted_by_type[kind]} adopted")
        if protected_by_type[kind]:
            notes.append(f"{protected_by_type[kind]} protected")
        lines.append(f"    {count:>4}  {kind}" + (f"  ({', '.join(notes)})" if notes else ""))
    lines += blocker_lines(result)
    for note in result.inventory.notes:
        lines.append(f"  note: {note}")
    lines += _inbound_lines(result)
    mandatory = len(result.mandatory_violations)
    advisory = len(result.violations) - mandatory
    lines.append(f"  policies: {mandatory} mandatory violations, {advisory} advisory")
    for v in result.violations:
        lines.append(f"    [{v.enforcement}] {v.policy}: {v.message}")
    artifact_count = sum(len(files) for files in result.artifacts.values())
    lines.append(f"  artifacts: {artifact_count} files for {len(result.artifacts)} servers")
    return "\n".join(lines)


def blocker_lines(result: StackResult) -> list[str]:
    """Every blocker of a real run, with what the preview stood in for it."""
    if not result.blockers:
        return [f"  real run: ready (nothing missing from Pulumi.{result.run.stack}.yaml or the topology)"]
    stack = result.run.stack
    lines = [f"  real run: BLOCKED by {len(result.blockers)} (`pulumi up` and `make pulumi-up` stop on each; "
             f"`unde-infra validate --real-run --stack {stack}` gives each with its fix):"]
    return lines + [f"    {line}" for line in readiness.summary_lines(result.blockers, stack)]


def _inbound_lines(result: StackResult) -> list[str]:
    """Per server, the public traffic the change starts to block."""
    lines = []
    if result.blocked:
        lines.append("  public traffic the new firewalls block (servers.<name>.inbound):")
        for server, entry in result.blocked:
            state = ("closed on purpose (close: true)" if entry.close
                     else "NOT acknowledged: a mandatory violation until close: true is set")
            lines.append(f"    {server.name}: {entry.describe()} ({entry.reason}): {state}")
    return lines


def _other_hosts(result: StackResult) -> str:
    bootstraps = [r for r in result.run.records if bootstrapped_server(r.type, r.name) is not None]
    dedicated = [s for s in result.inventory.stack_servers(result.run.stack) if s.dedicated]
    parts = []
    if bootstraps:
        parts.append(f"{len(bootstraps)} existing hosts bootstrapped over SSH")
    if dedicated:
        parts.append(f"{len(dedicated)} dedicated ({', '.join(s.name for s in dedicated)}, not managed by hcloud)")
    return "; " + "; ".join(parts) if parts else ""


def preview(
    stacks: list[str],
    topology: Path | None,
    shards: int | None,
    out: Path,
    project_dir: Path = ROOT,
    leave_frozen: bool = False,
) -> list[StackResult]:
    """Run and write the preview of `stacks`. `leave_frozen`: see gc_settings.quiet_gc."""
    with quiet_gc(leave_frozen=leave_frozen):
        prepared = prepare(stacks, topology, shards, project_dir=project_dir)
        results = run_stacks(prepared)
        with writing_to(out):
            write_results(results, out)
    return results


def stacks_for(choice: str) -> list[str]:
    return list(STACKS) if choice == "all" else [choice]

