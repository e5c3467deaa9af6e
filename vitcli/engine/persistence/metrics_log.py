"""`metrics.jsonl`: one JSON object per logged step and per evaluation, appended and fsynced.

The same rows go to TensorBoard event files in the same folder (`tensorboard.py`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vitcli import files
from vitcli.engine.persistence.tensorboard import TensorBoardLog
from vitcli.engine.persistence.trackers import open_trackers


class MetricsLog:
    """Append-only `metrics.jsonl`; a crash or a full disk loses at most the line being written, whole."""

    def __init__(self, path: Path | None, report_to=("tensorboard",), *, name: str = "vit",
                 params: dict | None = None):
        """`report_to`: the trackers of `run.report_to`; `params` (the resolved recipe) become their
        hyperparameters."""
        self.path = path
        main = path is not None
        self.tensorboard = TensorBoardLog(Path(path).parent, params) if main and "tensorboard" in report_to else None
        self.trackers = open_trackers(report_to, Path(path).parent, name, params or {}) if main else []

    def write(self, row: dict) -> None:
        """Append one row (no-op on non-main processes, which get path=None)."""
        if self.path is None:
            return
        files.append_line(self.path, json.dumps(row))
        if self.tensorboard is not None:
            try:
                self.tensorboard.write(row)
            except OSError as exc:
                raise files.write_error(exc, self.path.parent) from None
        for tracker in self.trackers:
            tracker.write(row)

    def close(self) -> None:
        """Close the TensorBoard event file and the trackers' runs (metrics.jsonl is closed after every row)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []

    def truncate_after(self, step: int, *, rerun_eval: bool = False) -> None:
        """On resume, drop rows logged after the checkpoint so the log matches an uninterrupted run.

        A line torn by a kill mid-write is not JSON; it is dropped too. `rerun_eval`: the evaluation at
        `step` will run again (a finished run resumed, or one killed during its final evaluation or the
        export), so the row it left is dropped and the log holds each step's evaluation once.
        """
        if self.path is None or not files.check_regular(self.path, follow=False):
            if self.tensorboard is not None:
                self.tensorboard.purge_after(step)
            return
        lines = files.read_bytes(self.path).decode("utf-8", "replace").splitlines()
        kept, seen = [], set()
        for line in lines:
            row = _row(line)
            if row is None or row[0] > step or (rerun_eval and row[0] == step and row[1] == "eval"):
                continue
            if row in seen:  # a step logged twice by an older vit: keep the first
                continue
            seen.add(row)
            kept.append(line)
        if self.tensorboard is not None:
            # A rerun evaluation at `step` is purged with it; the kept training row of that step is
            # written again into the new event file, so TensorBoard still shows it, once.
            again = [json.loads(line) for line in kept if rerun_eval and _row(line) == (step, "train")]
            self.tensorboard.purge_after(step - 1 if again else step, replay=again)
        if kept != lines:
            files.atomic_write(self.path, lambda f: f.write("".join(r + "\n" for r in kept).encode()))


log = logging.getLogger(__name__)
MAX_LINE = 1 << 16  # bytes of one row; vit writes a few hundred
MAX_BYTES = 1 << 28  # 256 MiB read at most: a million logged steps are about 200 MB
_MAX_STEP = 1 << 53  # steps beyond this are not whole numbers as floats (matplotlib, TensorBoard)


def read_rows(path: Path) -> tuple[list[dict], int]:
    """The rows of a metrics.jsonl, in order, and the number of lines left out as damaged.

    Read bounded: at most MAX_BYTES, a line of at most MAX_LINE. A row is a JSON object whose step is a
    whole number and whose numbers are floats (an integer too large for one is damage, not a metric);
    anything else (a line torn by a kill, junk) is skipped and counted, never an error.
    """
    rows, bad, seen = [], 0, 0
    with files.open_read(Path(path), follow=False) as handle:
        while seen < MAX_BYTES:
            line = handle.readline(MAX_LINE + 1)
            if not line:
                break
            seen += len(line)
            if len(line) > MAX_LINE:  # skip to the end of this overlong line without holding it
                while line and not line.endswith(b"\n") and seen < MAX_BYTES:
                    line = handle.readline(MAX_LINE)
                    seen += len(line)
                bad += 1
                continue
            row = _parsed(line)
            if row is None:
                bad += bool(line.strip())
            else:
                rows.append(row)
        if handle.read(1):
            log.warning(f"{path}: only the first {MAX_BYTES >> 20} MiB were read ({len(rows):,} rows); the rest "
                        "is left out")
    return rows, bad


def _parsed(line: bytes) -> dict | None:
    """A metrics row with its numbers as floats, or None when the line is not one."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict) or type(row.get("step")) is not int or not 0 <= row["step"] < _MAX_STEP:
        return None
    try:
        return {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" else v
                for k, v in row.items()}
    except OverflowError:
        return None


def _row(line: str) -> tuple[int, str] | None:
    """(step, "eval" or "train") of a metrics row, or None for a line that is not such a JSON object."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("step"), int):
        return None
    return row["step"], "eval" if any(str(k).startswith("eval/") for k in row) else "train"
