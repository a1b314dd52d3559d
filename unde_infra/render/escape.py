"""How a value is written into each target format: one rule, one place.

The model has validated every value by its kind before anything is rendered (a server name is
a DNS label, an address is an address). This module is the second line: each renderer writes
a value through the helper of its target format, so that whatever reaches it stays one value
in that format, or the render fails loudly. Where a format has a quoting that can carry any
text (YAML, shell, RouterOS strings, systemd/shell environment files), the value is quoted;
where it has none (INI values of pgBackRest and PgBouncer, wg-quick lines, etcd's
initial-cluster, nftables strings), a value that would change the structure is refused.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence

import yaml


class UnsafeValue(ValueError):
    """A value that cannot be written into the target format as one value."""


LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on


def one_line(value: str, what: str = "a value") -> str:
    """`value` when it is one line without NUL; every line-based format needs at least that."""
    if "\0" in value or any(c in LINE_BREAKS for c in value):
        raise UnsafeValue(f"{what} must be one line of text: {value!r}")
    return value


def _printable(value: str, what: str) -> str:
    one_line(value, what)
    if not value.isprintable():
        raise UnsafeValue(f"{what} holds a control character: {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# YAML (cloud-init, Patroni, etcd, Prometheus, ...): always through a dumper


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # The emitter falls back to a quoted style wherever a block would not keep the value exact.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def block_dumper(base: type[yaml.SafeDumper]) -> type[yaml.SafeDumper]:
    """Safe YAML with multi-line strings as literal blocks, so rendered files stay readable."""
    dumper: type[yaml.SafeDumper] = type(f"Block{base.__name__}", (base,), {})
    dumper.add_representer(str, _represent_str)
    return dumper


# libyaml's emitter writes the same bytes as PyYAML's pure-Python one (tests/unit compare them on
# every rendered file) in a fraction of the time; PyYAML built without libyaml falls back.
PURE_BLOCK_DUMPER = block_dumper(yaml.SafeDumper)
BLOCK_DUMPER = block_dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper))


def yaml_dump(data: object, dumper: type[yaml.SafeDumper] = BLOCK_DUMPER) -> str:
    return yaml.dump(data, Dumper=dumper, sort_keys=False, width=1000, default_flow_style=False)


# --------------------------------------------------------------------------------------------
# Shell


def shell_word(value: object) -> str:
    """One word for sh/bash, whatever it holds (NUL aside, which no argument can carry)."""
    text = str(value)
    if "\0" in text:
        raise UnsafeValue(f"a shell word cannot hold NUL: {text!r}")
    return shlex.quote(text)


def shell_command(args: Iterable[object]) -> str:
    return " ".join(shell_word(a) for a in args)


def sql_string(value: str) -> str:
    """A SQL string literal (standard_conforming_strings: only the quote is doubled)."""
    return "'" + one_line(value, "a SQL string").replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Environment files: read by systemd (EnvironmentFile=) and sourced by sh (`set -a; . file`)


ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Characters a value may hold unquoted: neither parser gives any of them a meaning there.
ENV_BARE_CHARS = ENV_NAME_CHARS | frozenset("./:@%+,=?-")  # an assignment is never globbed


def env_value(value: str) -> str:
    """A value that systemd's EnvironmentFile= parser and POSIX sh (`set -a; . file`) both read
    back as exactly `value`: bare when it holds only plain characters (generated passwords,
    names, addresses), else double-quoted. Inside double quotes both parsers read a backslash
    followed by a backslash, a double quote, a dollar or a backquote as that character; systemd
    expands nothing else, and sh would expand $ and the backquote, which are escaped. A line
    break cannot be carried by both, so it is refused."""
    one_line(value, "an environment value")
    if value and set(value) <= ENV_BARE_CHARS:
        return value
    escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
    return f'"{escaped}"'


def env_file(values: Mapping[str, str]) -> str:
    """KEY="value" lines. Names are shell variable names; values are quoted by env_value."""
    lines = []
    for key, value in values.items():
        if not key or not set(key) <= ENV_NAME_CHARS or key[0].isdigit():
            raise UnsafeValue(f"not an environment variable name: {key!r}")
        lines.append(f"{key}={env_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# INI files without quoting (pgBackRest, PgBouncer): a value runs to the end of its line


def ini_value(value: object, what: str = "an INI value") -> str:
    """A value for `key=value`: one line, no leading or trailing blanks (both parsers strip
    them), nothing a section header or a comment could start with."""
    text = _printable(str(value), what)
    if text != text.strip():
        raise UnsafeValue(f"{what} has leading or trailing blanks: {text!r}")
    return text


def ini_file(sections: Mapping[str, Mapping[str, object]], separator: str = "=") -> str:
    out: list[str] = []
    for name, options in sections.items():
        if not name or any(c in name for c in "[]") or name != name.strip():
            raise UnsafeValue(f"not an INI section name: {name!r}")
        out.append(f"[{_printable(name, 'an INI section name')}]")
        for key, value in options.items():
            if not key or any(c in key for c in "=[]#; ") or not key.isprintable():
                raise UnsafeValue(f"not an INI key: {key!r}")
            out.append(f"{key}{separator}{ini_value(value, key)}")
        out.append("")
    return "\n".join(out)


def pgbouncer_auth_line(user: str, secret: str) -> str:
    """One line of PgBouncer's auth_file: "user" "secret", a quote inside doubled."""
    return " ".join('"' + one_line(v, "an auth_file field").replace('"', '""') + '"' for v in (user, secret))


