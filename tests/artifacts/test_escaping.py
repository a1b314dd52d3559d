"""The second line of defence: every target format's helper (unde_infra/render/escape.py) keeps a
hostile value one value, read back by the format's real parser where one exists: PyYAML, bash,
systemd's own EnvironmentFile= parser (libsystemd-shared, through ctypes), pgBackRest's option
parser, wg-quick. Where a format has no quoting, the helper refuses what would change its
structure, and the renderers that use it fail instead of writing an extra line."""

from __future__ import annotations

import configparser
import ctypes
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from unde_infra.render import escape
from unde_infra.render.pgbackrest import S3Repo, Stanza, stanza_conf

# A value with everything that turns into a line, a key, a command or a second value somewhere.
HOSTILE = [
    "plain",
    "two\nlines",
    "carriage\rreturn",
    "quote ' single",
    'quote " double',
    "$(touch /tmp/pwned) `id` ${HOME} $HOME",
    "semi; colon && and || or | pipe",
    "a=b,c=d",
    "back\\slash\\",
    "# not a comment",
    "  leading and trailing  ",
    "[section]",
    "tab\there",
    "127.0.0.1:5432/unde?sslmode=disable",
    "glob * ? [a] ~ ~root",
    "ünïcødé ✓",
    "",
]
ONE_LINE = [v for v in HOSTILE if "\n" not in v and "\r" not in v]
SYSTEMD_SHARED = next(iter(sorted(Path("/usr/lib").glob("*/systemd/libsystemd-shared-*.so"))), None)


def test_yaml_dump_keeps_every_value_one_value() -> None:
    data = {"values": HOSTILE, "key: with colon": "v", "nested": {"k\nnewline": "- not a list item"}}
    text = escape.yaml_dump(data)
    assert yaml.safe_load(text) == data


def test_shell_words_stay_one_word_each(tmp_path: Path) -> None:
    bash = require_tool("bash")
    marker = tmp_path / "pwned"
    words = [*HOSTILE, f"$(touch {marker})", f"`touch {marker}`"]
    script = "printf '%s\\0' " + escape.shell_command(words)
    out = subprocess.run([bash, "-c", script], capture_output=True, timeout=10, check=True).stdout
    assert out.decode().split("\0")[:-1] == words
    assert not marker.exists()
    with pytest.raises(escape.UnsafeValue):
        escape.shell_word("nul\0byte")


def _systemd_env(path: Path) -> dict[str, str]:
    """What systemd's EnvironmentFile= reads from `path`: load_env_file() of libsystemd-shared,
    the function the service manager itself calls."""
    if SYSTEMD_SHARED is None:
        pytest.fail("libsystemd-shared is missing (Debian package systemd; `make test` installs it as root)")
    lib = ctypes.CDLL(str(SYSTEMD_SHARED))
    result = ctypes.POINTER(ctypes.c_char_p)()
    assert lib.load_env_file(None, str(path).encode(), ctypes.byref(result)) == 0
    found: dict[str, str] = {}
    i = 0
    while result[i]:
        key, _, value = result[i].decode().partition("=")
        found[key] = value
        i += 1
    return found


def test_env_file_values_read_back_the_same_by_systemd_and_by_sh(tmp_path: Path) -> None:
    values = {f"V{i}": v for i, v in enumerate(ONE_LINE)} | {"MARKER": f"$(touch {tmp_path / 'pwned'})"}
    path = tmp_path / "server.env"
    path.write_text(escape.env_file(values))
    assert len(path.read_text().splitlines()) == len(values)  # one line each, no extra one
    assert _systemd_env(path) == values
    names = " ".join(values)
    script = f"set -a; . {path}; set +a; for n in {names}; do printf '%s=%s\\0' \"$n\" \"${{!n}}\"; done"
    out = subprocess.run([require_tool("bash"), "-c", script], capture_output=True, timeout=10, check=True).stdout
    assert dict(item.split("=", 1) for item in out.decode().split("\0")[:-1]) == values
    assert not (tmp_path / "pwned").exists()
    for bad in ("two\nlines", "cr\rhere", "nul\0"):
        with pytest.raises(escape.UnsafeValue):
            escape.env_file({"KEY": bad})
    with pytest.raises(escape.UnsafeValue):
        escape.env_file({"KEY; rm -rf /": "x"})


