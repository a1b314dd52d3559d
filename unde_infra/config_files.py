"""One bounded YAML loader for every config file the program reads: the topology,
`config/server_types.yaml`, `config/policy.yaml`, `Pulumi.<stack>.yaml` and
`config/offline-stack-outputs.yaml`.

A config file is edited by people in a merge request, so a bad one must fail fast and say why,
as `path: message`, never with a traceback:

* at most `MAX_BYTES` are read, and the text must be UTF-8;
* an empty file (or one of comments only) is an error, not an empty configuration;
* a key given twice in one mapping is an error (PyYAML silently keeps the last one);
* aliases are capped in number, and so is the size of the document once every alias is expanded:
  the billion-laughs file (a few hundred bytes that expand to 10^9 nodes) fails while it is
  composed, in milliseconds, before anything is built from it;
* nesting is capped, so a deep document cannot exhaust the stack;
* every value is plain data (mapping, list, text, number, boolean, null): YAML's dates, binary
  and sets are refused, and no text (key or value) may hold a control character (a newline,
  NUL, ESC, ...), a Unicode line separator or an invisible formatting character (bidi
  overrides), wherever it is. A value with one of those is what turns into an extra line, an
  extra key or an extra command in a rendered file.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from .errors import Problem, Problems, TopologyError, shown

try:  # libyaml's parser (in PyYAML's wheels): tokens and events at C speed
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - a PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

MAX_BYTES = 1024 * 1024
MAX_ALIASES = 64
# The committed topology has about 730 values; server_types.yaml expands its two anchors 14 times.
MAX_EXPANDED_NODES = 20_000
MAX_DEPTH = 24
# Categories of characters no config value may hold: controls (C0, C1, DEL), format characters
# (bidi overrides, zero-width characters, soft hyphen, BOM), line and paragraph separators
# (str.splitlines breaks on them), private use and surrogates.
FORBIDDEN_CATEGORIES = {"Cc": "control", "Cf": "format", "Zl": "line separator", "Zp": "paragraph separator",
                        "Co": "private use", "Cs": "surrogate"}  # fmt: skip
PLAIN_TYPES = (str, int, float, bool, type(None))
CONTROL_NAMES = {"\0": "NUL", "\t": "tab", "\n": "line feed", "\r": "carriage return", "\x1b": "escape",
                 "\x7f": "delete", "\x85": "next line"}  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_aliases: int = MAX_ALIASES
    max_expanded_nodes: int = MAX_EXPANDED_NODES
    max_depth: int = MAX_DEPTH


DEFAULT_LIMITS = Limits()


class LimitExceeded(yaml.YAMLError):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where, self.message = where, message


class _BoundedLoader(Composer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """YAML's safe loader, composed in Python over libyaml's events so that aliases, nodes and
    nesting are counted while the document is composed (a limit stops it there), and a key given
    twice in one mapping is refused."""

    def __init__(self, text: str, limits: Limits) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.limits = limits
        self.aliases = 0
        self.nodes = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        mark = getattr(self.peek_event(), "start_mark", None)
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise LimitExceeded(_where(mark), f"more than {self.limits.max_aliases} aliases; write the values out")
            return super().compose_node(parent, index)
        self.nodes += 1
        if self.nodes > self.limits.max_expanded_nodes:
            raise LimitExceeded(_where(mark), f"more than {self.limits.max_expanded_nodes} values; a config file is never that big")
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise LimitExceeded(_where(mark), f"nested deeper than {self.limits.max_depth} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                hash(key)
            except TypeError:
                raise LimitExceeded(_where(key_node.start_mark), "a key must be text or a number") from None
            line = key_node.start_mark.line + 1
            if key in first:
                raise LimitExceeded(
                    _where(key_node.start_mark), f"duplicate key {shown(key)} (first defined on line {first[key]})"
                )
            first[key] = line
        return super().construct_mapping(node, deep)


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _expanded_size(root: yaml.Node, limits: Limits) -> None:
    """The number of nodes the document has once every alias is expanded, without expanding:
    each node's size once (memoised), summed over its children. A node that contains itself
    through an alias expands forever."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            in_progress.discard(key)
            size = 1 + sum(sizes[id(c)] for c in children)
            if size > limits.max_expanded_nodes:
                raise LimitExceeded(
                    _where(node.start_mark),
                    f"expands to more than {limits.max_expanded_nodes} values through aliases (an alias bomb?)",
                )
            sizes[key] = size
            continue
        if key in in_progress:
            raise LimitExceeded(_where(node.start_mark), "an alias refers to the value that contains it")
        in_progress.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in in_progress:
                raise LimitExceeded(_where(child.start_mark), "an alias refers to the value that contains it")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def parse_text(text: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """YAML text to plain data, within `limits`. Raises yaml.YAMLError (LimitExceeded included)."""
    loader = _BoundedLoader(text, limits)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, limits)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_config(path: Path, problems: Problems, limits: Limits = DEFAULT_LIMITS, *, check_values: bool = True) -> Any:
    """The plain data of one config file; None (and the reason in `problems`, path "") when the
    file cannot be read as such. Every unsafe value is reported, each at its path (unless the
    caller checks the values itself, under paths of its own: `unsafe_values`)."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(limits.max_bytes + 1)
    except OSError as exc:
        problems.add("", f"cannot read the file: {exc.strerror or exc}")
        return None
    if len(raw) > limits.max_bytes:
        problems.add("", f"larger than {limits.max_bytes // 1024} KiB; a config file is never that big")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add("", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8")
        return None
    text = text.removeprefix("\ufeff")  # a byte order mark some editors write
    try:
        data = parse_text(text, limits)
    except LimitExceeded as exc:
        problems.add(exc.where, exc.message)
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.add(_where(mark) or "YAML", f"malformed YAML: {getattr(exc, 'problem', None) or exc}")
        return None
    except (ValueError, OverflowError) as exc:  # an int of 5,000 digits, a date that does not exist
        problems.add("YAML", f"a value cannot be read: {shown(str(exc))}")
        return None
    if data is None:
        problems.add("", "the file is empty (or holds only comments)")
        return None
    bad = list(unsafe_values(data)) if check_values else []
    for problem in bad:
        problems.add(problem.path, problem.message)
    return None if bad else data


def load_config(path: Path, limits: Limits = DEFAULT_LIMITS, *, check_values: bool = True) -> Any:
    """read_config, raising TopologyError (source: the file) with every problem found."""
    problems = Problems()
    data = read_config(path, problems, limits, check_values=check_values)
    problems.raise_if_any(str(path))
    return data


def unsafe_values(data: Any, path: str = "") -> Iterator[Problem]:
    """Every key or value that is not plain one-line text or a plain scalar, with its path."""
    stack: list[tuple[str, Any]] = [(path, data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            items = list(value.items())
            for key, child in reversed(items):
                child_path = join_path(where, key)
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    yield Problem(child_path, f"a key must be text or a whole number, not {_kind(key)} (quote it)")
                    continue
                if isinstance(key, str):
                    reason = forbidden_character(key)
                    if reason:
                        yield Problem(child_path, f"the key holds {reason}")
                        continue
                stack.append((child_path, child))
        elif isinstance(value, list):
            for i, child in reversed(list(enumerate(value))):
                stack.append((f"{where}[{i}]", child))
        elif isinstance(value, str):
            reason = forbidden_character(value)
            if reason:
                yield Problem(where, f"the value holds {reason}; values are one line of printable text")
        elif not isinstance(value, PLAIN_TYPES):
            yield Problem(where, f"{_kind(value)} is not accepted here; quote it if it is text")


def forbidden_character(text: str) -> str | None:
    """'a control character U+000A' for the first character no config value may hold."""
    for char in text:
        category = unicodedata.category(char)
        if category in FORBIDDEN_CATEGORIES:
            name = CONTROL_NAMES.get(char) or unicodedata.name(char, "").lower()
            label = f" ({name})" if name else ""
            return f"a {FORBIDDEN_CATEGORIES[category]} character U+{ord(char):04X}{label}"
    return None


def join_path(prefix: str, key: object) -> str:
    """`servers.local-app` for a plain key; `servers['a b']` for one a dotted path would garble."""
    text = str(key)
    plain = isinstance(key, (str, int)) and not isinstance(key, bool) and 0 < len(text) <= 80 and all(
        c.isalnum() or c in "-_" for c in text
    )
    part = text if plain else f"[{shown(key, 60)}]"
    if not prefix:
        return part
    return f"{prefix}{part}" if part.startswith("[") else f"{prefix}.{part}"


def _kind(value: object) -> str:
    names = {bytes: "binary data (!!binary)", set: "a set (!!set)", tuple: "a pair list"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if type(value).__module__ == "datetime":
        return f"an unquoted date or time ({value})"
    return "true/false" if isinstance(value, bool) else f"a {type(value).__name__}"


def add_validation_problems(
    problems: Problems, prefix: str, exc: ValidationError, skip: Callable[[Any], bool] | None = None
) -> None:
    """Each of pydantic's errors as one `path: message` problem under `prefix`: `required`,
    `unknown key`, or the check's message with the value it got; `skip` leaves errors out."""
    seen: set[str] = set()
    for err in exc.errors():
        if skip is not None and skip(err):
            continue
        path = prefix
        for part in err["loc"]:
            if not _is_union_branch(part):
                path = join_path(path, part)
        if path in seen:  # a union reports each branch; one line per place is enough
            continue
        seen.add(path)
        value = err.get("input")
        # A kind's own message (value_error) quotes the value already.
        got = "" if err["type"] in {"missing", "extra_forbidden", "value_error"} else f" (got {shown(value)})"
        message = {"missing": "required", "extra_forbidden": "unknown key"}.get(err["type"], err["msg"])
        problems.add(path, f"{message.removeprefix('Value error, ')}{got}")


def _is_union_branch(part: object) -> bool:
    # pydantic names the union branch it tried ("str", "list[str]", "function-after[...]").
    return isinstance(part, str) and (
        part in {"str", "bool", "int", "list[str]", "none"} or "[" in part or part.startswith("function")
    )


__all__ = ["DEFAULT_LIMITS", "Limits", "TopologyError", "add_validation_problems", "forbidden_character", "join_path",
           "load_config", "parse_text", "read_config", "unsafe_values"]  # fmt: skip
