#!/usr/bin/python3
"""PostHog's ingestion and query latency for node_exporter's textfile collector, read from its
ClickHouse. Delivered by unde-infra; runs from a timer on the PostHog server.

  posthog_events_ingested_total   rows in the events table (a counter: PostHog only adds events)
  posthog_query_latency_p95       p95 of the SELECTs ClickHouse finished in the last minutes, seconds

When ClickHouse does not answer, the file is removed rather than left stale, so the metrics go
absent and their absent() alerts fire. Its parameters are in the JSON file beside it
(`<this file>.json`, rendered by unde-infra)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any


def load_settings(path: str | None) -> dict[str, Any]:
    with open(path or os.path.abspath(__file__) + ".json", encoding="utf-8") as f:
        settings: dict[str, Any] = json.load(f)
    return settings


def queries(settings: Mapping[str, Any]) -> dict[str, str]:
    database, minutes = settings["database"], int(settings["latency_window_minutes"])
    if not database.isidentifier():
        raise ValueError(f"not a database name: {database!r}")
    return {
        "events": f"SELECT count() FROM {database}.events",
        # Our own queries are never logged (log_queries=0), so they do not count here.
        "latency": (
            "SELECT quantile(0.95)(query_duration_ms) / 1000 FROM system.query_log "
            f"WHERE type = 'QueryFinish' AND query_kind = 'Select' AND event_time > now() - INTERVAL {minutes} MINUTE"
        ),
    }


def clickhouse(url: str, query: str, timeout: float = 10.0) -> str:
    params = urllib.parse.urlencode({"query": query, "log_queries": "0", "default_format": "TabSeparated"})
    with urllib.request.urlopen(f"{url}?{params}", timeout=timeout) as response:
        return str(response.read().decode().strip())


def number(text: str) -> float:
    value = float(text)  # ClickHouse writes nan when no query finished in the window
    if math.isinf(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def exposition(settings: Mapping[str, Any], events: float, latency: float) -> str:
    events_metric, latency_metric = settings["events_metric"], settings["latency_metric"]
    latency_text = "NaN" if math.isnan(latency) else repr(latency)
    return "\n".join([
        f"# HELP {events_metric} Events PostHog has stored in ClickHouse.",
        f"# TYPE {events_metric} counter",
        f"{events_metric} {int(events)}",
        f"# HELP {latency_metric} p95 duration of the SELECTs ClickHouse finished recently, seconds.",
        f"# TYPE {latency_metric} gauge",
        f"{latency_metric} {latency_text}",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", help="the parameters (default: the JSON file beside this script)")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    path = os.path.join(settings["output_dir"], settings["file_name"])
    try:
        asked = queries(settings)
        events = number(clickhouse(settings["clickhouse_url"], asked["events"]))
        latency = number(clickhouse(settings["clickhouse_url"], asked["latency"]))
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"ClickHouse did not answer: {exc}", file=sys.stderr)
        if os.path.exists(path):
            os.remove(path)
        return 1
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(exposition(settings, events, latency))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # node_exporter never reads a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
