"""The progress bar of ``engine.batch`` on stderr: scenes done / failed / total, scenes per
second, ETA. Off with ``--quiet``."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["BatchProgress"]


class BatchProgress:
    """Counts scenes as their records arrive (``status`` done or failed) against ``total``; skipped
    scenes (complete from an earlier run) are named in the description, not counted."""

    def __init__(self, total: int, skipped: int, quiet: bool):
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[done]} done, {task.fields[failed]} failed / {task.total:.0f}"),
            TextColumn("{task.fields[rate]} scenes/s"), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=quiet)
        label = f"segmenting ({skipped} already done)" if skipped else "segmenting"
        self._task = self._bar.add_task(label, total=total, done=0, failed=0, rate="-")
        self._started = time.perf_counter()
        self.done = self.failed = 0

    def __enter__(self) -> BatchProgress:
        self._bar.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self._bar.stop()

    def add(self, record: dict) -> None:
        """Count one finished scene."""
        if record["status"] == "done":
            self.done += 1
        else:
            self.failed += 1
        rate = (self.done + self.failed) / max(time.perf_counter() - self._started, 1e-9)
        self._bar.update(self._task, advance=1, done=self.done, failed=self.failed, rate=f"{rate:.2f}")
