"""What the user sees while the engine works: progress bars on a terminal, periodic plain lines otherwise.

Everything goes to stderr, so `--json` output on stdout stays one clean JSON object.

    log = Reporter()
    with log.task("eval", total=num_images) as bar:
        for images, labels in loader:
            ...
            bar.advance(len(images))
    log.info(f"took {duration(bar.seconds)}")

Every task shows its count, throughput, elapsed time and a labelled ETA; a task's `status` (training:
epoch, loss, lr) may be a callable, called only when the display is drawn. So the figures shown are
always those of the item just done, yet a GPU tensor is read (a device sync) a few times a second at
most, not at every step. Without a terminal a task prints a line after a second, then at most
every `interval` seconds, each with the figures of that moment, and one at the end (a task done within
a second prints just that one).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

from vitcli.formats import duration, printable

PLAIN_INTERVAL = 5.0  # seconds between lines without a terminal
_FIRST_LINE_AFTER = 1.0  # without a terminal, a task done within a second prints only its last line
_DRAW_INTERVAL = 0.25  # seconds between status updates on a terminal
_RATE_WINDOW = 30.0  # throughput and ETA follow the last 30 s, so a slow first step fades out

Status = str | Callable[[], str]


class Task:
    """One unit of work with a known (or unknown: None) number of items; made by `Reporter.task`."""

    def __init__(self, reporter: Reporter, label: str, total: int | None, done: int, per_item: float,
                 rate_unit: str | None, elapsed: float):
        self.reporter, self.label, self.total = reporter, label, total
        self.completed = done
        self.per_item, self.rate_unit = per_item, rate_unit
        self._clock = reporter.clock
        self._prior = elapsed  # seconds spent before this process (a resumed run)
        self._start = self._clock()
        self._end: float | None = None
        self._samples: deque[tuple[float, int]] = deque([(self._start, done)])
        self._rate: float | None = None  # items per second, recomputed in the main thread only
        self._status: Status = ""
        self._status_text = ""
        self._last_draw = -float("inf")
        self._last_update = self._start
        self._rich_id = None

    # -- what callers use ------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """Seconds spent on the task so far (including those of earlier processes), or in all once closed."""
        return self._prior + (self._end if self._end is not None else self._clock()) - self._start

    def advance(self, n: int = 1, status: Status | None = None) -> None:
        """`n` more items done."""
        self.update(self.completed + n, status)

    def update(self, completed: int, status: Status | None = None) -> None:
        """`completed` items done in all; `status` (text or a callable giving it) describes the latest."""
        now = self._clock()
        first = self.completed == self._samples[0][1]
        self.completed = completed
        self._last_update = now
        if status is not None:
            self._status = status
        self._samples.append((now, completed))
        while len(self._samples) > 2 and now - self._samples[1][0] > _RATE_WINDOW:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        if now > t0 and completed > c0:
            self._rate = (completed - c0) / (now - t0)
        finished = self.total is not None and completed >= self.total
        self.reporter._on_update(self, now, force=first or finished, finished=finished)

    def close(self) -> None:
        """End the task: the last figures are drawn (or printed), the clock stops."""
        if self._end is None:
            self._end = self._clock()
            self.reporter._on_close(self)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rendering -------------------------------------------------------------------------------
    def _refresh_status(self) -> None:
        status = self._status() if callable(self._status) else self._status
        self._status_text = status or ""

    def _eta(self) -> float | None:
        if self.total is None or not self._rate:
            return None
        left = (self.total - self.completed) / self._rate
        return max(0.0, left - (self._clock() - self._last_update))

    def tail(self) -> str:
        """Status, throughput, elapsed time and ETA: what follows the count."""
        parts = [self._status_text] if self._status_text else []
        if self._rate and self.rate_unit:
            rate = self._rate * self.per_item
            parts.append(f"{rate:.1f} {self.rate_unit}" if rate < 100 else f"{rate:.0f} {self.rate_unit}")
        parts.append(f"elapsed {duration(self.seconds)}")
        eta = self._eta()
        if self._end is None and self.total is not None and self.completed < self.total:
            parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA -")
        return " ".join(parts)

    def figures(self) -> dict:
        """The state as numbers, for JSON log lines."""
        rate = self._rate * self.per_item if self._rate else None
        eta = self._eta() if self._end is None else 0.0
        return {"event": "progress", "task": self.label, "done": self.completed, "total": self.total,
                "rate": rate, "unit": self.rate_unit, "elapsed_s": round(self.seconds, 3),
                "eta_s": None if eta is None else round(eta, 3), "status": self._status_text}

    def line(self) -> str:
        """The whole state as one plain line."""
        if self.total is None:
            count = f"{self.completed:,}"
        else:
            count = f"{self.completed:,}/{self.total:,} ({100 * self.completed / max(self.total, 1):.0f}%)"
        return f"{self.label} {count} {self.tail()}"


class _TailColumn(ProgressColumn):
    """Renders `Task.tail()`; elapsed time and ETA tick between updates."""

    def render(self, task) -> Text:
        return Text(task.fields["owner"].tail())


class Reporter:
    """Log lines and progress of the engine's work; silent on non-main processes.

    `quiet`: nothing at all (the command still prints its result and its errors). `fmt="json"`: every
    line is one JSON object on stderr (`level`, `message`, `time`; progress lines add `event: progress`
    and the figures as numbers), for cluster log collectors; never a progress bar. `json_summary`: the
    run summary as one JSON object even in text mode (a command's `--json`).
    """

    def __init__(self, enabled: bool = True, console: Console | None = None, interval: float = PLAIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, *, quiet: bool = False, fmt: str = "text",
                 json_summary: bool = False):
        self.enabled = enabled and not quiet
        self.console = console or Console(stderr=True, highlight=False)
        self.interval = interval
        self.clock = clock
        self.fmt = fmt
        self.json_summary = json_summary or fmt == "json"
        self._progress: Progress | None = None
        self._open: list[Task] = []

    def info(self, message: str, **fields) -> None:
        """One log line (`fields`: the same facts as numbers, in JSON lines only)."""
        if self.enabled:
            self._say("info", message, fields)

    def warn(self, message: str) -> None:
        """A warning line (yellow on a terminal)."""
        if self.enabled:
            self._say("warning", message, {})

    def summary(self, title: str, facts: dict[str, str], numbers: dict[str, object] | None = None) -> None:
        """What a run is about to do, in one block (`title` then a line per fact), or one JSON object with
        the facts as text and `numbers` as numbers."""
        if not self.enabled:
            return
        if self.json_summary:
            self._json({"level": "info", "event": "summary", "message": title, **(numbers or {}), "text": facts})
            return
        width = max(map(len, facts), default=0)
        lines = [title, *(f"  {name.replace('_', ' '):<{width}}  {value}" for name, value in facts.items())]
        self.console.print(printable("\n".join(lines), lines=True), markup=False, soft_wrap=True)

    def _say(self, level: str, message: str, fields: dict) -> None:
        if self.fmt == "json":
            self._json({"level": level, "message": message, **fields})
        elif level == "warning":
            self.console.print(f"warning: {printable(message)}", style="yellow", markup=False, soft_wrap=True)
        else:
            self.console.print(printable(message, lines=True), markup=False, soft_wrap=True)

    def _json(self, record: dict) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        self.console.file.write(json.dumps(record, default=str) + "\n")
        self.console.file.flush()

    def task(self, label: str, total: int | None, *, done: int = 0, per_item: float = 1.0,
             rate_unit: str | None = "img/s", elapsed: float = 0.0, status: Status = "") -> Task:
        """Start showing progress of `total` items (None: unknown), `done` of them already done.

        Throughput is items/s times `per_item` in `rate_unit` (training: steps x global batch = img/s);
        `elapsed` adds the seconds of earlier processes (a resumed run). A bar appears at once, also
        when resuming; a task started inside another (an evaluation during training) is drawn below it
        and removed when it ends.
        """
        task = Task(self, label, total, done, per_item, rate_unit, elapsed)
        task._status = status
        task._refresh_status()
        self._open.append(task)
        if self.enabled and self.console.is_terminal and self.fmt != "json":
            if self._progress is None:
                self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
                                          MofNCompleteColumn(), _TailColumn(), console=self.console,
                                          refresh_per_second=4)
                self._progress.start()
            task._rich_id = self._progress.add_task(label, total=total, completed=done, owner=task)
        else:
            task._last_draw = task._start - self.interval + min(_FIRST_LINE_AFTER, self.interval)
        return task

    def _on_update(self, task: Task, now: float, force: bool, finished: bool) -> None:
        if not self.enabled:
            return
        if task._rich_id is not None:
            if force or now - task._last_draw >= _DRAW_INTERVAL:
                task._last_draw = now
                task._refresh_status()
            self._progress.update(task._rich_id, completed=task.completed)
        elif (force and finished) or now - task._last_draw >= self.interval:
            task._last_draw = now
            task._refresh_status()
            self.info(task.line(), **task.figures())

    def _on_close(self, task: Task) -> None:
        if task in self._open:
            self._open.remove(task)
        if not self.enabled:
            return
        printed_last = task._last_update <= task._last_draw
        if not printed_last:
            task._refresh_status()
        if task._rich_id is None:
            if not printed_last:  # the final figures, unless the last line already showed them
                self.info(task.line(), **task.figures())
            return
        if self._open:  # a task inside another: make room for the outer one again
            self._progress.remove_task(task._rich_id)
        else:
            self._progress.update(task._rich_id, completed=task.completed)
            self._progress.stop()
            self._progress = None

    def stop(self) -> None:
        """Close every open task (e.g. when training stops on an error)."""
        for task in list(reversed(self._open)):
            task.close()
