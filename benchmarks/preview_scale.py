"""How the offline preview scales with the shard count, against the bare Pulumi SDK.

For shard counts 1, 4, 16 and 64: the time of the offline preview of both stacks (the real
program under the mock monitor) and the number of resources it registers; then, in the same
run, the time the bare SDK takes to register as many plain resources under its stock mocks (the
floor no program can beat). The ratio says what the program itself costs on top of the SDK.

    .venv/bin/python benchmarks/preview_scale.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi
from pulumi.runtime import mocks, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from unde_infra.preview import prepare, run_stacks

SHARD_COUNTS = (1, 4, 16, 64)


class PlainMocks(mocks.Mocks):
    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict]:
        return f"{args.name}-id", args.inputs

    def call(self, args: mocks.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


class Plain(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("bench:index:Plain", name, {"value": name})


def preview_seconds(shards: int) -> tuple[float, int]:
    asyncio.set_event_loop(asyncio.new_event_loop())
    started = time.perf_counter()
    results = run_stacks(prepare(["helsinki", "local"], None, shards))
    return time.perf_counter() - started, sum(len(r.run.records) for r in results)


def floor_seconds(count: int) -> float:
    asyncio.set_event_loop(asyncio.new_event_loop())
    monitor = mocks.MockMonitor(PlainMocks())
    settings.configure(
        mocks.MockSettings(
            monitor=monitor,
            monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
            engine=mocks.MockEngine(None),
            project="bench",
            stack="bench",
            dry_run=True,
            organization="organization",
            callbacks=None,
        )
    )
    settings.set_root_resource(None)  # type: ignore[arg-type]
    started = time.perf_counter()
    _sync_await(run_in_stack(lambda: [Plain(f"r{i}") for i in range(count)]))
    elapsed = time.perf_counter() - started
    settings.set_root_resource(None)  # type: ignore[arg-type]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median is shown)")
    args = parser.parse_args()
    print(f"offline preview of both stacks vs the bare SDK floor (median of {args.repeat} runs)")
    print(f"{'shards':>6} {'resources':>9} {'preview s':>10} {'floor s':>8} {'ratio':>6} {'ms/resource':>11}")
    for shards in SHARD_COUNTS:
        runs = [preview_seconds(shards) for _ in range(args.repeat)]
        seconds = statistics.median(r[0] for r in runs)
        count = runs[0][1]
        floor = statistics.median(floor_seconds(count) for _ in range(args.repeat))
        print(f"{shards:>6} {count:>9} {seconds:>10.2f} {floor:>8.2f} {seconds / floor:>6.1f} {1000 * seconds / count:>11.2f}")


if __name__ == "__main__":
    main()
