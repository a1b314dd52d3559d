"""Each role checked as an operator would: from inside the server (what `ssh server ...` shows),
with the tools the role itself installed, against the addresses the topology gives it.

A check passes on what the service does (a query answered, a handshake made, a login taken or
refused), not on a unit's state alone. Checks read passwords from the files the delivery wrote
on the server, never print them, and print only the last line of what answered."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .containers import Container


@dataclass
class Check:
    server: str
    name: str
    ok: bool
    detail: str = ""


Probe = Callable[[Container], tuple[bool, str]]


def shell(script: str, expect: str | None = None, timeout: float = 60, wait: float = 0) -> Probe:
    """`script` under sh on the server exits 0 and its output matches `expect` (a regex); with
    `wait`, tried again every 5 s for up to that many seconds (what converges after a while)."""

    def probe(container: Container) -> tuple[bool, str]:
        deadline = time.monotonic() + wait
        while True:
            ok, detail = once(container)
            if ok or time.monotonic() >= deadline:
                return ok, detail
            time.sleep(5)

    def once(container: Container) -> tuple[bool, str]:
        try:
            result = container.exec("sh", "-c", script, timeout=timeout)
        except Exception as error:  # noqa: BLE001 - whatever fails, the check fails and says why
            return False, str(error)[-300:]
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            return False, f"exit {result.returncode}: {_tail(output)}"
        if expect is not None and not re.search(expect, output, re.MULTILINE):
            return False, f"expected /{expect}/, got: {_tail(output)}"
        return True, _tail(output, 1)

    return probe


def _tail(text: str, lines: int = 4) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-400:]


# Units that fail in the lab for a reason of the lab's, each with it; any other failed unit fails
# the check.
EXPECTED_FAILED_UNITS = {
    # From node_exporter's collectors' recommends; no IPMI device in a container (nor, likely, on
    # a cloud VM: left open).
    "openipmi.service": "no IPMI device",
    # The entry's first certificate: Let's Encrypt is out of the lab's reach (the timer retries).
    "unde-entry-certificate.service": "no ACME server in the lab",
}


def every_server() -> dict[str, Probe]:
    ignored = "|".join(EXPECTED_FAILED_UNITS).replace(".", "\\.")
    return {
        "no failed unit": shell("failed=$(systemctl --failed --no-legend --plain | awk '{print $1}' | "
                                f"grep -v -E '^({ignored})$' || true); "
                                "[ -z \"$failed\" ] || { echo $failed; exit 1; }"),
        "node_exporter answers on :9100": shell(
            "curl -fsS --max-time 10 http://127.0.0.1:9100/metrics | grep -c '^node_'", r"^[1-9]\d*$"),
    }


def _psql(sql: str, port: int = 5432) -> str:
    return f"runuser -u postgres -- psql -X -At -p {port} -h /var/run/postgresql -d postgres -c \"{sql}\""


def shard_primary(primary_ip: str, replica_ip: str, synchronous: bool = False) -> dict[str, Probe]:
    """The primary's checks; the replica's role is Patroni's: `sync_standby` on a sync shard."""
    role = "sync_standby" if synchronous else "replica"
    vector = ("CREATE EXTENSION IF NOT EXISTS vector; "
              "CREATE TABLE IF NOT EXISTS lab_nn (id int PRIMARY KEY, embedding vector(3)); "
              "INSERT INTO lab_nn VALUES (1, '[1,1,1]'), (2, '[5,5,5]'), (3, '[9,0,9]') ON CONFLICT DO NOTHING; "
              "CREATE INDEX IF NOT EXISTS lab_nn_hnsw ON lab_nn USING hnsw (embedding vector_l2_ops); "
              "SET enable_seqscan = off; "
              "SELECT id FROM lab_nn ORDER BY embedding <-> '[4,4,4]' LIMIT 1;")
    return {
        # A new replica copies the primary first: up to 5 minutes until it streams.
        "Patroni: leader, replica streaming": shell(
            "for i in $(seq 60); do "
            f"state=$(curl -fsS --max-time 10 http://{primary_ip}:8008/cluster | "
            "python3 -c 'import json,sys; m=json.load(sys.stdin)[\"members\"]; "
            "print(sorted((x[\"role\"], x[\"state\"]) for x in m))'); "
            f"case \"$state\" in *\"'{role}', 'streaming'\"*) break;; esac; sleep 5; done; echo \"$state\"",
            rf"\('leader', 'running'\).*\('{role}', 'streaming'\)|\('{role}', 'streaming'\).*\('leader', 'running'\)",
            timeout=330),
        "PostgreSQL 17 serves": shell(_psql("SHOW server_version"), r"^17\."),
        "pgvector: HNSW index answers a nearest-neighbour query": shell(_psql(vector), r"^2$"),
        "replication flows through the tunnel": shell(
            f"{_psql('SELECT client_addr, state FROM pg_stat_replication')}; ip -o route get {replica_ip}",
            rf"{re.escape(replica_ip)}\|streaming[\s\S]*dev wg-"),
        # A login PgBouncer checks with its auth_query against PostgreSQL, then a query through it.
        "PgBouncer takes a login": shell(
            ". /etc/unde/secrets/postgres_exporter.env && PGPASSWORD=\"$DATA_SOURCE_PASS\" "
            "psql -X -At \"host=127.0.0.1 port=6432 dbname=postgres user=$DATA_SOURCE_USER\" "
            "-c 'SELECT current_user'", r"^postgres_exporter$"),
        "pgBackRest check (the S3 stand-in)": shell(
            "set -a; . /etc/unde/secrets/pgbackrest.env; set +a; "
            "runuser -u postgres -- pgbackrest --stanza=$(sed -n 's/^\\[\\(shard[0-9]*\\)\\]$/\\1/p' "
            "/etc/pgbackrest/pgbackrest.conf | head -1) check && echo check passed", r"check passed", timeout=180),
    }


