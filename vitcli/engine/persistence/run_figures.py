"""The figures of `vit inspect` and `vit eval --out`, added to the experiment trackers of the run they show.

As Hugging Face Trainer's and Lightning's loggers do, a figure of a vit run goes where the run's metrics
went (`run.report_to` in the run's recipe.json), at the step of the model it shows:
- tensorboard: images in a new event file of the run directory, written by `tensorboard.py` (created new
  through the safe-file layer, never followed), so `tensorboard --logdir runs` shows them in IMAGES;
- mlflow: the figure files as written (PNG, PDF or SVG) as artifacts of the MLflow run the training made
  (its id is in `<run>/.trackers.json`), under `inspect/` or `eval/`;
- wandb: images in the W&B run the training made, resumed by its id (offline unless WANDB_MODE says).
TensorBoard and W&B show a PNG of each figure, whatever `--format` wrote.

A checkpoint outside a vit run directory (an export, a file of another framework) or a run whose recipe
says `report_to: []` logs nothing. The run's lock is held while logging (one writer at a time). The figures
are already in --out when they are logged, so a tracker that cannot take them (its package missing, no run
of it recorded, the run being trained by another process) is one warning line, and the command succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vitcli import files
from vitcli.engine.persistence import trackers
from vitcli.engine.persistence.metrics_log import read_rows
from vitcli.engine.persistence.rundir import finished_step, holds_run
from vitcli.engine.persistence.tensorboard import TensorBoardLog
from vitcli.errors import VitError, first_line
from vitcli.formats import plural
from vitcli.recipe.config import RunCfg
from vitcli.recipe.schema import from_dict
from vitcli.weights.reader import checkpoint_step


@dataclass
class RunFigures:
    """Figures to be logged to a run's trackers: the run, its trackers and the step of the model shown."""

    run_dir: Path
    run: RunCfg  # the run's recorded `run` section: its name and `report_to`
    checkpoint: Path  # the model the figures show (its step is theirs)
    pngs: dict[str, bytes] = field(default_factory=dict)  # figure name -> PNG (figures.style(keep=...) fills it)
    step: int = 0  # of the model shown, found when the figures are sent

    def send(self, group: str, written: dict[str, str], warn: Callable[[str], object]) -> dict[str, str]:
        """Log the figures `written` (name -> file) under `group` ("inspect", "eval"); returns, per tracker
        that took them, where they went. Whatever cannot be logged is one `warn` line."""
        paths = {name: Path(path) for name, path in written.items()}
        if not paths:
            return {}
        try:
            with files.RunLock(self.run_dir, who=""):  # refused while another vit process trains the run
                self.step = _step(self.run_dir, self.checkpoint)
                return self._send(group, paths, warn)
        except (VitError, OSError) as exc:
            warn(f"the figures are not logged to the run's trackers: {first_line(exc)}")
            return {}

    def _send(self, group: str, paths: dict[str, Path], warn: Callable[[str], object]) -> dict[str, str]:
        where: dict[str, str] = {}
        pngs = {name: self.pngs[name] for name in paths if name in self.pngs}
        if "tensorboard" in self.run.report_to and pngs:
            board = TensorBoardLog(self.run_dir)
            try:
                board.images(self.step, {f"{group}/{name}": png for name, png in pngs.items()})
            finally:
                board.close()
            where["tensorboard"] = f"{self.run_dir} ({plural(len(pngs), 'image')} at step {self.step})"
        state = trackers.recorded(self.run_dir)
        for name in (n for n in self.run.report_to if n != "tensorboard"):
            reason = _unavailable(name, state)
            if reason is None:
                reason = self._other(name, group, paths, pngs, dict(state))
            if reason is None:
                where[name] = f"run {state[name]} ({plural(len(paths), 'figure')})"
            else:
                warn(f"the figures are not logged to {name}: {reason}")
        return where

    def _other(self, name: str, group: str, paths: dict[str, Path], pngs: dict[str, bytes], state: dict) -> str | None:
        """Log to the MLflow or W&B run of the training (its id in `state`); None, or why it failed."""
        try:
            tracker = trackers.TRACKERS[name](self.run_dir, self.run.name or self.run_dir.name, {}, state)
            try:
                tracker.figures(group, self.step, paths, pngs)
            finally:
                if name == "wandb":  # ends this resumed session of the W&B run; the MLflow run stays as it ended
                    tracker.close()
        except Exception as exc:  # noqa: BLE001 - the library's own error (a run not in its store, a full disk):
            return first_line(exc)  # the figures are in --out already, the command's work is done
        return None


def _unavailable(name: str, state: dict) -> str | None:
    """Why tracker `name` cannot take the figures (its package missing, no run of it recorded), or None."""
    try:
        trackers.require(name)
    except VitError as exc:
        return str(exc).removeprefix("run.report_to: ")
    if not isinstance(state.get(name), str):
        return f"the run recorded no {name} run in {trackers.STATE_FILE} (it was trained without it)"
    return None


def for_checkpoint(checkpoint: Path) -> RunFigures | None:
    """The trackers that the figures of `checkpoint` go to: those of the vit run directory holding it (its
    model, `checkpoints/step-*.pt` or `best/`); None when it is in no run or the run reports to no tracker.
    Called before anything is drawn (the PNGs for the trackers are kept as the figures are saved)."""
    checkpoint = Path(checkpoint)
    run = run_of(checkpoint)
    recorded = _recorded_run(run) if run is not None else None
    if recorded is None or not recorded.report_to:
        return None
    return RunFigures(run, recorded, checkpoint)


def run_of(checkpoint: Path) -> Path | None:
    """The vit run directory `checkpoint` belongs to, or None."""
    folder = Path(checkpoint).parent
    if _is_run(folder):
        return folder
    if folder.name in ("checkpoints", "best") and _is_run(folder.parent):
        return folder.parent
    return None


def _is_run(folder: Path) -> bool:
    return holds_run(folder) and files.check_regular(folder / "metrics.jsonl", follow=False)


def _recorded_run(run: Path) -> RunCfg | None:
    """The `run` section of the run's recorded recipe (an older run without `report_to` reports to
    TensorBoard, the default), or None when recipe.json cannot be read as one."""
    path = run / "recipe.json"
    try:
        data = json.loads(files.read_bytes(path, limit=1 << 22))
        return from_dict(data.get("run") or {}, str(path), RunCfg)
    except (OSError, ValueError, AttributeError, RecursionError, VitError):  # damaged: not a run to log to
        return None


def _step(run: Path, checkpoint: Path) -> int:
    """The training step of the model in `checkpoint`: its file name's, best/'s recorded step, the step a
    finished run ended at, else the last step the run logged."""
    step = checkpoint_step(checkpoint.name)
    if step is not None and checkpoint.parent.name == "checkpoints":
        return step
    if checkpoint.parent.name == "best" and checkpoint.parent.parent == run:
        step = finished_step(checkpoint.parent / "results.json", "step")
        if step is not None:  # else best/ without its results: the run's last step
            return step
    finished = finished_step(run / "results.json")  # a finished run's model.safetensors
    if finished is not None:
        return finished
    rows, _ = read_rows(run / "metrics.jsonl")
    return max((int(row["step"]) for row in rows), default=0)
