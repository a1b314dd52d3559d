"""The shell text of a delivery's commands: write one file only when it differs, apply only what
was written.

`pulumi up` runs a command again when its trigger (the file's digest) changes, and also when
the command's own text changes: a change to this module re-runs every delivery command of
every server. So each command is idempotent on the server: a file whose content, mode and
owner are already right is left alone (no new inode, no new mtime), and the apply step (a
reload, a restart) runs only when one of its files was written. A written file leaves a
marker, `<PENDING_DIR>/<apply id>`, before it takes its place; the apply step runs its
script only when the marker is there and removes it only after the script succeeded, so a
failed apply runs again on the next `pulumi up` even when no file changes any more.

POSIX sh; the write is `install -m` into a new file beside the target (created with its
mode and owner before it holds the content: a secret is never readable by others) and an
atomic `mv` over it."""

from __future__ import annotations

import posixpath
import re

from .escape import UnsafeValue, shell_word

PENDING_DIR = "/var/lib/unde/pending"
NEW_SUFFIX = ".unde-new"  # no configuration directory reads *.unde-new (nor dotfiles)
_MARKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


# The package that creates each service account a delivered file may belong to: a file is owned
# by its user from the moment it is written, so the account must exist before the first write
# (on a new server the role's setup step, which installs the service, runs after its files).
ACCOUNT_PACKAGES = {"root": None, "postgres": "postgresql-common", "redis": "redis-server"}


def account_packages(accounts: set[str]) -> list[str]:
    """The packages to install before files owned by `accounts` can be written."""
    unknown = sorted(a for a in accounts if a not in ACCOUNT_PACKAGES)
    if unknown:
        raise UnsafeValue(f"no package is known to create the account(s) {', '.join(unknown)}: "
                          "add it to render.delivery.ACCOUNT_PACKAGES")
    return sorted({package for a in accounts if (package := ACCOUNT_PACKAGES[a]) is not None})


def marker_path(apply_id: str, pending_dir: str = PENDING_DIR) -> str:
    """Where a written file tells its apply step `apply_id` to run."""
    if not _MARKER_NAME.match(apply_id):
        raise UnsafeValue(f"an apply id is letters, digits, '.', '_' and '-': {apply_id!r}")
    return f"{pending_dir}/{apply_id}"


def stat_form(mode: str, owner: str, group: str) -> str:
    """What `stat -c %a:%U:%G` prints for a file with this mode and owner."""
    return f"{int(mode, 8):o}:{owner}:{group}"


def write_file(path: str, mode: str, owner: str, group: str, marker: str | None) -> str:
    """Write stdin to `path` (mode, owner, group) unless it holds that already; when it writes,
    it first touches `marker` (when there is one). Leading directories are made as `install -D`
    makes them."""
    if not path.startswith("/") or path.endswith("/"):
        raise UnsafeValue(f"a delivered file is an absolute path to a file: {path!r}")
    directory, name = posixpath.split(path)
    new = posixpath.join(directory, f".{name}{NEW_SUFFIX}")
    mark = ""
    if marker is not None:
        mark = f"mkdir -p {shell_word(posixpath.dirname(marker))}; : > {shell_word(marker)}; "
    return (
        f"set -eu; f={shell_word(path)}; new={shell_word(new)}; "
        f"install -D -m {shell_word(mode)} -o {shell_word(owner)} -g {shell_word(group)} /dev/stdin \"$new\"; "
        f"if cmp -s \"$new\" \"$f\" && [ \"$(stat -c %a:%U:%G \"$f\")\" = {shell_word(stat_form(mode, owner, group))} ]; "
        f"then rm -f \"$new\"; echo \"unchanged: $f\"; "
        f"else {mark}mv -f \"$new\" \"$f\"; echo \"written: $f\"; fi"
    )


def apply_when_pending(script: str, marker: str) -> str:
    """Run `script` only when `marker` is there; remove the marker once the script succeeded,
    keep it (and fail with the script's status) when it did not. The script runs in a subshell
    with the shell options it sets itself (the wrapper sets none, and the subshell is no
    operand of `&&`/`||`, where a `set -e` inside would be ignored)."""
    return (
        f"pending={shell_word(marker)}\n"
        "if [ -e \"$pending\" ]; then\n"
        "(\n"
        f"{script}\n"
        ")\n"
        "status=$?\n"
        "if [ \"$status\" -ne 0 ]; then exit \"$status\"; fi\n"
        "rm -f \"$pending\"\n"
        "else\n"
        "echo \"no file changed: nothing to apply\"\n"
        "fi"
    )
