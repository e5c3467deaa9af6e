"""One way from a checkpoint to a model: `restore` builds it and says, as data, what loading took.

Every command that needs a model from a checkpoint comes here: `vit eval`, `fewshot`, `predict` and
`inspect` keep the checkpoint's head and tanh pre-logits layer (the weights size them); fine-tuning asks for
a `new_head` and drops both, as the paper's transfer does; `vit export` builds the model the checkpoint
describes. The checkpoint is a `Pretrained` read once by the caller: nothing here opens a file.
What was done (a resampled grid, a dropped head or pre-logits layer, a change in the number of classes,
EMA or raw weights) is a `Restored` record that results report; the log lines are made from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from vitcli.errors import CheckpointError
from vitcli.models.posemb import Resample
from vitcli.recipe.config import ModelCfg
from vitcli.weights.fit import load_weights
from vitcli.weights.reader import Pretrained


@dataclass(frozen=True)
class Restored:
    """What `restore` did to put a checkpoint's weights into a model."""

    source: Path  # the path the checkpoint was read from
    file: Path  # the file the weights used came from (an exported run's EMA weights: model_ema.safetensors)
    weights: str  # "ema" or "raw": the copy loaded ("ema" asked of a checkpoint without one loads "raw")
    resampled: Resample | None  # the position-embedding grid change, when the resolution differs
    new_head: bool  # the checkpoint's head and pre-logits layer were left out for a new head
    not_loaded: tuple[str, ...]  # checkpoint tensors left out: head, pre-logits, masked-patch parts
    head_classes: int | None  # classes of the checkpoint's own head (None: a headless backbone)
    num_classes: int  # classes of the model's head (0: none)
    label_names: list[str] | None  # the model's class names in output order (the checkpoint's, its head kept)

    @property
    def dropped_head(self) -> bool:
        return any(k.startswith("head.") for k in self.not_loaded)

    @property
    def dropped_pre_logits(self) -> bool:
        return any(k.startswith("pre_logits.") for k in self.not_loaded)

    @property
    def posemb_resampled(self) -> str | None:
        """The grid change as results report it ("4x4 -> 8x8 (paper)"), or None at the checkpoint's grid."""
        return str(self.resampled) if self.resampled is not None else None


def _quiet(_: str) -> None:
    return None


def restore(source: Pretrained, cfg: ModelCfg, *, new_head: int | None = None, weights: str = "ema",
            need_head: bool = False, log: Callable[[str], object] = _quiet) -> tuple[nn.Module, Restored]:
    """The model of `cfg` holding `source`'s weights, and the record of what that took.

    `new_head`: fine-tuning: a fresh head for that many classes; the checkpoint's head and pre-logits layer
    are not loaded. Otherwise both are kept and the checkpoint decides their sizes (`cfg`'s
    representation_size must agree with it when set); `need_head` refuses a headless checkpoint.
    `weights`: "ema" (the EMA copy when the checkpoint has one, else the raw weights) or "raw".
    Position embeddings are resampled to `cfg.res` (`cfg.posemb_resample`) from the checkpoint's own grid.
    """
    from vitcli.models import build_model

    state = source.weights(weights)
    if new_head is None:
        cfg, classes = _kept_head(source, state, cfg, need_head, log)
    else:
        classes = new_head
    model = build_model(cfg, classes)
    try:
        fitted = load_weights(model, state, drop_head=new_head is not None, mode=cfg.posemb_resample,
                              old_grid=checkpoint_grid(source), log=log)
    except CheckpointError as exc:  # name the file: the user may have passed several
        raise CheckpointError(f"{source.path}: {exc}") from None
    used = "ema" if weights == "ema" and source.ema is not None else "raw"
    done = Restored(source=Path(source.path), file=_weights_file(source, used), weights=used,
                    resampled=fitted.resampled, new_head=new_head is not None,
                    not_loaded=fitted.dropped_head + fitted.dropped_pretraining, head_classes=head_classes(source),
                    num_classes=classes, label_names=None if new_head is not None else source.label_names)
    if new_head is not None:
        _log_new_head(done, cfg, log)
    return model, done


def _kept_head(source: Pretrained, state: dict, cfg: ModelCfg, need_head: bool,
               log: Callable[[str], object]) -> tuple[ModelCfg, int]:
    """The model section and number of classes that the checkpoint's own head and pre-logits layer fix."""
    head = state.get("head.weight")
    if head is None and need_head:
        raise CheckpointError(f"{source.path}: no classification head (head.weight) in the checkpoint; "
                              "vit eval needs a trained head (use vit fewshot for headless backbones)")
    rep = state.get("pre_logits.fc.weight")
    have, want = (int(rep.shape[0]) if rep is not None else None), cfg.representation_size
    if want and want != have:
        found = f"a pre-logits layer of width {have}" if have else "no pre-logits layer (pre_logits.fc.*)"
        raise CheckpointError(f"{source.path}: model.representation_size {want} asks for the tanh pre-logits "
                              f"layer, but the checkpoint has {found}; drop model.representation_size from "
                              "the recipe to use the checkpoint's own representation")
    if have and not want:  # e.g. a timm state dict: the checkpoint decides, as for every other layer
        log(f"using the checkpoint's tanh pre-logits layer (representation_size {have})")
    return replace(cfg, representation_size=have), int(head.shape[0]) if head is not None else 0


def _log_new_head(done: Restored, cfg: ModelCfg, log: Callable[[str], object]) -> None:
    head = "zero-initialised" if cfg.head_init == "zero" else "randomly initialised"
    old = done.head_classes
    change = f" (the checkpoint's head had {old} classes)" if old is not None and old != done.num_classes else ""
    log(f"initialised from {done.source}; new {head} head for {done.num_classes} classes{change}")


def _weights_file(source: Pretrained, which: str) -> Path:
    """The file the weights used came from: EMA weights of an exported model sit in model_ema.safetensors."""
    path = Path(source.path)
    ema_file = path.with_name(path.stem + "_ema.safetensors")
    return ema_file if which == "ema" and path.suffix == ".safetensors" and ema_file.is_file() else path


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
