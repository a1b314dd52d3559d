"""`unde-infra ops`: the printed commands (routes through the jump hosts, patronictl from the
deployed venv, the MEK delivery's URN as the local stack names it) and `--execute`, which asks
for confirmation, checks the printed preconditions on patronictl's own JSON, runs exactly those
commands (here against stand-in ssh and pulumi programs that record their arguments) and waits
for Patroni's expected state."""

from __future__ import annotations

import io
import json
import os
import sys
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
    result = unde("ops", "switchover", "--shard", "0", "--to", "replica")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Switchover of shard0: the leader moves from local-shard-0 (the local site) "
                                    "to shard-replica-0 (Helsinki); writes pause for a few seconds.\n")
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


def test_no_default_moves_the_leader() -> None:
    result = unde("ops", "switchover", "--shard", "0")
    assert result.returncode == 2 and "the following arguments are required: --to" in result.stderr
    assert result.stdout == ""


def test_the_plan_prints_each_precondition_execute_checks() -> None:
    switchover = unde("ops", "switchover", "--shard", "0", "--to", "primary").stdout.splitlines()
    start = switchover.index("# --execute reads this first (list -f json, show-config) and stops before any action unless:")
    assert switchover[start - 1].endswith("'patronictl -c /etc/patroni/patroni.yml list shard0'")
    assert switchover[start + 1:start + 4] == [
        "#   shard-replica-0 leads shard0, running",
        "#   local-shard-0 is a streaming replica, at most 16 MB behind",
        "#   shard0 is not paused (maintenance mode off)",
    ]
    reinit = unde("ops", "reinit", "--shard", "0", "--member", "replica").stdout.splitlines()
    start = reinit.index("# --execute reads this first (list -f json) and stops before any action unless:")
    assert reinit[start + 1:start + 3] == ["#   local-shard-0 leads shard0, running",
                                           "#   shard-replica-0 is a member of shard0 and not its leader"]