# --------------------------------------------------------------------------------------------
# wg-quick (a `Key = Value` line each; PostUp lines run through bash)


def wg_line(key: str, value: object) -> str:
    """`Key = Value`: wg-quick cuts a line at `#` (a comment) and strips blanks, so a value may
    hold neither a line break nor `#`."""
    text = _printable(str(value), f"WireGuard {key}")
    if "#" in text or text != text.strip():
        raise UnsafeValue(f"WireGuard {key} cannot hold '#' or leading/trailing blanks: {text!r}")
    return f"{key} = {text}"


def comment(text: str) -> str:
    """A `# ...` comment line of any of the line-based formats."""
    return "# " + one_line(text, "a comment")


# --------------------------------------------------------------------------------------------
# nftables


def nft_string(value: str) -> str:
    """A quoted nftables string (interface names, comments): nft has no escape for the quote."""
    text = _printable(value, "an nftables string")
    if '"' in text or "\\" in text:
        raise UnsafeValue(f"an nftables string cannot hold a quote or a backslash: {text!r}")
    return f'"{text}"'


# --------------------------------------------------------------------------------------------
# etcd's initial-cluster: name=url,name=url


def etcd_initial_cluster(members: Sequence[tuple[str, str]]) -> str:
    """etcd splits the flag on ',' and each member on '=': neither may appear in a name or URL."""
    parts = []
    for name, url in members:
        for field, value in (("member name", name), ("peer URL", url)):
            _printable(value, f"an etcd {field}")
            if any(c in value for c in ",= ") or not value:
                raise UnsafeValue(f"an etcd {field} cannot hold ',', '=' or blanks: {value!r}")
        parts.append(f"{name}={url}")
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# RouterOS scripts (MikroTik's scripting manual, "Constant Escape Sequences")

# Characters a bare RouterOS value may hold; anything else is written as a quoted string.
_ROS_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789./:,_!-")
# Inside "...": \" \\ \$ (else a variable) \? (else help in the console) and the named controls;
# every other byte outside printable ASCII as \XX, two capital hex digits.
_ROS_ESCAPES = {'"': '\\"', "\\": "\\\\", "$": "\\$", "?": "\\?", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def routeros_string(value: object) -> str:
    """A RouterOS double-quoted string that the script parser reads back as exactly `value`."""
    out = []
    for char in str(value):
        if char in _ROS_ESCAPES:
            out.append(_ROS_ESCAPES[char])
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\{byte:02X}" for byte in char.encode("utf-8"))
    return '"' + "".join(out) + '"'


def routeros_value(value: object) -> str:
    text = str(value)
    return text if text and set(text) <= _ROS_BARE else routeros_string(text)


def routeros_props(props: Mapping[str, object]) -> str:
    for key in props:
        if not key or not set(key) <= _ROS_BARE:
            raise UnsafeValue(f"not a RouterOS property name: {key!r}")
    return " ".join(f"{k}={routeros_value(v)}" for k, v in props.items())


# --------------------------------------------------------------------------------------------
# systemd unit files and authorized_keys


SYSTEMD_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/:@+=,-")


def systemd_word(value: object) -> str:
    """An argument of ExecStart= that needs no quoting in systemd's rules (no blanks, quotes,
    `%` specifiers or `$` expansion); anything else is refused rather than half-quoted."""
    text = str(value)
    if not text or not set(text) <= SYSTEMD_SAFE:
        raise UnsafeValue(f"not a plain systemd argument: {text!r}")
    return text


def authorized_key(key: str) -> str:
    """One authorized_keys line: cloud-init writes each list entry as a line of its own."""
    return _printable(key, "an SSH public key")
