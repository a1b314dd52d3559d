"""systemd units the renderers share: the timer that runs a oneshot service on a schedule."""

from __future__ import annotations

from collections.abc import Sequence


def timer_unit(description: str, schedule: Sequence[str], unit: str | None = None) -> str:
    """A timer enabled for timers.target; `unit` when it starts a service of another name."""
    return "\n".join(
        ["[Unit]", f"Description={description}", "", "[Timer]", *([f"Unit={unit}"] if unit else []), *schedule, "",
         "[Install]", "WantedBy=timers.target", ""]
    )
