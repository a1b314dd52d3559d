"""Where a command writes its files (`--out DIR`): checked before anything is computed or
written, and reported as every bad input is, one `--out: message` line per problem, exit 2.
`preview` and `diagram` (the commands that write files) both check through here."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import one_line


class OutDirError(Exception):
    """`--out` cannot take what the command writes; nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(self.report())

    def report(self) -> str:
        return "\n".join(one_line(f"--out: {problem}") for problem in self.problems)


def out_dir_problems(out: Path, *, directories: Iterable[str] = (), files: Iterable[str] = ()) -> list[str]:
    """Why `out` could not take the `directories` and `files` a command writes into it, found
    without writing anything: `out` must be a directory, or a path whose nearest existing parent
    is a writable directory; and what is already there under those names must be of the kind
    written (a directory is replaced whole, a file overwritten)."""
    existing = out
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        return [f"{existing} is a symbolic link to nothing"]
    if not existing.is_dir():
        return [f"{existing} is a file, not a directory"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{existing} is not writable"]
    if existing != out:
        return []  # made fresh: nothing in it can be in the way
    problems = []
    for name in directories:
        target = out / name
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            problems.append(f"{target} is in the way: it is replaced with a directory of that name")
    for name in files:
        target = out / name
        if target.is_dir():
            problems.append(f"{target} is a directory: a file of that name is written there")
        elif target.exists() and not os.access(target, os.W_OK):
            problems.append(f"{target} is not writable")
    return problems


def require_out_dir(out: Path, *, directories: Iterable[str] = (), files: Iterable[str] = ()) -> None:
    problems = out_dir_problems(out, directories=directories, files=files)
    if problems:
        raise OutDirError(problems)


@contextmanager
def writing_to(out: Path) -> Iterator[None]:
    """What the checks could not foresee (a full disk, a race) is reported as `--out` too."""
    try:
        yield
    except OSError as exc:
        raise OutDirError([f"cannot write {exc.filename or out}: {exc.strerror or exc}"]) from exc
