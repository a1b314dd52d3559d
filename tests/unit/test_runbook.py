"""`unde-infra runbook restore`: a target the backups cannot reach is refused before anything is
printed to run (in the future; not after the end of the oldest backup, read from `pgbackrest info
--output=json` or estimated from the retention), and the plan says how ssh reaches each server,
with the routes of `unde-infra ops`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import unde
from unde_infra import ops, runbook
from unde_infra.model import Inventory
from unde_infra.render.pgbackrest import BACKUP_SCHEDULE, FULL_BACKUP_INTERVAL_DAYS, RETENTION_FULL
from unde_infra.settings import ExistingHost

NOW = "2026-12-07 15:00:00+00:00"


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def backup(label: str, start: str, stop: str, kind: str, wal: tuple[str, str], db: int = 2,
           prior: str | None = None) -> dict:
    """One entry of `backup[]` as pgBackRest 2.55 prints it (command/info/info.c)."""
    return {
        "archive": {"start": wal[0], "stop": wal[1]},
        "backrest": {"format": 5, "version": "2.55.1"},
        "database": {"id": db, "repo-key": 1},
        "error": False,
        "info": {"delta": 52_428_800, "repository": {"delta": 9_437_184, "size": 9_437_184}, "size": 52_428_800},
        "label": label,
        "lsn": {"start": "9/2B000028", "stop": "9/2B000138"},
        "prior": prior,
        "reference": [prior] if prior else None,
        "timestamp": {"start": epoch(start), "stop": epoch(stop)},
        "type": kind,
    }


# `pgbackrest --stanza=shard0 info --output=json` after two weekly fulls and their diffs; the
# stanza was upgraded once (db 1: an older PostgreSQL, whose backup could not start on today's).
INFO = [{
    "archive": [
        {"database": {"id": 1, "repo-key": 1}, "id": "15-1", "max": "000000010000000400000010",
         "min": "000000010000000300000001"},
        {"database": {"id": 2, "repo-key": 1}, "id": "17-2", "max": "000000030000000A000000C4",
         "min": "00000003000000090000002B"},
    ],
    "backup": [
        backup("20261101-023000F", "2026-11-01 02:30:00", "2026-11-01 02:44:10", "full",
               ("000000010000000300000001", "000000010000000300000001"), db=1),
        backup("20261122-023012F", "2026-11-22 02:30:12", "2026-11-22 02:41:07", "full",
               ("00000003000000090000002B", "00000003000000090000002B")),
        backup("20261122-023012F_20261123-024501D", "2026-11-23 02:45:01", "2026-11-23 02:47:30", "diff",
               ("00000003000000090000004E", "00000003000000090000004E"), prior="20261122-023012F"),
        backup("20261129-022745F", "2026-11-29 02:27:45", "2026-11-29 02:39:02", "full",
               ("000000030000000A00000003", "000000030000000A00000003")),
    ],
    "cipher": "aes-256-cbc",
    "db": [{"id": 1, "repo-key": 1, "system-id": 7321805129847583010, "version": "15"},
           {"id": 2, "repo-key": 1, "system-id": 7432019385710293847, "version": "17"}],
    "name": "shard0",
    "repo": [{"cipher": "aes-256-cbc", "key": 1, "status": {"code": 0, "message": "ok"}}],
    "status": {"code": 0, "lock": {"backup": {"held": False}, "restore": {"held": False}}, "message": "ok"},
}]


def info_file(tmp_path: Path, stanzas: list[dict]) -> str:
    path = tmp_path / "shard0-backups.json"
    path.write_text(json.dumps(stanzas))
    return str(path)


def restore(*args: str) -> tuple[int, str, str]:
    result = unde("runbook", "restore", "--shard", "0", "--now", NOW, *args)
    return result.returncode, result.stdout, result.stderr


def test_a_target_in_the_future_is_refused() -> None:
    code, out, err = restore("--target", "2026-12-07 16:00:00+01:00")  # 15:00 UTC: now exactly, fine
    assert code == 0, err
    code, out, err = restore("--target", "2026-12-07 15:00:01+00:00")
    assert (code, out) == (2, "")
    assert err == ("--target: 2026-12-07 15:00:01+00:00 is in the future (now 2026-12-07 15:00:00+00:00): PostgreSQL "
                   "would end recovery without reaching it, after Patroni was stopped and the shard's state removed\n")


def test_a_target_before_the_end_of_the_oldest_backup_is_refused(tmp_path: Path) -> None:
    info = info_file(tmp_path, INFO)
    # pgBackRest restores from the newest backup that ended before the target: 02:41:07 itself is too early.
    code, out, err = restore("--target", "2026-11-22 02:41:07+00:00", "--info-json", info)
    assert (code, out) == (2, "")
    assert err == ("--target: 2026-11-22 02:41:07+00:00 is older than the backups reach (2026-11-22 02:41:07+00:00: "
                   "pgbackrest info: the oldest backup, 20261122-023012F, ended then; WAL archived up to "
                   "000000030000000A000000C4)\n")
    code, out, err = restore("--target", "2026-11-22 02:41:08+00:00", "--info-json", info)
    assert code == 0, err
    assert ("# The backups reach back to 2026-11-22 02:41:07+00:00 (pgbackrest info: the oldest backup, 20261122-023012F, "
            "ended then; WAL archived up to 000000030000000A000000C4).") in out.splitlines()
    assert "# 0." not in out  # the repository was read already


def test_without_the_repository_the_retention_gives_an_estimate() -> None:
    assert (RETENTION_FULL, FULL_BACKUP_INTERVAL_DAYS) == (2, 7)
    code, out, err = restore("--target", "2026-11-23 15:00:00+00:00")  # 14 days back: the furthest possible
    assert (code, out) == (2, "")
    assert err == ("--target: 2026-11-23 15:00:00+00:00 is older than the backups reach (2026-11-23 15:00:00+00:00: "
                   "an estimate from the retention: 2 full backups kept, one every 7 days; --info-json with "
                   "`pgbackrest info --output=json` (step 0) gives the exact time)\n")
    code, out, err = restore("--target", "2026-11-25 10:00:00+00:00")  # reachable unless the oldest full is younger
    assert code == 0, err
    lines = out.splitlines()
    assert lines[2:4] == [
        "# The backups reach back to a time between 2026-11-23 15:00:00+00:00 and 2026-11-30 15:00:00+00:00 (an estimate "
        "from the retention: 2 full backups kept, one every 7 days); step 0 reads it.",
        "# The target is in that span: run step 0 and check it with --info-json before step 1.",
    ]
    step0 = lines.index("# 0. From here: what the backups of shard0 reach; then check the target with "
                        "--info-json shard0-backups.json:")
    assert lines[step0 + 1] == (
        "ssh -o ConnectTimeout=10 -J \"$LOCAL_JUMP\" root@10.2.0.10 'set -a; . /etc/unde/secrets/pgbackrest.env; "
        "set +a; runuser -u postgres -- pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=shard0 info "
        "--output=json' > shard0-backups.json")
    code, out, err = restore("--target", "2026-12-01 10:00:00+00:00")  # within the week every kept full reaches
    assert code == 0 and "The target is in that span" not in out


def test_the_plan_says_how_ssh_reaches_each_server() -> None:
    code, out, err = restore("--target", "2026-12-01 10:00:00+00:00")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ('LOCAL_JUMP="${LOCAL_JUMP:-$(pulumi stack output -s local sshJump)}"  '
                        "# the local site's jump host (local-app)")
    assert lines[1] == ("# Point-in-time restore of shard0 to 2026-12-01T10:00:00+00:00: everything written after "
                        "it is lost.")
    start = lines.index("# The commands run as root on the server each step names; ssh opens a shell there:")
    assert lines[start + 1:start + 3] == [
        "#   shard-replica-0: ssh -o ConnectTimeout=10 -J root@46.62.233.30 root@10.1.2.10",
        '#   local-shard-0: ssh -o ConnectTimeout=10 -J "$LOCAL_JUMP" root@10.2.0.10',
    ]
    given = unde("runbook", "restore", "--now", NOW, "--target", "2026-12-01 10:00:00+00:00",
                 "--local-jump", "root@198.51.100.7")
    assert given.stdout.splitlines()[0] == "LOCAL_JUMP=root@198.51.100.7  # the local site's jump host"


def test_existing_hosts_are_reached_with_sudo(inventory: Inventory) -> None:
    shard = inventory.shards[0]
    reach = ops.Reach(inventory, "existing", {"local-shard-0": ExistingHost("192.0.2.10", "admin", 2222)})
    now = datetime.fromisoformat(NOW)
    lines = runbook.restore_plan(shard, datetime(2026, 12, 1, 10, tzinfo=UTC), runbook.window_from_retention(now), reach,
                                 None)
    assert "#   local-shard-0: ssh -o ConnectTimeout=10 -p 2222 -t admin@192.0.2.10 'sudo -i'" in lines
    assert ("ssh -o ConnectTimeout=10 -p 2222 admin@192.0.2.10 'sudo -n sh -c '\"'\"'set -a; . "
            "/etc/unde/secrets/pgbackrest.env; set +a; runuser -u postgres -- pgbackrest "
            "--config=/etc/pgbackrest/pgbackrest.conf --stanza=shard0 info --output=json'\"'\"'' > shard0-backups.json"
            ) in lines
    assert not any(line.startswith("LOCAL_JUMP=") for line in lines)  # Helsinki's route needs no local jump host


def test_the_oldest_backup_is_one_the_restore_can_use() -> None:
    window = runbook.window_from_info(json.dumps(INFO), "shard0")
    assert window.oldest == datetime(2026, 11, 22, 2, 41, 7, tzinfo=UTC) and not window.estimate
    # The oldest full's first WAL segment was expired from the archive: it cannot be recovered from.
    pruned = [dict(INFO[0], archive=[INFO[0]["archive"][0], dict(INFO[0]["archive"][1], min="000000030000000900000050")])]
    assert runbook.window_from_info(json.dumps(pruned), "shard0").oldest == datetime(2026, 11, 29, 2, 39, 2, tzinfo=UTC)


@pytest.mark.parametrize(("info", "message"), [
    ("Error: no stanza", "not the output of pgbackrest info --output=json"),
    (json.dumps([dict(INFO[0], name="shard1")]), "no stanza shard0 in it (stanzas: shard1)"),
    (json.dumps([dict(INFO[0], backup=[], status={"code": 2, "message": "no valid backups"})]),
     "shard0 has no backup to restore from (pgbackrest info: no valid backups)"),
    (json.dumps([dict(INFO[0], backup=[{"label": "x"}])]), "not the output of pgbackrest info --output=json (stanza shard0"),
])
def test_info_that_shows_no_backup_is_an_error(info: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        runbook.window_from_info(info, "shard0")


def test_every_problem_of_the_request_at_once(tmp_path: Path) -> None:
    result = unde("runbook", "restore", "--target", "2026-11-24 10:00", "--now", "yesterday",
                  "--info-json", str(tmp_path / "missing.json"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "--target: give a time zone (e.g. 2026-11-24 10:00+00:00), got '2026-11-24 10:00'",
        "--now: not an ISO 8601 time: 'yesterday'",
        f"--info-json: cannot read {tmp_path / 'missing.json'}: No such file or directory",
    ]
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = unde("runbook", "restore", "--now", NOW, "--target", "2026-12-08 10:00:00Z", "--info-json", str(bad))
    assert result.stderr.splitlines() == [
        "--info-json: no stanza shard0 in it (stanzas: none)",
        "--target: 2026-12-08 10:00:00+00:00 is in the future (now 2026-12-07 15:00:00+00:00): PostgreSQL would end "
        "recovery without reaching it, after Patroni was stopped and the shard's state removed",
    ]


def test_the_estimate_follows_the_full_backup_timer() -> None:
    """A full backup one day a week: FULL_BACKUP_INTERVAL_DAYS is a week."""
    (full_calendar,) = [calendar for kind, calendar in BACKUP_SCHEDULE.values() if kind == "full"]
    weekdays = full_calendar.split()[0]
    assert weekdays in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun") and FULL_BACKUP_INTERVAL_DAYS == 7