@pytest.mark.parametrize(("args", "message"), [
    (("switchover", "--shard", "4", "--to", "replica"), "--shard: 4 is not a shard (0..0)"),
    (("reinit", "--shard", "0", "--member", "local-app"), "'local-app' is no member of shard0"),
    (("redeliver-mek", "--server", "local-app"), "--server: 'local-app' receives no master encryption key"),
])
def test_bad_requests_exit_2(args: tuple[str, ...], message: str) -> None:
    result = unde("ops", *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


# `patronictl list -f json shard0` as Patroni prints it (ctl.output_members): a column whose value
# is empty is left out, so the leader has no lag column. Debian 13's 4.0.7 shows "Lag in MB" (an
# int, or "unknown" when the replica's position is not known) ...
PATRONI_40 = [
    {"Cluster": "shard0", "Member": "local-shard-0", "Host": "10.2.0.10", "Role": "Leader", "State": "running",
     "TL": 3},
    {"Cluster": "shard0", "Member": "shard-replica-0", "Host": "10.1.2.10", "Role": "Replica", "State": "streaming",
     "TL": 3, "Lag in MB": 0},
]
# ... the 4.1 of the adopted Debian 12 servers the received and replayed positions and their lags.
MEMBERS = [
    {"Cluster": "shard0", "Member": "local-shard-0", "Host": "10.2.0.10", "Role": "Replica", "State": "streaming",
     "TL": 3, "Receive LSN": "0/5000148", "Receive Lag": 0, "Replay LSN": "0/5000148", "Replay Lag": 0},
    {"Cluster": "shard0", "Member": "shard-replica-0", "Host": "10.1.2.10", "Role": "Leader", "State": "running",
     "TL": 3},
]


def test_expectations_read_patronictls_json() -> None:
    expect = ops.Expect("shard-replica-0", ("local-shard-0",))
    assert ops.expectation_problem(json.dumps(MEMBERS), expect) is None
    stopped = [dict(MEMBERS[0], State="stopped"), MEMBERS[1]]
    assert ops.expectation_problem(json.dumps(stopped), expect) == "local-shard-0 is not streaming (Replica, stopped)"
    assert ops.expectation_problem(json.dumps(MEMBERS), ops.Expect("local-shard-0", ())) == (
        "local-shard-0 is not the running leader (Replica, streaming; leader: shard-replica-0)")
    assert "not the output of patronictl" in (ops.expectation_problem("Error: no cluster", expect) or "")


def unmet(members: list[dict], step: ops.Step, config: str = "") -> list[str]:
    state = ops.ClusterState(ops.parse_members(json.dumps(members)), ops.is_paused(config))
    return ops.precondition_problems(step.require, ops.scope_of(step), state)


def test_a_switchover_needs_the_leader_it_names_a_streaming_target_close_behind_and_no_pause(
        inventory: Inventory) -> None:
    to_helsinki = ops.switchover_steps(inventory.shards[0], "replica")[0]
    assert unmet(PATRONI_40, to_helsinki) == []
    assert unmet(PATRONI_40, to_helsinki, "loop_wait: 5\npause: false\nttl: 20\n") == []
    target_ok = "shard-replica-0 is a streaming replica, at most 16 MB behind: no, "
    replica, leader = PATRONI_40[1], PATRONI_40[0]
    assert unmet([leader, dict(replica, **{"Lag in MB": 212})], to_helsinki) == [f"{target_ok}shard-replica-0 is 212 MB behind"]
    assert unmet([leader, dict(replica, **{"Lag in MB": 16})], to_helsinki) == []  # the bound itself passes
    assert unmet([leader, dict(replica, **{"Lag in MB": "unknown"})], to_helsinki) == [
        f"{target_ok}shard-replica-0 shows no lag ({{'Lag in MB': 'unknown'}})"]
    assert unmet([leader, dict(replica, State="running")], to_helsinki) == [
        f"{target_ok}shard-replica-0 is not streaming (Replica, running)"]
    # Patroni 4.1's columns: the larger of the two lags counts.
    home = ops.switchover_steps(inventory.shards[0], "primary")[0]
    assert unmet(MEMBERS, home) == []
    assert unmet([dict(MEMBERS[0], **{"Replay Lag": 40}), MEMBERS[1]], home) == [
        "local-shard-0 is a streaming replica, at most 16 MB behind: no, local-shard-0 is 40 MB behind"]
    # No leader at all (the old one stopped, nobody promoted): every precondition says what it saw.
    assert unmet([dict(leader, Role="Replica", State="stopped"), replica], to_helsinki, "pause: true\n") == [
        "local-shard-0 leads shard0, running: no, local-shard-0 is not the running leader (Replica, stopped; leader: none)",
        "shard0 is not paused (maintenance mode off): no, maintenance mode is on (patronictl show-config: pause)",
    ]
    # The target leads already: the plan's "now" is wrong, nothing is moved.
    swapped = [dict(leader, Role="Replica", State="streaming", **{"Lag in MB": 0}), dict(replica, Role="Leader",
                                                                                         State="running")]
    assert unmet(swapped, to_helsinki) == [
        "local-shard-0 leads shard0, running: no, local-shard-0 is not the running leader (Replica, streaming; "
        "leader: shard-replica-0)",
        f"{target_ok}shard-replica-0 is not streaming (Leader, running)"]


def test_a_reinit_needs_a_leader_and_refuses_to_rebuild_it(inventory: Inventory) -> None:
    rebuild_replica = ops.reinit_steps(inventory.shards[0], "replica")[0]
    assert unmet(PATRONI_40, rebuild_replica) == []
    assert unmet([PATRONI_40[0], dict(PATRONI_40[1], State="start failed")], rebuild_replica) == []  # why one rebuilds
    rebuild_leader = ops.reinit_steps(inventory.shards[0], "primary")[0]
    assert unmet(PATRONI_40, rebuild_leader) == [
        "shard-replica-0 leads shard0, running: no, shard-replica-0 is not the running leader (Replica, streaming; "
        "leader: local-shard-0)",
        "local-shard-0 is a member of shard0 and not its leader: no, local-shard-0 is the Leader (running); "
        "switch over first"]
    assert unmet([PATRONI_40[0]], rebuild_replica) == [
        "shard-replica-0 is a member of shard0 and not its leader: no, shard-replica-0 is not listed "
        "(members: local-shard-0)"]


def test_what_patronictl_prints_is_read_or_refused() -> None:
    assert ops.is_paused("") is False  # no dynamic configuration at all
    assert ops.is_paused("pause: on\n") is True and ops.is_paused("pause: 'yes'\n") is True
    with pytest.raises(ValueError, match="not the output of patronictl show-config"):
        ops.is_paused("- a list\n")
    with pytest.raises(ValueError, match="not the output of patronictl list -f json"):
        ops.parse_members('{"Member": "x"}')


class Terminal(io.StringIO):
    """stdin as a person at a terminal types it."""

    def isatty(self) -> bool:
        return True


def stand_in_ssh(tmp_path: Path, lists: list[list[dict]], config: str = "") -> Path:
    """A PATH with an ssh that logs its arguments and answers patronictl's reads: `list -f json`
    with each of `lists` in turn (the last one again and again), `show-config` with `config`."""
    log = tmp_path / "calls"
    answers = tmp_path / "answers"
    answers.mkdir()
    for n, members in enumerate(lists, 1):
        (answers / str(n)).write_text(json.dumps(members))
    (tmp_path / "config").write_text(config)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$*" >> {log}\n'
        'case "${@: -1}" in\n'
        f'  *"list -f json"*) n=$(ls {answers} | head -1); cat {answers}/$n; [ "$(ls {answers} | wc -l)" -gt 1 ] '
        f'&& rm {answers}/$n;;\n'
        f'  *show-config*) cat {tmp_path / "config"};;\n'
        "esac\n"
        "exit 0\n")
    (bin_dir / "ssh").chmod(0o755)
    return bin_dir


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls"
    return log.read_text().splitlines() if log.exists() else []


HELSINKI_ARGS = "-o ConnectTimeout=10 -J root@46.62.233.30 root@10.1.2.10"
READ_STATE = [f"{HELSINKI_ARGS} {PATRONICTL} list -f json shard0", f"{HELSINKI_ARGS} {PATRONICTL} show-config shard0"]


