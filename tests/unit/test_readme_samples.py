"""Every sample output in README.md is what the command prints today (`make docs` writes them
back): a sample cannot go stale."""

from __future__ import annotations

import pytest

from tests.readme_samples import run, samples

SAMPLES = samples()


def test_the_readme_has_the_samples_it_should() -> None:
    commands = [command.split()[0] for command, _ in SAMPLES]
    assert {"validate", "cost", "plan", "ops"} <= set(commands), commands


@pytest.mark.parametrize(("command", "shown"), SAMPLES, ids=[c for c, _ in SAMPLES])
def test_a_readme_sample_is_what_the_command_prints(command: str, shown: str) -> None:
    assert run(command) == shown, f"README.md's `$ unde-infra {command}` is stale: run `make docs`"
