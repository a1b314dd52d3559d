#!/usr/bin/python3
"""Keep etcd's leader on this member (the local site's) while every member is healthy.

Delivered by unde-infra. Why: when the link between the sites is cut and the leader is in
Helsinki, the local member loses the leader, the local primaries lose the DCS and keep
acknowledging writes until they demote (an asynchronous shard then loses them). With the
leader here, the local member and the witness keep the quorum and nothing moves. A leader
transfer takes a few hundred milliseconds, well inside Patroni's retry_timeout; it is only
asked for when every member answers, so it never moves the leader away from a quorum.

Its parameters are in the JSON file beside it (`<this file>.json`, rendered by unde-infra):
me (this member's client URL), endpoints (every member's client URL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Status = tuple[int, int]  # (member id, the leader it sees)


def load_settings(path: str | None) -> dict[str, Any]:
    with open(path or os.path.abspath(__file__) + ".json", encoding="utf-8") as f:
        settings: dict[str, Any] = json.load(f)
    return settings


def status(endpoint: str) -> Status | None:
    out = subprocess.run(["etcdctl", "--endpoints=" + endpoint, "--command-timeout=2s", "endpoint", "status",
                          "-w", "json"], capture_output=True, text=True, timeout=10, env={"ETCDCTL_API": "3"})
    if out.returncode != 0:
        return None
    header = json.loads(out.stdout)[0]["Status"]
    return header["header"]["member_id"], header["leader"]


def decide(me: str, seen: Mapping[str, Status | None]) -> tuple[str, str | None, int | None]:
    """(why, the endpoint to ask, the member id to move the leader to); no endpoint: do nothing."""
    if any(value is None for value in seen.values()):
        return "not every member answers: leave the leader where it is", None, None
    answers = {endpoint: value for endpoint, value in seen.items() if value is not None}
    my_id, leader = answers[me]
    if {seen_leader for _, seen_leader in answers.values()} != {leader}:
        return "members disagree on the leader: wait", None, None
    if leader == my_id:
        return "the leader is here", None, None
    leader_endpoint = next(e for e, (member_id, _) in answers.items() if member_id == leader)
    return "moving the leader here", leader_endpoint, my_id


def main(argv: Sequence[str] | None = None, status_of: Callable[[str], Status | None] = status) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    settings = load_settings(args[1] if args[:1] == ["--config"] and len(args) == 2 else None)
    seen = {endpoint: status_of(endpoint) for endpoint in settings["endpoints"]}
    why, leader_endpoint, my_id = decide(settings["me"], seen)
    if leader_endpoint is None or my_id is None:
        if why != "the leader is here":
            print(why)
        return 0
    out = subprocess.run(["etcdctl", "--endpoints=" + leader_endpoint, "move-leader", format(my_id, "x")],
                         capture_output=True, text=True, timeout=20, env={"ETCDCTL_API": "3"})
    print(out.stdout + out.stderr)
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