def test_pgbackrest_reads_each_option_back_as_one_value(tmp_path: Path) -> None:
    pgbackrest = require_tool("pgbackrest")
    endpoint = 'h.example #;$(x) "q" \\ =y [global]'
    conf = tmp_path / "pgbackrest.conf"
    stanza = Stanza(name="shard0", data_dir="/var/lib/postgresql/15/main", port=5432, socket_dir="/run/postgresql",
                    patroni_api=None)
    conf.write_text(stanza_conf(stanza, S3Repo(endpoint=endpoint, bucket="unde-backups", region="hel1")))
    shown = subprocess.run(
        [pgbackrest, f"--config={conf}", "--stanza=shard0", "help", "backup", "repo-s3-endpoint"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    assert f"current: {endpoint}" in shown.splitlines()
    for bad in ("h.example\nrepo1-s3-verify-tls=n", " h.example", "h.example\r"):
        with pytest.raises(escape.UnsafeValue):
            stanza_conf(stanza, S3Repo(endpoint=bad, bucket="unde-backups", region="hel1"))


def test_pgbouncer_ini_keeps_values_whole() -> None:
    text = escape.ini_file({"pgbouncer": {"auth_query": "SELECT usename, passwd FROM f($1); -- x=y"}}, separator=" = ")
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(text)
    assert dict(parsed["pgbouncer"]) == {"auth_query": "SELECT usename, passwd FROM f($1); -- x=y"}
    with pytest.raises(escape.UnsafeValue):
        escape.ini_file({"pgbouncer": {"listen_addr": "10.2.0.10\nadmin_users = attacker"}})
    assert escape.pgbouncer_auth_line("pgbouncer", 'pa"ss') == '"pgbouncer" "pa""ss"'


def _routeros_decode(quoted: str) -> str:
    """A RouterOS double-quoted string read back by the escape table of MikroTik's scripting
    manual ("Constant Escape Sequences"): \\" \\\\ \\n \\r \\t \\$ \\? \\_ (space) \\a \\b \\f \\v
    and \\XX, a byte in two hex digits."""
    assert quoted.startswith('"') and quoted.endswith('"')
    named = {'"': b'"', "\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t", "$": b"$", "?": b"?", "_": b" ",
             "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v"}
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char == '"':
            raise AssertionError(f"an unescaped quote ends the string early: {quoted}")
        if char == "$":
            raise AssertionError(f"an unescaped $ would be a variable: {quoted}")
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        if re.fullmatch(r"[0-9A-F]{2}", body[i + 1 : i + 3]):
            out.append(int(body[i + 1 : i + 3], 16))
            i += 3
        else:
            out += named[body[i + 1]]
            i += 2
    return out.decode()


def test_routeros_strings_read_back_as_the_same_value() -> None:
    for value in [*HOSTILE, "\x1b[31m escape", "nul\0", "question?"]:
        assert _routeros_decode(escape.routeros_string(value)) == value
    # A value that is not plain is quoted, so `;` or a newline never ends the command.
    line = "/interface/wireguard/add " + escape.routeros_props({"name": "wg-app", "comment": "x\n/system reset-configuration; y"})
    assert line.splitlines() == [line]
    assert line.endswith('comment="x\\n/system reset-configuration; y"')


def test_wireguard_lines_refuse_what_wg_quick_would_cut_or_split(tmp_path: Path) -> None:
    wg_quick = require_tool("wg-quick")
    for bad in ("10.0.0.1/32 # AllowedIPs = 0.0.0.0/0", "10.0.0.1/32\nPostUp = touch /tmp/x", " 10.0.0.1/32"):
        with pytest.raises(escape.UnsafeValue):
            escape.wg_line("AllowedIPs", bad)
    conf = tmp_path / "wg-test.conf"
    conf.write_text("\n".join([
        escape.comment("a header with $(touch /tmp/pwned) and ; in it"),
        "[Interface]",
        escape.wg_line("PrivateKey", "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="),
        "[Peer]",
        escape.wg_line("PublicKey", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="),
        escape.wg_line("AllowedIPs", "10.0.0.1/32, 10.1.0.0/16"),
        "",
    ]))
    conf.chmod(0o600)
    stripped = subprocess.run([wg_quick, "strip", str(conf)], capture_output=True, text=True, timeout=10, check=True).stdout
    # wg-quick keeps comment lines for wg, which ignores them; everything else is one key each.
    lines = stripped.splitlines()
    assert lines[0] == "# a header with $(touch /tmp/pwned) and ; in it"
    assert [line.split(" = ")[0] for line in lines[1:] if line] == [
        "[Interface]", "PrivateKey", "[Peer]", "PublicKey", "AllowedIPs"
    ]
    assert "AllowedIPs = 10.0.0.1/32, 10.1.0.0/16" in lines


def test_etcd_initial_cluster_refuses_separators() -> None:
    good = escape.etcd_initial_cluster([("etcd-1", "http://10.2.0.50:2380"), ("etcd-3", "http://10.1.0.15:2380")])
    assert dict(item.split("=") for item in good.split(",")) == {"etcd-1": "http://10.2.0.50:2380", "etcd-3": "http://10.1.0.15:2380"}
    for name, url in (("etcd-1,evil=http://203.0.113.66:2380", "http://10.2.0.50:2380"),
                      ("etcd-1", "http://10.2.0.50:2380,evil=http://203.0.113.66:2380"),
                      ("etcd=1", "http://10.2.0.50:2380"), ("etcd 1", "http://10.2.0.50:2380")):
        with pytest.raises(escape.UnsafeValue):
            escape.etcd_initial_cluster([(name, url)])


def test_nft_and_systemd_words_refuse_quotes_and_expansions() -> None:
    assert escape.nft_string("wg-app") == '"wg-app"'
    for bad in ('wg"; flush ruleset; "', "wg\\x", "two\nlines"):
        with pytest.raises(escape.UnsafeValue):
            escape.nft_string(bad)
    assert escape.systemd_word("10.0.0.0/14") == "10.0.0.0/14"
    for bad in ("10.0.0.1 ; reboot", "$HOME", "%h", ""):
        with pytest.raises(escape.UnsafeValue):
            escape.systemd_word(bad)


def test_authorized_keys_lines_are_one_line_each() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 admin"
    assert escape.authorized_key(key) == key
    with pytest.raises(escape.UnsafeValue):
        escape.authorized_key(key + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 evil")
