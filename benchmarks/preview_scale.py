"""How the offline preview scales with the shard count, against the bare Pulumi SDK's floor.

For each shard count (1, 4, 16 and 64): `unde-infra preview --stack all --shards N` runs as a
whole process; then `benchmarks/floor.py` registers what that preview registered (read from its
`resources.json`: the same count, types, names, parents, inputs, dependencies and options) with
the bare SDK under trivial mocks, also a whole process, once with the interpreter's defaults (a
bare program) and once with the offline runner's garbage-collector settings (the program's own
cost alone). The runs alternate, preview then floors, so that a drift of the machine's speed
hits both; each figure is the median over the runs, each ratio the median of the pairs' ratios.

CPU seconds (user + system of the process, from the kernel's accounting) are the fair figure on
a shared machine; wall seconds are shown too, with the load average before and after.

    .venv/bin/python benchmarks/preview_scale.py [--repeat N] [--shards 1 4 16 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = Path(__file__).resolve().with_name("floor.py")
SHARD_COUNTS = (1, 4, 16, 64)
STACKS = ("helsinki", "local")


@dataclass(frozen=True)
class Timing:
    cpu: float
    wall: float


def timed(command: list[str]) -> Timing:
    """One whole process: its own user + system seconds (wait4's rusage) and its wall time."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {process.returncode}:\n{errors.decode(errors='replace')}")
    return Timing(usage.ru_utime + usage.ru_stime, wall)


def resource_count(out: Path) -> int:
    return sum(len(json.loads((out / stack / "resources.json").read_text(encoding="utf-8"))) for stack in STACKS)


@dataclass
class Row:
    shards: int
    resources: int
    preview: list[Timing]
    floor: list[Timing]
    floor_tuned: list[Timing]

    @staticmethod
    def median(timings: list[Timing], figure: str) -> float:
        return statistics.median(getattr(t, figure) for t in timings)

    def ratio(self, floor: list[Timing], figure: str) -> float:
        return statistics.median(getattr(p, figure) / getattr(f, figure) for p, f in zip(self.preview, floor, strict=True))


def measure(shards: int, repeat: int, scratch: Path) -> Row:
    out = scratch / f"preview-{shards}"
    preview = [sys.executable, "-m", "unde_infra", "preview", "--stack", "all", "--shards", str(shards), "--out", str(out)]
    row = Row(shards, 0, [], [], [])
    for _ in range(repeat):
        row.preview.append(timed(preview))
        row.floor.append(timed([sys.executable, str(FLOOR), str(out)]))
        row.floor_tuned.append(timed([sys.executable, str(FLOOR), str(out), "--gc", "tuned"]))
    row.resources = resource_count(out)
    return row


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| shards | resources | preview CPU s | preview wall s | floor CPU s | floor wall s | ratio CPU | ratio wall "
        "| floor, runner's GC, CPU s | ratio CPU to it |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.shards} | {r.resources} | {r.median(r.preview, 'cpu'):.2f} | {r.median(r.preview, 'wall'):.2f} "
            f"| {r.median(r.floor, 'cpu'):.2f} | {r.median(r.floor, 'wall'):.2f} | {r.ratio(r.floor, 'cpu'):.2f} "
            f"| {r.ratio(r.floor, 'wall'):.2f} | {r.median(r.floor_tuned, 'cpu'):.2f} | {r.ratio(r.floor_tuned, 'cpu'):.2f} |"
        )
    return lines


def growth(rows: list[Row]) -> str | None:
    by_shards = {r.shards: r for r in rows}
    if 16 not in by_shards or 64 not in by_shards:
        return None
    low, high = by_shards[16], by_shards[64]

    def of(timings_of: str, figure: str) -> float:
        return Row.median(getattr(high, timings_of), figure) / Row.median(getattr(low, timings_of), figure)

    return (
        f"64/16 growth: preview {of('preview', 'cpu'):.2f}x CPU ({of('preview', 'wall'):.2f}x wall), "
        f"floor {of('floor', 'cpu'):.2f}x CPU, resources {high.resources / low.resources:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each process per shard count (medians shown)")
    parser.add_argument("--shards", type=int, nargs="+", default=list(SHARD_COUNTS))
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"offline preview of both stacks vs the bare SDK floor; {args.repeat} runs each, medians; "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="preview-scale-") as scratch:
        for shards in args.shards:
            rows.append(measure(shards, args.repeat, Path(scratch)))
            print(f"  {shards} shards done", file=sys.stderr, flush=True)
    print("\n".join(table(rows)))
    if (line := growth(rows)) is not None:
        print(line)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
