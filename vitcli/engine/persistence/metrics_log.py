"""`metrics.jsonl`: one JSON object per logged step and per evaluation, appended and fsynced.

The same rows go to TensorBoard event files in the same folder (`tensorboard.py`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
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

        A line torn by a kill mid-write is not JSON; it is dropped too, as is any other damaged line (junk,
        nesting too deep to parse, a line longer than MAX_LINE). `rerun_eval`: the evaluation at `step`
        will run again (a finished run resumed, or one killed during its final evaluation or the export),
        so the row it left is dropped and the log holds each step's evaluation once. The file is read a
        line at a time, twice (what to keep, then the kept lines streamed into the rewrite), so a log of
        any size costs one line of memory.
        """
        if self.path is None or not files.check_regular(self.path, follow=False):
            if self.tensorboard is not None:
                self.tensorboard.purge_after(step)
            return

        def kept() -> Iterator[tuple[bytes, dict]]:
            seen = set()
            for line in _lines(self.path):
                parsed = _json(line)
                row = _row(parsed)
                if row is None or row[0] > step or (rerun_eval and row[0] == step and row[1] == "eval"):
                    continue
                if row in seen:  # a step logged twice by an older vit: keep the first
                    continue
                seen.add(row)
                yield line, parsed

        again, dropped = [], sum(1 for line in _lines(self.path) if line is None or line.strip())
        for _, parsed in kept():
            dropped -= 1
            if rerun_eval and _row(parsed) == (step, "train"):
                again.append(parsed)
        if self.tensorboard is not None:
            # A rerun evaluation at `step` is purged with it; the kept training row of that step is
            # written again into the new event file, so TensorBoard still shows it, once.
            self.tensorboard.purge_after(step - 1 if again else step, replay=again)
        if dropped:
            files.atomic_write(self.path, lambda f: f.writelines(line.rstrip(b"\r\n") + b"\n" for line, _ in kept()))


log = logging.getLogger(__name__)
MAX_LINE = 1 << 16  # bytes of one row; vit writes a few hundred
MAX_BYTES = 1 << 28  # 256 MiB read at most: a million logged steps are about 200 MB
MAX_ROWS = 200_000  # rows read at most (each parsed, then a dict): 256 MiB of tiny rows are ten million, 5 GB
_MAX_STEP = 1 << 53  # steps beyond this are not whole numbers as floats (matplotlib, TensorBoard)
MAX_VALUE = 1e300  # no loss, learning rate or accuracy is larger; near float max a plot's axis overflows


def _lines(path: Path, limit: int | None = None, cut=None) -> Iterator[bytes | None]:
    """The lines of a metrics.jsonl read bounded: each of at most MAX_LINE bytes (None stands for a longer
    one, skipped without being held), at most `limit` bytes in all (`cut()` is called when more is left)."""
    seen = 0
    with files.open_read(Path(path), follow=False) as handle:
        while limit is None or seen < limit:
            line = handle.readline(MAX_LINE + 1)
            if not line:
                return
            seen += len(line)
            if len(line) > MAX_LINE:  # skip to the end of this overlong line
                while line and not line.endswith(b"\n") and (limit is None or seen < limit):
                    line = handle.readline(MAX_LINE)
                    seen += len(line)
                yield None
                continue
            yield line
        if handle.read(1):
            cut()


def read_rows(path: Path) -> tuple[list[dict], int]:
    """The rows of a metrics.jsonl, in order, and the number of lines left out as damaged.

    Read bounded (`_lines`, and at most MAX_ROWS rows). A row is a JSON object whose step is a whole number and whose numbers are
    floats within what a plot can draw (an integer too large for a float, or a number past MAX_VALUE, is
    damage, not a metric); anything else (a line torn by a kill, junk) is skipped and counted, never an error.
    """
    rows, bad = [], 0

    def cut() -> None:
        log.warning(f"{path}: only the first {MAX_BYTES >> 20} MiB were read ({len(rows):,} rows); the rest is left out")

    for line in _lines(path, MAX_BYTES, cut):
        row = _metrics_row(_json(line))
        if row is not None and len(rows) == MAX_ROWS:
            log.warning(f"{path}: only the first {MAX_ROWS:,} rows were read; the rest is left out")
            break
        if row is not None:
            rows.append(row)
        elif line is None or line.strip():
            bad += 1
    return rows, bad


def _json(line: bytes | None):
    """A line parsed as JSON, or None (not JSON, nested too deep, an overlong line)."""
    if line is None:
        return None
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _metrics_row(row) -> dict | None:
    """A metrics row with its numbers as floats, or None when the parsed line is not one."""
    if _row(row) is None or not 0 <= row["step"] < _MAX_STEP:
        return None
    try:
        row = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" else v
               for k, v in row.items()}
    except OverflowError:
        return None
    finite = [v for k, v in row.items() if k != "step" and isinstance(v, float) and math.isfinite(v)]
    return row if all(abs(v) <= MAX_VALUE for v in finite) else None


def _row(row) -> tuple[int, str] | None:
    """(step, "eval" or "train") of a parsed metrics row, or None for anything that is not such a JSON object."""
    if not isinstance(row, dict) or type(row.get("step")) is not int:
        return None
    return row["step"], "eval" if any(str(k).startswith("eval/") for k in row) else "train"