def test_execute_without_a_terminal_needs_yes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{stand_in_ssh(tmp_path, [PATRONI_40])}:{os.environ['PATH']}")
    monkeypatch.setattr(sys, "stdin", io.StringIO("shard0\n"))  # a pipe, not a person
    result = unde("ops", "switchover", "--shard", "0", "--to", "replica", "--execute")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "--execute: stdin is not a terminal to confirm on; --yes runs without asking (CI)\n"
    assert calls(tmp_path) == []


def test_execute_runs_only_once_the_shards_name_is_typed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{stand_in_ssh(tmp_path, [PATRONI_40])}:{os.environ['PATH']}")
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    refused = unde("ops", "switchover", "--shard", "0", "--to", "replica", "--execute")
    assert refused.returncode == 1 and "# Switchover of shard0" in refused.stdout
    assert refused.stderr == "ops: type shard0 to run the commands above (anything else stops): ops: not confirmed; nothing ran\n"
    assert calls(tmp_path) == []
    monkeypatch.setattr(sys, "stdin", Terminal("shard0\n"))
    monkeypatch.setattr(ops, "WAIT_INTERVAL_SECONDS", 0.1)
    monkeypatch.setattr(ops, "WAIT_SECONDS", 0.5)  # the stand-in never shows the switched-over shard
    typed = unde("ops", "switchover", "--shard", "0", "--to", "replica", "--execute")
    assert calls(tmp_path)[:3] == [*READ_STATE, f"{HELSINKI_ARGS} {PATRONICTL} list shard0"]
    assert "ops: checked on shard-replica-0: local-shard-0 leads shard0, running; " in typed.stdout
    assert typed.returncode == 1 and "ops: after 0.5 s: shard-replica-0 is not the running leader" in typed.stderr


def test_execute_stops_before_any_action_when_a_precondition_fails(tmp_path: Path, monkeypatch) -> None:
    lagging = [PATRONI_40[0], dict(PATRONI_40[1], **{"Lag in MB": 212})]
    bin_dir = stand_in_ssh(tmp_path, [lagging], config="pause: true\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = unde("ops", "switchover", "--shard", "0", "--to", "replica", "--execute", "--yes")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "ops: nothing ran: shard-replica-0 is a streaming replica, at most 16 MB behind: no, shard-replica-0 is 212 MB behind",
        "ops: nothing ran: shard0 is not paused (maintenance mode off): no, maintenance mode is on (patronictl show-config: pause)",
    ]
    assert calls(tmp_path) == READ_STATE  # the state was read over the steps' own route, and nothing else ran
    assert "running the commands above" in result.stdout  # confirmed (--yes), then checked


def test_execute_stops_when_the_state_cannot_be_read(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'calls'}\n"
                                 "echo 'ssh: connect to host 46.62.233.30 port 22: Connection timed out' >&2\nexit 255\n")
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("LOCAL_JUMP", "root@198.51.100.7")
    result = unde("ops", "reinit", "--shard", "0", "--member", "replica", "--execute", "--yes")
    assert result.returncode == 1
    assert result.stderr == ("ops: nothing ran: could not list shard0's members on local-shard-0 (exit 255: "
                             "ssh: connect to host 46.62.233.30 port 22: Connection timed out)\n")
    assert calls(tmp_path) == [f'-o ConnectTimeout=10 -J root@198.51.100.7 root@10.2.0.10 {PATRONICTL} list -f json shard0']


def test_execute_runs_what_was_printed_and_waits_for_patroni(tmp_path: Path, monkeypatch) -> None:
    """ssh is a stand-in that logs its arguments; `list -f json` answers the shard before the
    switchover (the preconditions), a stopped old leader, then the switched-over shard."""
    before = PATRONI_40
    bin_dir = stand_in_ssh(tmp_path, [before, [dict(MEMBERS[0], State="stopped"), MEMBERS[1]], MEMBERS])
    printed = unde("ops", "switchover", "--shard", "0", "--to", "replica")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(ops, "WAIT_INTERVAL_SECONDS", 0.1)
    monkeypatch.setattr(ops, "WAIT_SECONDS", 20)
    result = unde("ops", "switchover", "--shard", "0", "--to", "replica", "--execute", "--yes")
    assert result.returncode == 0, result.stderr
    logged = calls(tmp_path)
    assert logged[:2] == READ_STATE  # first the preconditions, over the steps' route
    expected = [line.removeprefix("ssh ").replace("'", "") for line in commands(printed.stdout)]
    assert logged[2:5] == expected  # then the very commands printed, in order
    assert logged[5:] == [f"{HELSINKI_ARGS} {PATRONICTL} list -f json shard0"] * 2
    assert ("ops: checked on shard-replica-0: local-shard-0 leads shard0, running; shard-replica-0 is a streaming "
            "replica, at most 16 MB behind; shard0 is not paused (maintenance mode off)") in result.stdout
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
    result = unde("ops", "redeliver-mek", "--server", "local-orchestrator", "--execute", "--yes")
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
