"""`metrics.jsonl`: one JSON object per logged step and per evaluation, appended and fsynced."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vitcli.files import atomic_write, write_error


class MetricsLog:
    """Append-only `metrics.jsonl`; each line is flushed so a crash loses at most the line being written."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, row: dict) -> None:
        """Append one row (no-op on non-main processes, which get path=None)."""
        if self.path is None:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise write_error(exc, self.path) from None

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the log matches an uninterrupted run.

        A line torn by a kill mid-write is not JSON; it is dropped too.
        """
        if self.path is None or not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if (s := _row_step(r)) is not None and s <= step]
        atomic_write(self.path, lambda f: f.write("".join(r + "\n" for r in kept).encode()))


def _row_step(line: str) -> int | None:
    """The step of a metrics row, or None for a line that is not a JSON object."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return int(row.get("step", 0)) if isinstance(row, dict) else None
