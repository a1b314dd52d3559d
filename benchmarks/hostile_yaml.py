"""How fast, and in how much memory, the config loader refuses hostile files.

For each case: the median time of `config_files.read_config` (the loader every config file goes
through) and the peak memory Python allocated meanwhile (tracemalloc), with the first line of
its verdict. The billion-laughs file expands to 10^9 values; a loader that expands it runs for
minutes and exhausts memory, this one refuses it while composing.

    .venv/bin/python benchmarks/hostile_yaml.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unde_infra.config_files import MAX_BYTES, read_config  # noqa: E402
from unde_infra.errors import Problems  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cases() -> dict[str, bytes]:
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    wide = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    wide += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]
    topology = (ROOT / "config" / "topology.yaml").read_bytes()
    big = b"servers:\n" + b"".join(b"  s%d: {site: local, task: mood, ip: 10.2.0.1}\n" % i for i in range(21000))
    return {
        "committed topology": topology,
        "billion laughs (10^9 values)": "\n".join(laughs).encode(),
        "alias bomb under the alias cap (10^5)": "\n".join(wide).encode(),
        "nesting 5,000 deep": b"a: " + b"[" * 5000 + b"\n",
        f"{len(big) // 1024} KiB of servers (under the cap)": big[:MAX_BYTES],
        "1 MiB + 1 byte": b"# " + b"x" * MAX_BYTES + b"\n",
        "not UTF-8": topology.replace(b"scraper}", b"scr\xe4per}", 1),
    }


def measure(content: bytes, repeat: int) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(content)
        times = []
        verdict = ""
        for _ in range(repeat):
            problems = Problems()
            started = time.perf_counter()
            read_config(path, problems)
            times.append(time.perf_counter() - started)
            verdict = str(problems.items[0]) if problems.items else "accepted"
        tracemalloc.start()
        read_config(path, Problems())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return statistics.median(times), peak / 2**20, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'case':<40} {'median ms':>10} {'peak MiB':>9}  verdict")
    for name, content in cases().items():
        seconds, peak, verdict = measure(content, args.repeat)
        print(f"{name:<40} {seconds * 1000:>10.1f} {peak:>9.1f}  {verdict[:90]}")


if __name__ == "__main__":
    main()
