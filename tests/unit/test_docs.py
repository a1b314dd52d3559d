"""The documentation as a newcomer meets it: a short README that leads to every guide, links and
anchors that resolve (as GitLab makes a heading's anchor), and no page repeating another's text."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from unde_infra.model import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
# Pages another branch writes at the same time (issue 27: docs/upgrades-and-rotation.md). Once the
# page exists here, its entry must go (test_a_pending_page_is_not_there_yet).
PENDING_PAGES = {DOCS / "upgrades-and-rotation.md"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(`{3,}).*?^\1$", flags=re.MULTILINE | re.DOTALL)


def _prose(text: str) -> str:
    """The text outside fenced blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitLab's anchor of a heading: lower case, punctuation dropped, spaces to hyphens, runs of
    hyphens as one."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r"-{2,}", "-", text.replace(" ", "-"))


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), flags=re.MULTILINE)
    return {anchor(h) for h in headings}


def test_the_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    assert "make preview" in text and "make test" in text
    linked = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(_prose(text))}
    guides = {p.resolve() for p in DOCS.glob("*.md")} | {p.resolve() for p in PENDING_PAGES}
    assert guides <= linked, sorted(str(p) for p in guides - linked)


def test_every_link_and_anchor_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if resolved in {p.resolve() for p in PENDING_PAGES}:
                continue
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert broken == []


def test_a_pending_page_is_not_there_yet() -> None:
    assert [p for p in PENDING_PAGES if p.exists()] == []


def test_no_page_repeats_another() -> None:
    """A paragraph of prose (80 characters or more) appears once in all the documentation."""
    seen: dict[str, list[str]] = defaultdict(list)
    for page in PAGES:
        for paragraph in re.split(r"\n\s*\n", FENCE.sub("", page.read_text(encoding="utf-8"))):
            words = " ".join(paragraph.split())
            if len(words) >= 80 and not words.startswith(("|", "<!--")):
                seen[words].append(str(page.relative_to(ROOT)))
    repeated = {text[:80]: where for text, where in seen.items() if len(where) > 1}
    assert repeated == {}


def test_the_anchor_is_gitlabs() -> None:
    assert anchor("Delivery and sshd's MaxStartups") == "delivery-and-sshds-maxstartups"
    assert anchor("4. `make pulumi-preview`") == "4-make-pulumi-preview"
    assert anchor("config/pricing.yaml") == "configpricingyaml"
    assert anchor("Scenario 2: the whole local site down") == "scenario-2-the-whole-local-site-down"
