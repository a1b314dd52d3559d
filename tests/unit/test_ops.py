"""`unde-infra ops`: the printed commands (routes through the jump hosts, patronictl from the
deployed venv, the MEK delivery's URN as the local stack names it) and `--execute`, which runs
exactly those commands (here against stand-in ssh and pulumi programs that record their
arguments) and waits for Patroni's expected state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import project_copy, unde
from unde_infra import ops
from unde_infra.errors import TopologyError
from unde_infra.model import Inventory, load_topology
from unde_infra.render.app_secrets import MEK_PATH
from unde_infra.settings import ExistingHost

# On PATH on both systems (Debian 13's package, Debian 12's link to the virtualenv's).
PATRONICTL = "patronictl -c /etc/patroni/patroni.yml"
HELSINKI_SSH = "ssh -o ConnectTimeout=10 -J root@46.62.233.30 root@10.1.2.10"


def commands(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_switchover_to_helsinki_runs_patronictl_on_the_replica_through_the_gateway() -> None:
    result = unde("ops", "switchover", "--shard", "0")
    assert result.returncode == 0, result.stderr
    assert commands(result.stdout) == [
        f"{HELSINKI_SSH} '{PATRONICTL} list shard0'",
        f"{HELSINKI_SSH} '{PATRONICTL} switchover shard0 --candidate shard-replica-0 --force'",
        f"{HELSINKI_SSH} '{PATRONICTL} list shard0'",
    ]


def test_local_servers_are_reached_through_the_local_jump_host() -> None:
    given = unde("ops", "switchover", "--shard", "0", "--to", "primary", "--via", "primary",
                 "--local-jump", "root@198.51.100.7")
    lines = commands(given.stdout)
    assert lines[0] == "LOCAL_JUMP=root@198.51.100.7  # the local site's jump host"
    assert lines[2] == (f"ssh -o ConnectTimeout=10 -J \"$LOCAL_JUMP\" root@10.2.0.10 "
                        f"'{PATRONICTL} switchover shard0 --candidate local-shard-0 --force'")
    # Not given: read from the local stack's outputs, unless the shell has it already.
    default = commands(unde("ops", "reinit", "--shard", "0", "--member", "replica", "--via", "primary").stdout)
    assert default[0].startswith('LOCAL_JUMP="${LOCAL_JUMP:-$(pulumi stack output -s local sshJump)}"')
    assert default[2].endswith(f"'{PATRONICTL} reinit shard0 shard-replica-0 --force --wait'")


def test_existing_local_hosts_are_reached_directly_with_sudo(inventory: Inventory) -> None:
    reach = ops.Reach(inventory, "existing", {"local-shard-0": ExistingHost("192.0.2.10", "admin", 2222)})
    shard = inventory.shards[0]
    steps = ops.switchover_steps(shard, "primary", via="primary")
    assert ops.command_line(steps[1], reach) == (
        f"ssh -o ConnectTimeout=10 -p 2222 admin@192.0.2.10 "
        f"'sudo -n {PATRONICTL} switchover shard0 --candidate local-shard-0 --force'")
    assert ops.preamble(steps, reach, None) == []  # no jump host needed
    with pytest.raises(ops.OpsError, match="hosts.local-shard-0"):
        ops.Reach(inventory, "existing", {}).route(shard.primary)


def test_every_mek_urn_is_one_the_local_stack_registers(run_stack) -> None:
    result = run_stack("local", shards=2)
    registered = {r.urn for r in result.run.records}
    inventory = load_topology(shards=2)
    servers = ops.mek_servers(inventory)
    assert {s.name for s in servers} == {"local-orchestrator", "standby-orchestrator", "local-shard-0",
                                         "local-shard-1", "shard-replica-0", "shard-replica-1"}
    for server in servers:
        assert ops.mek_urn(server) in registered, server.name
    # ... and those are all the key's deliveries there are.
    delivered = {r.urn for r in result.run.records if r.name.endswith(f":{MEK_PATH}")}
    assert delivered == {ops.mek_urn(s) for s in servers}


def test_redeliver_mek_prints_the_targeted_replace_and_a_check() -> None:
    result = unde("ops", "redeliver-mek", "--server", "standby-orchestrator")
    assert result.returncode == 0, result.stderr
    urn = f"urn:pulumi:local::unde-infra::unde:local:WarmStandby$command:remote:Command::standby-orchestrator:{MEK_PATH}"
    assert commands(result.stdout) == [
        f"pulumi up -s local --target-replace '{urn}'",
        f"ssh -o ConnectTimeout=10 -J root@46.62.233.30 root@10.1.0.21 'stat -c %a,%U,%s {MEK_PATH}'",
    ]


@pytest.mark.parametrize(("args", "message"), [
    (("switchover", "--shard", "4"), "--shard: 4 is not a shard (0..0)"),
    (("reinit", "--shard", "0", "--member", "local-app"), "'local-app' is no member of shard0"),
    (("redeliver-mek", "--server", "local-app"), "--server: 'local-app' receives no master encryption key"),
])
def test_bad_requests_exit_2(args: tuple[str, ...], message: str) -> None:
    result = unde("ops", *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


MEMBERS = [
    {"Cluster": "shard0", "Member": "local-shard-0", "Host": "10.2.0.10", "Role": "Replica", "State": "streaming",
     "TL": 3, "Receive Lag": 0, "Replay Lag": 0},
    {"Cluster": "shard0", "Member": "shard-replica-0", "Host": "10.1.2.10", "Role": "Leader", "State": "running",
     "TL": 3},
]


def test_expectations_read_patronictls_json() -> None:
    expect = ops.Expect("shard-replica-0", ("local-shard-0",))
    assert ops.expectation_problem(json.dumps(MEMBERS), expect) is None
    stopped = [dict(MEMBERS[0], State="stopped"), MEMBERS[1]]
    assert ops.expectation_problem(json.dumps(stopped), expect) == "local-shard-0 is not streaming (stopped)"
    assert ops.expectation_problem(json.dumps(MEMBERS), ops.Expect("local-shard-0", ())) == (
        "local-shard-0 is not the running leader (Replica, streaming)")
    assert "not the output of patronictl" in (ops.expectation_problem("Error: no cluster", expect) or "")


def test_execute_runs_what_was_printed_and_waits_for_patroni(tmp_path: Path, monkeypatch) -> None:
    """ssh and pulumi are stand-ins that log their arguments; `list -f json` answers a stopped
    old leader first, then the switched-over shard."""
    log = tmp_path / "calls"
    answers = tmp_path / "answers"
    answers.mkdir()
    (answers / "1").write_text(json.dumps([dict(MEMBERS[0], State="stopped"), MEMBERS[1]]))
    (answers / "2").write_text(json.dumps(MEMBERS))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$*" >> {log}\n'
        'case "${@: -1}" in\n'
        f'  *"list -f json"*) n=$(ls {answers} | head -1); cat {answers}/$n; [ "$(ls {answers} | wc -l)" -gt 1 ] '
        f'&& rm {answers}/$n;;\n'
        "esac\n"
        "exit 0\n")
    (bin_dir / "ssh").chmod(0o755)
    printed = unde("ops", "switchover", "--shard", "0")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(ops, "WAIT_INTERVAL_SECONDS", 0.1)
    monkeypatch.setattr(ops, "WAIT_SECONDS", 20)
    result = unde("ops", "switchover", "--shard", "0", "--execute")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    expected = [line.removeprefix("ssh ").replace("'", "") for line in commands(printed.stdout)]
    assert calls[:3] == expected  # the very commands printed, in order
    assert calls[3:] == [f"-o ConnectTimeout=10 -J root@46.62.233.30 root@10.1.2.10 {PATRONICTL} list -f json shard0"] * 2
    assert "ops: shard-replica-0 leads, local-shard-0 streams" in result.stdout


def test_execute_stops_at_the_first_failing_command(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'pulumi-args'}\nexit 255\n")
    (bin_dir / "pulumi").chmod(0o755)
    (bin_dir / "ssh").write_text(f"#!/bin/sh\ntouch {tmp_path / 'ssh-ran'}\n")
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("LOCAL_JUMP", "root@198.51.100.7")
    result = unde("ops", "redeliver-mek", "--server", "local-orchestrator", "--execute")
    assert result.returncode == 1 and "a command failed (exit 255)" in result.stderr
    assert (tmp_path / "pulumi-args").read_text().split() == [
        "up", "-s", "local", "--target-replace",
        f"urn:pulumi:local::unde-infra::unde:local:AgentHost$command:remote:Command::local-orchestrator:{MEK_PATH}"]
    assert not (tmp_path / "ssh-ran").exists()


def test_a_bad_local_stack_config_is_reported_not_passed_over(inventory: Inventory, tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    config = project / "Pulumi.local.yaml"
    config.write_text(config.read_text().replace("unde-infra:provider: hcloud", "unde-infra:provider: bare-metal"))
    with pytest.raises(TopologyError) as raised:
        ops.reach_from_stack_config(inventory, project)
    assert [p.path for p in raised.value.problems] == ["provider"]
