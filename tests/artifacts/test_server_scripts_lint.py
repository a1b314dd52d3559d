"""Every script the servers run (unde_infra/files/) passes its real tools: the shell scripts `sh -n`
and shellcheck, the Python scripts the servers' own interpreter (Debian's /usr/bin/python3, standard
library only). ruff lints the Python ones with the rest of the code (`make lint`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

FILES = Path(__file__).resolve().parents[2] / "unde_infra" / "files"
SHELL = sorted(FILES.glob("*.sh"))
PYTHON = sorted(p for p in FILES.glob("*.py") if p.name != "__init__.py")
# Modules that scripts share: delivered beside the scripts that import them, never run themselves.
SHARED = {"hcloud_dns.py", "script_support.py"}


def test_there_are_scripts_to_check() -> None:
    assert {p.name for p in SHELL} >= {"post_bootstrap.sh"}
    assert {p.name for p in PYTHON} >= {"vpn_tunnel_collector.py", "alertmanager_config.py",
                                        "etcd_leader_affinity.py", "pgbackrest_run.py"}


@pytest.mark.parametrize("script", SHELL, ids=lambda p: p.name)
def test_shell_scripts_pass_sh_n_and_shellcheck(script: Path) -> None:
    assert script.read_text().startswith("#!/bin/sh\n")
    parsed = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert parsed.returncode == 0, parsed.stderr
    shellcheck = require_tool("shellcheck")
    checked = subprocess.run([shellcheck, "--shell=sh", "--severity=style", str(script)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_shellcheck_finds_what_it_should(tmp_path: Path) -> None:
    # The check above is only worth something if shellcheck really reads the file it is given.
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\nrm -rf $1/*\n")
    checked = subprocess.run([require_tool("shellcheck"), "--shell=sh", str(bad)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode != 0 and "SC2086" in checked.stdout


@pytest.mark.parametrize("script", PYTHON, ids=lambda p: p.name)
def test_python_scripts_run_on_the_servers_interpreter_with_the_standard_library(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/python3\n") != (script.name in SHARED)
    compiled = subprocess.run(["/usr/bin/python3", "-c", "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], "
                               "'exec')", str(script)], capture_output=True, text=True, timeout=30)
    assert compiled.returncode == 0, compiled.stderr
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(text))
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    # The standard library, and a shared module of this directory (which the renderers deliver beside it).
    allowed = set(sys.stdlib_module_names) | {"__future__"} | {Path(name).stem for name in SHARED}
    assert imported <= allowed, imported - allowed
