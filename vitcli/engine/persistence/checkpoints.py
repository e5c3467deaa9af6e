"""Training checkpoints: self-describing, written atomically, pruned, found again on resume.

Layout of a run directory's `checkpoints/`: `step-00001000.pt` files and a `latest` file naming the
newest complete one. Files are written with `vitcli.files.atomic_write` and loaded with
`vitcli.weights.serialization.load` (weights_only: a checkpoint never runs code).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitcli.errors import CheckpointError, RunError
from vitcli.files import atomic_write, real_dir
from vitcli.weights import serialization
from vitcli.weights.reader import FORMAT_VERSION, LATEST, check_dtypes, check_format, checkpoint_step, latest


def save(run_dir: Path, state: dict, step: int, keep: int) -> Path:
    """Save a training checkpoint, point `latest` at it, then prune all but the newest `keep`.

    Weights that are no longer finite are refused: the last good checkpoint is never replaced (or
    pruned) in favour of a state that could only reproduce the fault.
    """
    folder = real_dir(Path(run_dir) / "checkpoints", create=True)
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
    steps = sorted((p for p in folder.glob("step-*.pt") if checkpoint_step(p.name) is not None),
                   key=lambda p: checkpoint_step(p.name))
    for old in steps[: -max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def _nonfinite(tensors: dict) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


_POSITION = ("step", "epoch", "epoch_step", "skipped")


def load(path: Path) -> dict:
    """A training checkpoint for --resume, checked field by field before anything of the run changes.

    Weights must be finite floating-point tensors (a NaN checkpoint is never "the last good one"),
    the optimiser state and RNG state mappings, the data position whole numbers.
    """
    state = serialization.load(path)

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"--resume: {path}: {field}: {problem}; the checkpoint is damaged or not a vit "
                               "training checkpoint (delete it to resume from the one before)")

    if not isinstance(state, dict):
        raise bad("checkpoint", f"expected a mapping, got {type(state).__name__}")
    version = state.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("format_version", f"missing or not a whole number ({version!r})")
    check_format(version, path, who="--resume: ")
    for key in ("model", "optimizer", "position", "rng"):
        if not isinstance(state.get(key), dict):
            raise bad(key, "missing" if key not in state else f"expected a mapping, got {type(state[key]).__name__}")
    for key in ("model", "ema"):
        if state.get(key) is not None:
            if not isinstance(state[key], dict) or not all(isinstance(v, torch.Tensor) for v in state[key].values()):
                raise bad(key, "expected a mapping of parameter names to tensors")
            check_dtypes(state[key], path)
            if (name := _nonfinite(state[key])) is not None:
                raise bad(f"{key}.{name}", "holds NaN or infinite values")
    position = state["position"]
    if set(position) != set(_POSITION) or not all(type(position[k]) is int and position[k] >= 0 for k in _POSITION):
        raise bad("position", f"expected whole numbers >= 0 for {', '.join(_POSITION)}, got {position!r}"[:300])
    if state.get("step") != position["step"]:
        raise bad("step", f"{state.get('step')!r} differs from position.step {position['step']}")
    rng = state["rng"]
    if not (isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8
            and isinstance(rng.get("python"), list) and isinstance(rng.get("numpy"), dict)):
        raise bad("rng", "expected the torch, python and numpy generator states")
    return state
