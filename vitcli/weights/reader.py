"""Read the weights a user points `--from` at: a vit checkpoint, a run directory, safetensors, or timm.

Every format ends as a `Pretrained`: a plain state dict with timm's key names, plus whatever the file
says about itself (model config, recipe, EMA weights). Nothing here can execute code from the file:
pickles load with `weights_only=True`, safetensors hold only tensors, JSON is data.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitcli import files
from vitcli.errors import CheckpointError
from vitcli.weights import serialization

LABEL_NAMES = "label_names"  # key of the head's class names in checkpoints, safetensors metadata, config.json
LATEST = "latest"  # the file in a run's checkpoints/ that names the newest complete checkpoint
_WRAPPERS = ("model", "state_dict", "module")  # keys under which common trainers nest the weights
_STEP_FILE = re.compile(r"step-\d{8,12}\.pt")  # what checkpoints.save names a checkpoint, and nothing else
_log = logging.getLogger("vitcli.weights")


@dataclass
class Pretrained:
    """Weights and self-description read from one `--from` path."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    model: dict | None = None  # the model description (`vitcli.models.describe`), when the file has one
    recipe: dict | None = None  # the resolved recipe of the run that made it, when known
    ema: dict[str, torch.Tensor] | None = None
    label_names: list[str] | None = None  # the head's class names, in output order, when known
    extra: dict = field(default_factory=dict)

    def weights(self, which: str) -> dict[str, torch.Tensor]:
        """The EMA weights when asked for and present, else the raw ones."""
        return self.ema if which == "ema" and self.ema is not None else self.state_dict


def read(path: str | Path) -> Pretrained:
    """Read `path` in whichever supported format it is; errors name the path and what is accepted."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"--from {path}: no such file or directory; give a vit checkpoint (.pt), a run "
                              "directory, a model.safetensors or a timm state dict (.pth/.bin/.safetensors)")
    if path.is_dir():
        return _read_run_dir(path)
    files.check_regular(path, follow=True, error=CheckpointError, who="--from ")  # a FIFO would block
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _read_pickle(path)
    raise CheckpointError(f"--from {path}: unknown checkpoint format '{path.suffix}'; "
                          "accepted: .pt, .pth, .bin, .safetensors or a run directory")


def _read_run_dir(folder: Path) -> Pretrained:
    final = folder / "model.safetensors"
    if files.check_regular(final, follow=False, error=CheckpointError, who="--from "):
        return _read_safetensors(final)
    last = latest(folder)
    if last is not None:
        return _read_pickle(last)
    raise CheckpointError(f"--from {folder}: the directory holds neither model.safetensors nor a checkpoint "
                          "under checkpoints/ (is it a vit run directory?)")


def _read_safetensors(path: Path) -> Pretrained:
    tensors = check_dtypes(serialization.read_safetensors(path), path)
    names = _label_names(serialization.safetensors_metadata(path).get(LABEL_NAMES), path)
    config_path = path.with_name("config.json")
    model = recipe = None
    if files.check_regular(config_path, follow=True, error=CheckpointError):
        try:
            config = json.loads(files.read_bytes(config_path, follow=True, limit=16 << 20, error=CheckpointError))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{config_path}: expected a JSON object (architecture, model_args, vit_model, "
                                  f"vit_recipe), got {type(config).__name__}")
        model, recipe = _mapping(config, "vit_model", config_path), _mapping(config, "vit_recipe", config_path)
        names = names or _label_names(config.get(LABEL_NAMES), config_path)
    ema_path = path.with_name(path.stem + "_ema.safetensors")
    ema = (check_dtypes(serialization.read_safetensors(ema_path), ema_path)
           if files.check_regular(ema_path, follow=True, error=CheckpointError) else None)
    return Pretrained(path, tensors, model=model, recipe=recipe, ema=ema, label_names=names)


def _label_names(value, where: Path) -> list[str] | None:
    """Class names as stored: a list of strings, or (safetensors metadata) that list as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckpointError(f"{where}: {LABEL_NAMES} must be a list of class names (strings)")
    return value


# torch.save writes a zip archive; older torch and plain pickle.dump write pickle protocol 2+ (0x80).
_TORCH_HEADERS = (b"PK\x03\x04", b"\x80")


