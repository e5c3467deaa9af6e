"""TensorBoard event files beside metrics.jsonl, so `tensorboard --logdir runs` shows every run.

Each metrics row becomes scalars at its step: training rows under `train/` (loss, lr, grad_norm, img_s,
epoch), evaluation rows under their own `eval/...` names. The writer opens lazily on the first row, so
a run that never logs leaves no event file. A resumed session starts a new event file whose first event
purges the steps after the checkpoint (TensorBoard's `purge_step`): the steps the killed session logged
past its last checkpoint are hidden, as they are dropped from metrics.jsonl, and are not shown twice.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.engine.persistence.trackers import flat, numbers


class TensorBoardLog:
    """Scalars of metrics rows, written with `torch.utils.tensorboard.SummaryWriter` into `folder`."""

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
        """Add each finite number of `row` at `row["step"]`, then flush (a crash loses nothing written)."""
        writer = self._open()
        self._scalars(writer, row)
        writer.flush()

    def _scalars(self, writer, row: dict) -> None:
        step = int(row.get("step", 0))
        for key, value in numbers(row).items():  # counts (eval/images) are not metrics
            writer.add_scalar(key, value, global_step=step)

    def _hparams(self, writer) -> None:
        """The recipe as hyperparameters, in this event file (not a folder of its own as add_hparams makes)."""
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat(self.params).items()}
        for summary in hparams(values, {"eval/top1": 0.0, "train/loss": 0.0}):
            writer.file_writer.add_summary(summary)

    def close(self) -> None:
        """Flush and close the event file (a later `write` opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open(self):
        if self._writer is None:
            # Imported here: tensorboard costs about a second to import, which commands that never
            # train should not pay.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder), purge_step=self.purge_step)
            if self.params:
                self._hparams(self._writer)
            for row in self._replay:
                self._scalars(self._writer, row)
            self._replay = []
        return self._writer
