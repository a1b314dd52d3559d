"""The README's sample outputs, checked against the code: a fenced block whose first line is
`$ unde-infra ARGS` shows what that command prints, and a test of the command compares."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
PROMPT = "$ unde-infra "


def readme_section(title: str) -> str:
    """The text under the `## title` heading, up to the next heading of that level."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def readme_samples(title: str) -> list[tuple[list[str], str]]:
    """(the command's arguments, the output shown) of each sample of the section."""
    samples = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```$", readme_section(title), flags=re.MULTILINE | re.DOTALL):
        first, _, output = block.partition("\n")
        if first.startswith(PROMPT):
            samples.append((shlex.split(first[len(PROMPT):]), output))
    return samples
