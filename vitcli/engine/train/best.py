"""The best evaluation of a run: `train.keep_best` keeps its weights in `<run>/best/`, `train.early_stop`
ends training when the watched metric stops improving.

Every rank sees the same evaluation results (they are gathered), so every rank takes the same decision
and the collective that gathers FSDP weights is called by all of them. `best/` is written into a
temporary folder beside it and swapped in, so it always holds one whole model: weights, config.json and
results.json with the step and the value.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vitcli import files
from vitcli.errors import RunError
from vitcli.recipe.config import TrainCfg

BEST = "best"


def higher_is_better(metric: str) -> bool:
    """Accuracies grow, losses shrink."""
    return not metric.removeprefix("ema_") == "loss"


@dataclass
class Watch:
    """What a metric did so far: its best value, at which step, and evaluations since (saved in checkpoints)."""

    value: float | None = None
    step: int = 0
    stale: int = 0

    def better(self, metric: str, value: float, min_delta: float = 0.0) -> bool:
        if self.value is None:
            return True
        gain = value - self.value if higher_is_better(metric) else self.value - value
        return gain > min_delta


class Best:
    """Judges each evaluation of a run: keeps best/ and counts towards early stopping."""

    def __init__(self, cfg: TrainCfg, out: Path, main: bool = True):
        self.keep, self.stop, self.out, self.main = cfg.keep_best, cfg.early_stop, Path(out), main
        self.kept, self.watched = Watch(), Watch()

    @property
    def stopped(self) -> bool:
        """Whether the watched metric has stopped improving (a resumed run that had stopped stays stopped)."""
        return bool(self.stop.metric) and self.watched.stale >= self.stop.patience

    def state(self) -> dict:
        """For the training checkpoint: a resumed run judges on from where it was."""
        return {"kept": vars(self.kept), "watched": vars(self.watched)}

    def load_state(self, state: dict | None) -> None:
        if isinstance(state, dict):
            try:
                self.kept, self.watched = Watch(**state.get("kept", {})), Watch(**state.get("watched", {}))
            except TypeError:  # a checkpoint of another version: judge afresh rather than fail the resume
                self.kept, self.watched = Watch(), Watch()

    def judge(self, step: int, results: dict[str, float], save) -> bool:
        """Record an evaluation; `save(folder)` writes the model when it is the best. True: stop early."""
        if self.keep:
            value = _value(results, self.keep)
            if self.kept.better(self.keep, value):
                self.kept = Watch(value, step)
                self._replace(step, results, value, save)
        if not self.stop.metric:
            return False
        value = _value(results, self.stop.metric)
        if self.watched.better(self.stop.metric, value, self.stop.min_delta):
            self.watched = Watch(value, step)
        else:
            self.watched.stale += 1
        return self.stopped

    def _replace(self, step: int, results: dict, value: float, save) -> None:
        if not self.main:
            save(None)  # the weights are gathered by every rank under FSDP; only the main process writes
            return
        target = self.out / BEST
        staging = files.real_dir(self.out / f".{BEST}-{step}.tmp", create=True)
        save(staging)
        files.write_json(staging / "results.json", {"step": step, "metric": self.keep, "value": value, **results})
        old = self.out / f".{BEST}-old.tmp"
        if target.is_dir():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)


def _value(results: dict[str, float], metric: str) -> float:
    if metric not in results:
        raise RunError(f"train.keep_best / early_stop: the evaluation reported no {metric!r} (it reported "
                       f"{', '.join(sorted(results)) or 'nothing'}); choose one of those")
    return float(results[metric])


def best_results(run: Path) -> dict | None:
    """The results.json of a run's best/ (None when the run kept none)."""
    path = Path(run) / BEST / "results.json"
    if not files.check_regular(path, follow=False):
        return None
    return json.loads(files.read_bytes(path, limit=1 << 20))
