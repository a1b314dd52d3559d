"""A first real run that cannot hurt: everything it needs is checked before it starts, by
`preview` (reported), `validate --real-run` and the Makefile's real-run targets (refused), and by
the program itself under the CLI (refused), each blocker as `path: message; fix: <command>`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

from tests.conftest import ROOT, TEAM_ADMIN_CIDR, TEAM_SSH_KEY
from unde_infra.errors import Problems, TopologyError
from unde_infra.model import load_topology
from unde_infra.offline import run_program
from unde_infra.preview import documented_stack_outputs
from unde_infra.readiness import blockers
from unde_infra.settings import (
    HTTPS_URL_SECRETS,
    SECRET_SHAPES,
    parse_settings,
    read_stack_config,
    secret_shape_problem,
    stand_in_secret,
)


def unde(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unde_infra", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def paths(stack: str, raw: dict, inventory=None) -> list[str]:
    problems = Problems()
    settings = parse_settings(stack, raw, problems)
    assert not problems, [str(p) for p in problems.items]
    return [b.path for b in blockers(settings, inventory or load_topology())]


def test_the_committed_configs_are_not_ready_and_say_why() -> None:
    inventory = load_topology()
    helsinki = paths("helsinki", read_stack_config("helsinki"), inventory)
    # The placeholders: a real run would lock the admins out of the 14 running public servers.
    assert helsinki[:2] == ["sshKeys[0]", "adminCidrs[0]"]
    assert sum(p.startswith("importIds.") for p in helsinki) == 15
    assert {"networkImport.id", "sshKeyImportIds.0", "telegramChatId"} <= set(helsinki)
    assert sum(p.endswith(".inbound") for p in helsinki) == 14
    local = paths("local", read_stack_config("local"), inventory)
    assert local == ["sshKeys[0]", "adminCidrs[0]", "telegramChatId", "dnsZone", "acmeEmail"]


@pytest.mark.parametrize(("cidr", "why"), [
    ("198.51.100.0/24", "a documentation range (RFC 5737)"),
    ("192.0.2.7/32", "a documentation range (RFC 5737)"),
    ("203.0.113.128/25", "a documentation range (RFC 5737)"),
    ("2001:db8:1::/48", "a documentation range (RFC 3849)"),
    ("3fff:10::/32", "a documentation range (RFC 9637)"),
    ("10.8.0.0/16", "not a public range"),
    ("100.64.0.0/10", "not a public range"),
    ("fd00::/8", "not a public range"),
    (TEAM_ADMIN_CIDR, None),
    ("2a01:4f9:c010::/48", None),
])
def test_an_admin_network_nobody_can_come_from_blocks_the_run(cidr: str, why: str | None) -> None:
    problems = Problems()
    settings = parse_settings("local", {"site": "local", "adminCidrs": [cidr], "sshKeys": [TEAM_SSH_KEY]}, problems)
    found = [b for b in blockers(settings, load_topology()) if b.path == "adminCidrs[0]"]
    if why is None:
        assert found == []
    else:
        (blocker,) = found
        assert blocker.message.startswith(f"{settings.admin_cidrs[0]} is {why}")
        assert "pulumi config set --path 'adminCidrs[0]'" in blocker.fix


@pytest.mark.parametrize(("key", "placeholder"), [
    (TEAM_SSH_KEY, False),
    (TEAM_SSH_KEY.replace("admin@unde", "replace-with-your-admin-key"), True),
    (TEAM_SSH_KEY.replace("admin@unde", "EXAMPLE key"), True),
    (TEAM_SSH_KEY.replace("admin@unde", "changeme"), True),
    # The repository's own sample key, whatever its comment says now.
    (read_stack_config("local")["sshKeys"][0].replace("replace-with-your-admin-key", "ops@unde"), True),
])
def test_a_placeholder_admin_key_blocks_the_run(key: str, placeholder: bool) -> None:
    found = paths("local", {"site": "local", "sshKeys": [key], "adminCidrs": [TEAM_ADMIN_CIDR]})
    assert ("sshKeys[0]" in found) is placeholder


def test_what_exists_is_adopted_by_id_or_said_to_be_new(real_run_ready) -> None:
    inventory = load_topology(Path(os.environ["UNDE_INFRA_TOPOLOGY"]))
    ready = real_run_ready("helsinki")
    assert paths("helsinki", ready, inventory) == []
    # The network, the key and the zone: each needs its id, or `new` where it is not there yet.
    without = {k: v for k, v in ready.items() if k not in ("networkImport", "sshKeyImportIds")}
    assert paths("helsinki", without, inventory) == ["networkImport.id", "sshKeyImportIds.0"]
    assert paths("helsinki", {**without, "sshKeyImportIds": {"0": "31337"}}, inventory) == ["networkImport.id"]
    local = real_run_ready("local")
    assert paths("local", local, inventory) == []
    assert paths("local", {k: v for k, v in local.items() if k != "dnsZoneImport"}, inventory) == ["dnsZoneImport"]
    problems = Problems()
    parse_settings("local", {**local, "dnsZoneImport": "old"}, problems)
    assert [str(p) for p in problems.items] == [
        "dnsZoneImport: hcloud zone ids are numbers (got 'old'), or `new` for one the stack creates"]


def test_an_adopted_zone_is_imported_by_its_id(fresh_event_loop, real_run_ready) -> None:
    helsinki = documented_stack_outputs()
    run = run_program("local", real_run_ready("local", dnsZoneImport="8080"), stack_outputs=helsinki)
    (zone,) = [r for r in run.records if r.type == "hcloud:index/zone:Zone"]
    assert zone.import_id == "8080" and zone.protect
    run = run_program("local", real_run_ready("local"), stack_outputs=helsinki)
    (zone,) = [r for r in run.records if r.type == "hcloud:index/zone:Zone"]
    assert zone.import_id is None


@pytest.mark.parametrize("key", sorted({*SECRET_SHAPES, *HTTPS_URL_SECRETS}))
def test_every_secret_has_a_shape_and_its_stand_in_has_it(key: str) -> None:
    assert secret_shape_problem(key, stand_in_secret(key, "offline-placeholder")) == ""
    assert secret_shape_problem(key, stand_in_secret(key, "KNOWNSECRET7f3a9c")) == ""
    assert "KNOWNSECRET7f3a9c" in stand_in_secret(key, "KNOWNSECRET7f3a9c")


@pytest.mark.parametrize(("key", "value", "ok"), [
    ("slackWebhookUrl", "https://hooks.slack.com/services/T000/B000/XXXXXXXX", True),
    ("slackWebhookUrl", "hooks.slack.com/services/T000/B000/XXXXXXXX", False),
    ("slackWebhookUrl", "http://hooks.slack.com/services/T000/B000/XXXXXXXX", False),
    ("slackWebhookUrl", "https://hooks.slack.com/services/T000 B000", False),
    ("slackWebhookUrl", "https://user:pw@hooks.slack.com/x", False),
    ("heartbeatUrl", "https://hc-ping.com/0f0f0f0f-aaaa-bbbb-cccc-0123456789ab", True),
    ("heartbeatUrl", "https://:443/ping", False),
    ("heartbeatUrl", "my-heartbeat-id", False),
    ("telegramBotToken", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0", True),
    ("telegramBotToken", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0", False),
    ("posthogApiKey", "phc_0123456789abcdefghijABCDEFGHIJ0123456789xyz", True),
    ("posthogApiKey", "phx_personal_key_0123456789abcdef", False),
    ("hcloud:token", "A" * 64, True),
    ("hcloud:token", "A" * 63, False),
    ("dnsApiToken", "dns-console-token", False),
    ("objectStorageAccessKey", "W7JX2K9Q4M1N8B3V6C5Z", True),
    ("objectStorageAccessKey", "W7JX 2K9Q", False),
])
def test_a_secret_of_the_wrong_kind_is_refused_without_showing_it(key: str, value: str, ok: bool) -> None:
    problem = secret_shape_problem(key, value)
    assert (problem == "") is ok
    if not ok:
        assert value not in problem and "the value is not shown" in problem


def test_the_program_refuses_a_webhook_that_is_not_a_url(fresh_event_loop, real_run_ready) -> None:
    """What Alertmanager would refuse at start (and stop) is refused before anything is registered."""
    with pytest.raises(pulumi.RunError) as caught:
        run_program("helsinki", real_run_ready("helsinki"),
                    secret_values={"slackWebhookUrl": "T000/B000/notaurl", "telegramBotToken": "12345"})
    cause = caught.value.__cause__
    assert isinstance(cause, TopologyError)
    assert [p.path for p in cause.problems] == ["slackWebhookUrl", "telegramBotToken"]
    assert "T000/B000/notaurl" not in cause.report() and "12345" not in cause.report()


def ready_project(tmp_path: Path, real_run_ready, **local_overrides) -> Path:
    """A project directory as the team's would be before its first real run: both stack configs
    ready, the secrets set (encrypted, as `pulumi config set --secret` writes them)."""
    from unde_infra.settings import PROGRAM_SECRETS

    project = tmp_path / "project"
    shutil.copytree(ROOT / "config", project / "config")
    # The fixture's topology: every running server says what it serves.
    (project / "config" / "topology.yaml").write_text(Path(os.environ["UNDE_INFRA_TOPOLOGY"]).read_text())
    for stack in ("helsinki", "local"):
        config = real_run_ready(stack, **(local_overrides if stack == "local" else {}))
        config.update({key: {"secure": "v1:c2VjcmV0"} for key in (*PROGRAM_SECRETS[stack], "hcloud:token")})
        prefixed = {(k if ":" in k else f"unde-infra:{k}"): v for k, v in config.items()}
        (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": prefixed}))
    return project


def test_validate_real_run_lists_every_blocker_and_exits_4() -> None:
    result = unde("validate", "--real-run", "--stack", "local")
    assert result.returncode == 4, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "Pulumi.local.yaml: ok; real run: 13 blockers" in lines
    assert any(line.startswith("Pulumi.local.yaml: adminCidrs[0]: 198.51.100.0/24 is a documentation range (RFC 5737)")
               for line in lines)
    assert any(line.startswith("Pulumi.local.yaml: dnsApiToken: the secret dnsApiToken is not set; fix: "
                               "pulumi config set --secret dnsApiToken <value> -s local") for line in lines)
    # Without --real-run, validate counts them and succeeds: the topology and configs are valid.
    plain = unde("validate")
    assert plain.returncode == 0 and "Pulumi.local.yaml: ok; real run: 13 blockers" in plain.stdout


def test_validate_real_run_of_a_ready_project_passes(tmp_path: Path, real_run_ready, monkeypatch) -> None:
    project = ready_project(tmp_path, real_run_ready)
    monkeypatch.delenv("UNDE_INFRA_TOPOLOGY")
    result = unde("validate", "--real-run", "--project-dir", str(project), cwd=project.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Pulumi.helsinki.yaml: ok; real run: ready" in result.stdout
    assert "Pulumi.local.yaml: ok; real run: ready" in result.stdout


def test_validate_checks_the_stack_configs_as_preview_does(tmp_path: Path, real_run_ready, monkeypatch) -> None:
    project = ready_project(tmp_path, real_run_ready, location="sgp")
    monkeypatch.delenv("UNDE_INFRA_TOPOLOGY")
    for command in (["validate"], ["preview", "--out", str(tmp_path / "out")]):
        result = unde(*command, "--project-dir", str(project), cwd=project.parent)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Pulumi.local.yaml: 1 problem\n  location: unknown hcloud location 'sgp'" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_real_run_targets_stop_before_the_cli_is_fetched() -> None:
    result = subprocess.run(["make", "--no-print-directory", "pulumi-up", "STACK=local"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unde-infra validate --real-run --stack local" in result.stdout
    assert "Pulumi.local.yaml: sshKeys[0]: a placeholder" in result.stdout
    # Neither the CLI's download nor the login was tried.
    assert "pulumi-cli" not in result.stdout + result.stderr and "PULUMI_BACKEND_URL" not in result.stdout


def test_a_type_not_sold_at_its_location_is_refused_before_anything_runs(tmp_path: Path, fresh_event_loop,
                                                                         monkeypatch) -> None:
    """cx23 is sold in the EU locations only: for a local server in sin it fails nowhere but
    inside `pulumi up`, unless validate, preview and the program refuse it first."""
    data = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text())
    data["servers"]["local-voice"]["type"] = "cx23"
    del data["servers"]["local-voice"]["size"]
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    for command in (["validate"], ["preview", "--out", str(tmp_path / "out")]):
        result = unde(*command, "--topology", str(topology))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "  servers.local-voice.type: cx23 is not sold in sin (sold in: " in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    # The program itself, as the CLI runs it.
    monkeypatch.setenv("UNDE_INFRA_TOPOLOGY", str(topology))
    with pytest.raises(pulumi.RunError) as caught:
        run_program("local", read_stack_config("local"), stack_outputs=documented_stack_outputs())
    assert any(p.path == "servers.local-voice.type" for p in caught.value.__cause__.problems)
