"""TensorBoard event files beside metrics.jsonl, so `tensorboard --logdir runs` shows every run.

Each metrics row becomes scalars at its step: training rows under `train/` (loss, lr, grad_norm, img_s,
epoch), evaluation rows under their own `eval/...` names. The event file opens lazily on the first row,
so a run that never logs leaves no event file. A resumed session starts a new event file whose first
event purges the steps after the checkpoint (TensorBoard's `purge_step`): the steps the killed session
logged past its last checkpoint are hidden, as they are dropped from metrics.jsonl, and are not shown twice.

The events are written here, in the training process, not by `SummaryWriter`: its writer opens a file
of a predictable name (time, host, pid) with a plain `open(..., "wb")`, which a link planted there would
redirect to any file the user can write, and it writes from a thread of its own, where a full disk is a
traceback instead of the run's one-line error. Here the file is created through the safe-file layer
(new, never followed), its name holds a random part, and every row is written and flushed in place.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from pathlib import Path

from vitcli import files
from vitcli.engine.persistence.trackers import flat, numbers


class TensorBoardLog:
    """Scalars of metrics rows (and the recipe as hparams), written into an event file in `folder`."""

    def __init__(self, folder: Path, params: dict | None = None):
        self.folder = Path(folder)
        self.params = params  # the resolved recipe: written once as hparams (TensorBoard's HPARAMS tab)
        self.purge_step: int | None = None
        self._replay: list[dict] = []
        self._writer = None

    def purge_after(self, step: int, replay: list[dict] | None = None) -> None:
        """Hide events logged after `step` by an earlier session (call before the first `write`);
        `replay` rows are written first into the new event file (rows at the purged steps that stay)."""
        self.purge_step = step + 1
        self._replay = list(replay or [])

    def write(self, row: dict) -> None:
        """Add each finite number of `row` at `row["step"]`, then flush (a crash loses nothing written);
        an OSError (a full disk) is raised here, to the caller."""
        writer = self._open()
        self._scalars(writer, row)
        writer.flush()

    def _scalars(self, writer: "_EventFile", row: dict) -> None:
        writer.scalars(int(row.get("step", 0)), list(numbers(row).items()))  # counts (eval/images) are not metrics

    def _hparams(self, writer: "_EventFile") -> None:
        """The recipe as hyperparameters, in this event file (not a folder of its own as add_hparams makes)."""
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat(self.params).items()}
        for summary in hparams(values, {"eval/top1": 0.0, "train/loss": 0.0}):
            writer.summary(summary)

    def images(self, step: int, pngs: dict[str, bytes]) -> None:
        """Each PNG of `pngs` (tag -> encoded image) as an image at `step` (TensorBoard's IMAGES tab), then flush."""
        writer = self._open()
        for tag, png in pngs.items():
            writer.image(tag, step, png)
        writer.flush()

    def close(self) -> None:
        """Flush and close the event file (a later `write` opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open(self) -> "_EventFile":
        if self._writer is None:
            self._writer = _EventFile(self.folder, self.purge_step)
            if self.params:
                self._hparams(self._writer)
            for row in self._replay:
                self._scalars(self._writer, row)
            self._replay = []
        return self._writer


class _EventFile:
    """One TensorBoard event file (TFRecord framing of `Event` protos), created new and written in place."""

    def __init__(self, folder: Path, purge_step: int | None):
        # Imported here: tensorboard's protos cost about a second to import, which commands that never
        # train should not pay.
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = Event, Summary
        # TensorBoard reads a folder's event files in name order: seconds and nanoseconds first, so a session
        # resumed within the same second (a finished run's final evaluation rerun) still sorts after the last.
        now = time.time_ns()
        name = (f"events.out.tfevents.{now // 10**9:010d}.{now % 10**9:09d}.{socket.gethostname()}."
                f"{secrets.token_hex(6)}")
        self._records = RecordWriter(files.create_new(Path(folder) / name))
        self._add(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:  # what SummaryWriter writes for purge_step: TensorBoard hides later steps
            self._add(Event(step=purge_step, file_version="brain.Event:2"))
            self._add(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def _add(self, event) -> None:
        self._records.write(event.SerializeToString())

    def summary(self, summary, step: int = 0) -> None:
        """Any `Summary` proto (the hparams plugin's) as one event."""
        self._add(self._event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, step: int, values: list[tuple[str, float]]) -> None:
        """One event holding every (tag, value) at `step`, as simple values (what add_scalar writes)."""
        if values:
            summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=v) for tag, v in values])
            self._add(self._event(wall_time=time.time(), step=step, summary=summary))

    def image(self, tag: str, step: int, png: bytes) -> None:
        """One encoded PNG as an image summary (what add_image writes, without decoding it again)."""
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk, right after the 8-byte signature
        colours = {0: 1, 2: 3, 4: 2, 6: 4}.get(png[25], 3)  # PNG colour type -> channels (matplotlib: RGBA)
        image = self._summary.Image(height=height, width=width, colorspace=colours, encoded_image_string=png)
        self.summary(self._summary(value=[self._summary.Value(tag=tag, image=image)]), step)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        try:
            self._records.close()
        except OSError:  # every row was flushed as written: a failure here was already reported there
            pass
