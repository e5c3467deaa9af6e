"""What the user sees while the engine works: a Rich progress bar on a terminal, plain lines otherwise.

Everything goes to stderr, so `--json` output on stdout stays one clean JSON object.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Log lines and training progress; silent on non-main processes."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True, highlight=False)
        self._progress: Progress | None = None
        self._task = None
        self._last_plain = 0.0
        self._status = ""

    def info(self, message: str) -> None:
        """One log line."""
        if self.enabled:
            self.console.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning line (yellow on a terminal)."""
        if self.enabled:
            self.console.print(f"warning: {message}", style="yellow", markup=False, soft_wrap=True)

    def start(self, total: int, done: int, label: str = "train") -> None:
        """Begin a progress display for `total` steps of which `done` are already done."""
        if not self.enabled or not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self._task = self._progress.add_task(label, total=total, completed=done, status="")
        self._progress.start()

    def step(self, step: int, total: int, status: str, force_line: bool = False) -> None:
        """Advance the bar to `step`; without a terminal, print a line at most every few seconds."""
        if not self.enabled:
            return
        status = self._status = status or self._status  # steps between log points keep the last figures
        if self._progress is not None:
            self._progress.update(self._task, completed=step, status=status)
            return
        now = time.monotonic()
        if force_line or now - self._last_plain > 5.0 or step == total:
            self._last_plain = now
            self.info(f"step {step}/{total} {status}")

    def stop(self) -> None:
        """Close the progress display."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

