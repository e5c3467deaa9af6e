"""Training checkpoints: self-describing, written atomically, pruned, found again on resume.

Layout of a run directory's `checkpoints/`: `step-00001000.pt` files and a `latest` file naming the
newest complete one. Files are written with `vitcli.files.atomic_write` and loaded with
`vitcli.weights.serialization.load` (weights_only: a checkpoint never runs code).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitcli.errors import RunError
from vitcli.files import atomic_write
from vitcli.weights.reader import LATEST, latest

FORMAT_VERSION = 1


def save(run_dir: Path, state: dict, step: int, keep: int) -> Path:
    """Save a training checkpoint, point `latest` at it, then prune all but the newest `keep`.

    Weights that are no longer finite are refused: the last good checkpoint is never replaced (or
    pruned) in favour of a state that could only reproduce the fault.
    """
    folder = Path(run_dir) / "checkpoints"
    bad = _nonfinite(state.get("model") or {}) or _nonfinite(state.get("ema") or {})
    if bad:
        raise RunError(
            f"step {step}: weight {bad} is NaN or infinite, so no checkpoint was written; last good "
            f"checkpoint: {latest(run_dir) or 'none yet'}; likely causes: a learning rate too high for this "
            "batch size, or bf16 overflow (try train.precision: fp32)")
    path = folder / f"step-{step:08d}.pt"
    state = {**state, "format_version": FORMAT_VERSION, "step": step}
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write(folder / LATEST, lambda f: f.write(path.name.encode()))
    for old in sorted(folder.glob("step-*.pt"))[: -max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def _nonfinite(tensors: dict) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None
