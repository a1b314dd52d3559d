"""The benchmark's floor registers exactly what the preview registered."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from unde_infra.offline import OfflineMocks, RecordingMonitor, StackRun

FLOOR = Path(__file__).resolve().parents[2] / "benchmarks" / "floor.py"


def test_the_floor_registers_the_resources_of_the_preview(default_preview_runs) -> None:
    floor = runpy.run_path(str(FLOOR), run_name="floor")
    for stack, result in default_preview_runs.items():
        # What the preview writes, read back as the floor reads it.
        entries = json.loads(json.dumps(result.run.resources(), default=str))
        outputs = json.loads(json.dumps(result.run.masked_outputs(), default=str))
        monitor = RecordingMonitor(OfflineMocks({}, {}))
        assert floor["run_stack"](stack, entries, outputs, monitor) == len(entries)
        registered = StackRun(stack, monitor.records, monitor.stack_outputs, {}, []).resources()
        # The same count, names, types, parents, inputs, dependencies, options and ids.
        assert registered == entries
        assert json.loads(json.dumps(StackRun(stack, [], monitor.stack_outputs, {}, []).masked_outputs())) == outputs