def shard_replica() -> dict[str, Probe]:
    return {
        "PostgreSQL 17 in recovery (hot standby)": shell(_psql("SELECT pg_is_in_recovery()"), r"^t$", wait=300),
        "pgvector table replicated": shell(_psql("SELECT count(*) FROM lab_nn"), r"^3$", wait=300),
    }


def etcd_member() -> dict[str, Probe]:
    return {
        "etcd quorum healthy": shell(
            "ETCDCTL_API=3 etcdctl --endpoints=$(grep -o 'http://[0-9.]*:2379' /etc/etcd/unde-etcd.yml | head -1) "
            "endpoint health --cluster", r"(is healthy[\s\S]*){3}"),
    }


def redis_acl(users: dict[str, str]) -> dict[str, Probe]:
    """Each ACL user logs in with its password (`users`: name -> the password the delivery gave
    its clients); `default` is refused."""
    probes: dict[str, Probe] = {
        "default user refused": shell(
            "out=$(redis-cli -h 10.2.0.4 PING 2>&1); echo \"$out\"; echo \"$out\" | grep -q NOAUTH"),
    }
    for name, password in users.items():
        # PING answers PONG, or NOPERM for a user whose ACL leaves it out: either way after a
        # login that worked (a wrong password answers WRONGPASS).
        probes[f"ACL user {name} logs in"] = shell(
            f"REDISCLI_AUTH='{password}' redis-cli --user {name} -h 127.0.0.1 --no-auth-warning PING",
            r"^(PONG|NOPERM .*)$")
    return probes


def entry_http(name: str) -> dict[str, Probe]:
    """Until it has a certificate, the entry serves port 80 only: the ACME challenge and the
    redirect to HTTPS."""
    return {
        f"nginx redirects {name} to HTTPS": shell(
            f"curl -sS -o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Host: {name}' http://127.0.0.1/",
            rf"^30[18] https://{re.escape(name)}/"),
    }


def prometheus(listen: str) -> dict[str, Probe]:
    return {
        "Prometheus loaded its rules": shell(
            f"curl -fsS --max-time 10 http://{listen}/api/v1/rules | python3 -c 'import json,sys; "
            "g=json.load(sys.stdin)[\"data\"][\"groups\"]; print(len(g), sum(len(x[\"rules\"]) for x in g))'",
            r"^[1-9]\d* [1-9]\d*$", wait=60),
        "every file_sd target present": shell(
            "python3 -c 'import glob, json, sys, urllib.request\n"
            "wanted = {t for f in glob.glob(\"/etc/prometheus/file_sd/*.json\") for g in json.load(open(f)) "
            "for t in g[\"targets\"]}\n"
            f"active = json.load(urllib.request.urlopen(\"http://{listen}/api/v1/targets\", timeout=10))\n"
            "seen = {t[\"discoveredLabels\"][\"__address__\"] for t in active[\"data\"][\"activeTargets\"]}\n"
            "missing = sorted(wanted - seen)\n"
            "print(len(missing), \"of\", len(wanted), \"targets missing\", missing[:4])\n"
            "sys.exit(1 if missing or not wanted else 0)'", r"^0 of [1-9]\d* targets missing",
            # Prometheus applies discovered targets a few seconds after it starts (after a reboot,
            # the list is empty at first).
            wait=60),
    }


def alertmanager(listen: str) -> dict[str, Probe]:
    return {"Alertmanager up": shell(f"curl -fsS --max-time 10 http://{listen}/-/healthy", r"OK")}


def wireguard(interface: str) -> dict[str, Probe]:
    return {
        f"WireGuard handshake on {interface}": shell(
            f"wg show {interface} latest-handshakes | awk '{{print $2}}'", r"^[1-9]\d*$"),
    }


def redis_passwords(acl: str, secrets: Iterable[str]) -> dict[str, str]:
    """The password of each ACL user of `acl`, found among the delivered secret texts by its
    SHA-256 (the ACL file keeps only that)."""
    hashes = {m.group(2): m.group(1) for m in re.finditer(r"^user (\S+) on #([0-9a-f]{64})", acl, re.MULTILINE)}
    found: dict[str, str] = {}
    for text in secrets:
        for token in set(re.findall(r"[A-Za-z0-9+/=_.:-]{12,}", text)):
            for candidate in {token, token.split("=", 1)[-1]}:
                user = hashes.get(hashlib.sha256(candidate.encode()).hexdigest())
                if user is not None:
                    found[user] = candidate
    return found


def run_checks(container: Container, probes: dict[str, Probe]) -> list[Check]:
    results = []
    for name, probe in probes.items():
        ok, detail = probe(container)
        results.append(Check(container.host.name, name, ok, detail))
    return results
