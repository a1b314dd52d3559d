"""The converge lab's figures: `make converge` once, then per server the time from boot until its
last command finished, the commands it ran, the SSH connections opened to it, the most open to
it at once and to its jump host; and the lab's wall time on this machine.

    .venv/bin/python benchmarks/converge.py            # runs the lab, then prints
    .venv/bin/python benchmarks/converge.py --figures /var/tmp/unde-lab/run/figures.json   # prints a run's
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(figures: dict) -> str:  # type: ignore[type-arg]
    lines = ["| server | converged (s from boot) | commands | SSH connections | most at once | most at once to its jump host |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, entry in sorted(figures["servers"].items(), key=lambda item: -item[1]["converged_s"]):
        jump = entry.get("jump_peak")
        lines.append(f"| {name} | {entry['converged_s']:.0f} | {entry['commands']:.0f} | {entry.get('opened', 0):.0f} | "
                     f"{entry.get('peak', 0):.0f} | {'-' if jump is None else f'{jump:.0f}'} |")
    peaks = {stack: max(d["run"]["peak"].values(), default=0) for stack, d in figures["delivery"].items()}
    lines += ["", f"all servers converged {figures['lab_converged_s']:.0f} s after boot; the whole lab (build, boot, "
              f"deliver, check, deliver again, reboot, change) {figures['seconds']:.0f} s; most connections at once "
              f"to any endpoint: {peaks}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--figures", type=Path, help="print the figures of an earlier run instead of running the lab")
    args = parser.parse_args()
    path = args.figures
    if path is None:
        run_dir = Path("/var/tmp/unde-lab/benchmark")
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "lab", "--run-dir", str(run_dir)], cwd=ROOT)
        print(f"lab exit {result.returncode} in {time.monotonic() - started:.0f} s")
        path = run_dir / "figures.json"
    figures = json.loads(path.read_text())
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {platform.machine()}")
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