def _read_pickle(path: Path) -> Pretrained:
    with serialization.check_file(path) as handle:
        head = handle.read(4)
    if not head.startswith(_TORCH_HEADERS):
        # Without this, torch reports random bytes as an "unsupported" pickle, i.e. as unsafe code.
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a "
                              "pickle); accepted: .pt/.pth/.bin written by torch.save, .safetensors, a run directory")
    data = serialization.load(path)
    if isinstance(data, dict) and "format_version" in data and "model" in data:
        return Pretrained(path, _tensors(data, "model", path), model=_mapping(data, "model_config", path),
                          recipe=_mapping(data, "recipe", path),
                          ema=_tensors(data, "ema", path) if data.get("ema") is not None else None,
                          label_names=_label_names(data.get(LABEL_NAMES), path), extra=data)
    for key in _WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in data.items()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return Pretrained(path, check_dtypes({k.removeprefix("module."): v for k, v in data.items()}, path))


def _mapping(data: dict, key: str, path: Path) -> dict | None:
    """data[key] when it is a mapping (or absent/null); any other type is a one-line error."""
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise CheckpointError(f"{path}: {key}: expected a mapping, got {type(value).__name__}; the file is "
                              "damaged or not written by vit")
    return value


def _tensors(data: dict, key: str, path: Path) -> dict[str, torch.Tensor]:
    """data[key] as a state dict of floating-point tensors, or a one-line error naming the key."""
    value = data.get(key)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in value.items()):
        raise CheckpointError(f"{path}: {key}: expected a mapping of parameter names to tensors, got "
                              f"{type(value).__name__}; the file is damaged or not written by vit")
    return check_dtypes(value, path)


def check_dtypes(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse weights that are not real floating-point numbers (int, bool, complex): loading them into a
    float model would cast silently and truncate (an int8 copy of a model scores like chance)."""
    bad = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
           if not v.is_floating_point() and not (k.endswith("num_batches_tracked") and not v.is_complex())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise CheckpointError(f"{path}: refused: weights must be floating-point tensors, found {', '.join(bad[:3])}"
                              f"{more}; quantised or integer checkpoints are not supported, export float weights")
    return state


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    `latest` names it; when that pointer is missing, names a file that is gone or is not a plain
    `step-NNNNNNNN.pt` name inside `checkpoints/` (a path such as `../../x.pt`, an absolute path, binary
    junk), the highest-numbered `step-*.pt` is taken instead, and a bad pointer is reported in one
    warning line: every such file is complete, because it only appears by rename. Nothing inside the run
    directory is followed when it is a symbolic link.
    """
    folder = files.real_dir(Path(run_dir) / "checkpoints")
    if not folder.is_dir():
        return None
    pointer = folder / LATEST
    if files.check_regular(pointer, follow=False):
        with files.open_read(pointer, follow=False, error=CheckpointError) as handle:
            raw = handle.read(257)
        name = raw.decode("ascii", "replace").strip() if len(raw) <= 256 else raw[:40].decode("ascii", "replace")
        if _STEP_FILE.fullmatch(name) and files.check_regular(folder / name, follow=False):
            return folder / name
        if not _STEP_FILE.fullmatch(name):
            _log.warning(f"{pointer} does not name a checkpoint file in {folder} ({name[:40]!r}); using the "
                         "highest-numbered step-*.pt instead")
    steps = [p for p in folder.iterdir() if _STEP_FILE.fullmatch(p.name) and not p.is_symlink() and p.is_file()]
    return max(steps, key=lambda p: int(p.name[5:-3])) if steps else None


def checkpoint_grid(source: Pretrained) -> tuple[int, int] | None:
    """The patch grid the checkpoint's position embeddings were trained on, when the checkpoint says.

    A non-square grid (e.g. a model trained at 384x256) cannot be read off the token count, so it comes
    from the model description; timm state dicts carry none and are taken to be square.
    """
    desc = source.model or {}
    res, patch = desc.get("res"), desc.get("patch")
    if not res or not patch:
        return None
    height, width = (res, res) if isinstance(res, int) else res
    return height // patch, width // patch


def head_classes(source: Pretrained) -> int | None:
    """Number of classes of the checkpoint's own head (None for a headless backbone)."""
    head = source.state_dict.get("head.weight")
    return int(head.shape[0]) if head is not None and head.ndim == 2 else None
