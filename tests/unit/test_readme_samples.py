"""Every sample output in README.md and docs/ is what the command prints today (`make docs`
writes them back): a sample cannot go stale, wherever a page moved it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.readme_samples import ROOT, all_samples, pages, run, samples

SAMPLES = all_samples()


def test_the_pages_have_the_samples_they_should() -> None:
    shown = {(page.relative_to(ROOT).as_posix(), command.split()[0]) for page, command, _ in SAMPLES}
    assert {("README.md", "validate"), ("docs/cost.md", "cost"), ("docs/scaling.md", "plan"),
            ("docs/operations.md", "ops"), ("docs/merge-requests.md", "diff"), ("docs/security.md", "validate"),
            ("docs/first-real-run.md", "validate")} <= shown, sorted(shown)


def test_every_page_under_docs_is_read_for_samples() -> None:
    assert ROOT / "docs" / "reference" / "commands.md" in pages()
    assert {p.relative_to(ROOT).as_posix() for p in pages()} >= {"README.md", "docs/cost.md", "docs/first-real-run.md"}


def test_a_sample_is_a_block_whose_first_line_is_the_prompt() -> None:
    text = "x\n```text\n$ unde-infra cost --shards 2\nout\n```\n````markdown\n$ unde-infra diff a b\n```\ninner\n```\n````\n"
    assert samples(text) == [("cost --shards 2", "out\n"), ("diff a b", "```\ninner\n```\n")]


@pytest.mark.parametrize(("page", "command", "shown"), SAMPLES,
                         ids=[f"{p.relative_to(ROOT)}: {c}" for p, c, _ in SAMPLES])
def test_a_sample_is_what_the_command_prints(page: Path, command: str, shown: str) -> None:
    assert run(command) == shown, f"{page.relative_to(ROOT)}'s `$ unde-infra {command}` is stale: run `make docs`"
