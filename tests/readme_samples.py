"""The documentation's sample outputs, produced by the code: in README.md and every page of
docs/, a fenced block whose first line is `$ unde-infra ARGS` shows what that command prints
(standard output, then standard error, as a terminal shows them).
`tests/unit/test_readme_samples.py` compares every one with what the command prints now; `make
docs` (`python -m tests.readme_samples --write`) writes them back.

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
DOCS = ROOT / "docs"
PROMPT = "$ unde-infra "
BLOCK = re.compile(r"^(`{3,})[a-z]*\n(\$ unde-infra [^\n]*)\n(.*?)^\1$", flags=re.MULTILINE | re.DOTALL)


def _bad_topology(path: Path) -> None:
    """Three problems of three kinds, as docs/security.md's "Input" section shows them."""
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


def _committed_topology(path: Path) -> None:
    """A copy of the committed topology: a sample that names it shows a path that is the same in
    every checkout."""
    path.write_bytes((ROOT / "config" / "topology.yaml").read_bytes())


# Files a sample's command names, made in its directory before it runs.
INPUTS: dict[str, Callable[[Path], None]] = {
    "bad.yaml": _bad_topology,
    "topology.yaml": _committed_topology,
    "base": _preview,
    "resized": _resized_preview,
}


def pages() -> list[Path]:
    """The pages whose samples are checked: README.md and every Markdown file under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def samples(text: str) -> list[tuple[str, str]]:
    """(the command line after the prompt, the output shown) of every sample of `text`."""
    return [(first[len(PROMPT):], output) for _, first, output in BLOCK.findall(text)]


def all_samples() -> list[tuple[Path, str, str]]:
    """(page, command line, output shown) of every sample of every page."""
    return [(page, command, shown) for page in pages() for command, shown in samples(page.read_text(encoding="utf-8"))]


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
    """Every sample of every page produced again; returns `page: command line` of those whose
    output changed."""
    changed = []
    for page in pages():
        text = page.read_text(encoding="utf-8")

        def again(match: re.Match[str], page: Path = page) -> str:
            first, shown = match.group(2), match.group(3)
            output = run(first[len(PROMPT):])
            if output != shown:
                changed.append(f"{page.relative_to(ROOT)}: {first}")
            return match.group(0).replace(f"{first}\n{shown}", f"{first}\n{output}", 1)

        written = BLOCK.sub(again, text)
        if written != text:
            page.write_text(written, encoding="utf-8")
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write every sample's output back into its page")
    args = parser.parse_args()
    found = all_samples()
    if args.write:
        changed = write()
        print(f"documentation samples: {len(found)}, {len(changed)} written again" +
              "".join(f"\n  {line}" for line in changed))
        return 0
    stale = [f"{page.relative_to(ROOT)}: $ unde-infra {command}" for page, command, shown in found if run(command) != shown]
    print(f"documentation samples: {len(found)}, {len(stale)} stale" + "".join(f"\n  {s}" for s in stale))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
