"""Errors for people: every problem of an input at once, each as `path: message`."""

from __future__ import annotations

from dataclasses import dataclass

SHOWN_LENGTH = 80


def shown(value: object, limit: int = SHOWN_LENGTH) -> str:
    """A value as an error message quotes it: its repr (which escapes newlines and every other
    unprintable character, so a hostile value cannot add a line to the report), cut to `limit`."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def one_line(text: str) -> str:
    """`text` with every character that would break the one-problem-per-line report escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return one_line(f"{self.path}: {self.message}" if self.path else self.message)


class TopologyError(Exception):
    """The topology (or a stack's settings, or another config file) is invalid; nothing may be
    built from it."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.report())

    def report(self) -> str:
        count = len(self.problems)
        head = f"{one_line(self.source)}: {count} problem{'s' if count != 1 else ''}"
        # A problem of the file as a whole (not UTF-8, empty, ...) names the file as its path.
        lines = [str(p) if p.path else one_line(f"{self.source}: {p.message}") for p in self.problems]
        return "\n".join([head, *(f"  {line}" for line in lines)])


class Problems:
    """Collects problems while a validation goes on, so that all of them are reported together."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, source: str) -> None:
        if self.items:
            raise TopologyError(source, list(self.items))


class PreviewInputError(Exception):
    """Bad stack settings: reported like topology problems, exit code 2."""
