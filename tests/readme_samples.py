"""The README's sample outputs, produced by the code: a fenced block whose first line is
`$ unde-infra ARGS` shows what that command prints (standard output, then standard error, as a
terminal shows them). `tests/unit/test_readme_samples.py` compares every one with what the
command prints now; `make docs` (`python -m tests.readme_samples --write`) writes them back.

A sample runs in a directory of its own, holding the input files its command names (INPUTS),
so that a sample of bad input shows the real report of that input."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROMPT = "$ unde-infra "
BLOCK = re.compile(r"^(`{3,})[a-z]*\n(\$ unde-infra [^\n]*)\n(.*?)^\1$", flags=re.MULTILINE | re.DOTALL)


def _bad_topology(path: Path) -> None:
    """Three problems of three kinds, as the README's "Input" section shows them."""
    data = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
    data["servers"]["local-mood"]["ip"] = data["servers"]["local-voice"]["ip"]
    data["servers"]["scraper"]["public_ipv4"] = "10.1.0.99"
    data["etcd"]["placements"]["three-sites"] = data["etcd"]["placements"]["three-sites"][:1]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _preview(path: Path, topology: Path | None = None) -> None:
    args = ["preview", "--out", str(path)] + (["--topology", str(topology)] if topology else [])
    subprocess.run([sys.executable, "-m", "unde_infra", *args], cwd=path.parent, check=True, capture_output=True,
                   timeout=600, env=_env())


def _resized_preview(path: Path) -> None:
    """The preview of a change that resizes posthog (stateful, created by the program) to ccx43
    and asks scraper (adopted, without `resize: true`) for cpx32."""
    data = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
    data["servers"]["posthog"]["type"] = "ccx43"
    data["servers"]["scraper"]["type"] = "cpx32"
    topology = path.parent / "resized-topology.yaml"
    topology.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    _preview(path, topology)


# Files a sample's command names, made in its directory before it runs.
INPUTS: dict[str, Callable[[Path], None]] = {
    "bad.yaml": _bad_topology,
    "base": _preview,
    "resized": _resized_preview,
}


def readme_section(title: str) -> str:
    """The text under the `## title` heading, up to the next heading of that level."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def samples(text: str | None = None) -> list[tuple[str, str]]:
    """(the command line after the prompt, the output shown) of every sample of the README."""
    text = README.read_text(encoding="utf-8") if text is None else text
    return [(first[len(PROMPT):], output) for _, first, output in BLOCK.findall(text)]


def run(command_line: str) -> str:
    """What `unde-infra <command_line>` prints now. A `#` ends the arguments (a comment)."""
    args = shlex.split(command_line, comments=True)
    with tempfile.TemporaryDirectory(prefix="unde-sample-") as work:
        for arg in args:
            if arg in INPUTS:
                INPUTS[arg](Path(work) / arg)
        result = subprocess.run([sys.executable, "-m", "unde_infra", *args], cwd=work, capture_output=True,
                                text=True, timeout=600, env=_env())
    return result.stdout + result.stderr


def _env() -> dict[str, str]:
    import os

    # The command as a person runs it from the checkout (its package, its config).
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def write() -> list[str]:
    """Every sample of the README produced again; returns the command lines whose output changed."""
    text = README.read_text(encoding="utf-8")
    changed = []

    def again(match: re.Match[str]) -> str:
        first, shown = match.group(2), match.group(3)
        output = run(first[len(PROMPT):])
        if output != shown:
            changed.append(first)
        return match.group(0).replace(f"{first}\n{shown}", f"{first}\n{output}", 1)

    README.write_text(BLOCK.sub(again, text), encoding="utf-8")
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write every sample's output back into README.md")
    args = parser.parse_args()
    if args.write:
        changed = write()
        print(f"README.md: {len(samples())} samples, {len(changed)} written again" +
              "".join(f"\n  {line}" for line in changed))
        return 0
    stale = [first for first, shown in samples() if run(first) != shown]
    print(f"README.md: {len(samples())} samples, {len(stale)} stale" + "".join(f"\n  $ unde-infra {s}" for s in stale))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
