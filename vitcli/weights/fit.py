"""Loading a plain state dict into a ViT the way the paper fine-tunes.

Fine-tuning drops the pre-trained head and pre-logits layer (the model keeps its fresh, usually
zero-initialised, head) and resamples the position embeddings when the resolution changed. Everything
else must fit exactly: a silent partial load would train a different model than the recipe names.
Reading checkpoint files (wrappers, formats, safety) is not done here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vitcli.errors import CheckpointError
from vitcli.models.masked import is_pretraining_key
from vitcli.models.posemb import Resample, resample_posemb, square_grid

HEAD_PREFIXES = ("head.", "pre_logits.", "head_dist.")
_SHOWN = 5  # keys named per kind of problem; more are counted


def _is_head(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def _fmt(grid: tuple[int, int]) -> str:
    return f"{grid[0]}x{grid[1]}"


@dataclass(frozen=True)
class Fitted:
    """What loading a state dict into a model changed, as data (`notes` is how the log says it)."""

    resampled: Resample | None = None  # the position-embedding grid change, when there was one
    dropped_head: tuple[str, ...] = ()  # head.* and pre_logits.* tensors left out (the model keeps its own)
    dropped_pretraining: tuple[str, ...] = ()  # mask_token / mpp_head tensors: masked-patch pretraining only

    @property
    def notes(self) -> list[str]:
        """One log line per change, in the order they were made."""
        notes = []
        if self.dropped_head:
            notes.append(f"head not loaded: {len(self.dropped_head)} tensors of head/pre_logits dropped, "
                         "new head kept")
        if self.dropped_pretraining:
            notes.append(f"masked-patch parts not loaded: {len(self.dropped_pretraining)} tensors of "
                         "mask_token/mpp_head dropped")
        if self.resampled is not None:
            notes.append(self.resampled.note)
        return notes


def _num_prefix(sd: dict[str, torch.Tensor]) -> int:
    """Tokens the checkpoint puts before the patches (class and register tokens)."""
    return sum(sd[k].shape[1] for k in ("cls_token", "dist_token", "reg_token") if k in sd and sd[k].ndim == 3)


def _resample(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    old_grid: tuple[int, int] | None,
    mode: str,
) -> tuple[torch.Tensor, Resample | None]:
    """Fit checkpoint position embeddings to the model's grid; returns them and the change, if any."""
    posemb, target = sd["pos_embed"], model.pos_embed
    num_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    if (
        posemb.shape == target.shape
        or posemb.ndim != 3
        or posemb.shape[-1] != target.shape[-1]
        or (not model.no_embed_class and _num_prefix(sd) != num_prefix)
    ):
        return posemb, None  # same grid, or a different variant that the key and shape check reports
    new_grid = tuple(model.patch_embed.grid_size)
    old_grid = tuple(old_grid) if old_grid else square_grid(posemb.shape[1] - num_prefix)
    if old_grid is None or old_grid[0] * old_grid[1] != posemb.shape[1] - num_prefix:
        raise CheckpointError(
            f"pos_embed: checkpoint has {posemb.shape[1] - num_prefix} patch positions, which is not a "
            f"square grid; valid: give the checkpoint's grid (its resolution / patch size) to resample to "
            f"{_fmt(new_grid)}"
        )
    out = resample_posemb(posemb, new_grid, old_grid, num_prefix=num_prefix, mode=mode)
    return out, Resample(old_grid, new_grid, mode)


def _problems(model_sd: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], drop_head: bool) -> str:
    """One line naming mismatched, missing and unexpected keys (empty when the state dict fits)."""
    parts = []
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(model_sd[k].shape)}"
        for k, v in sd.items()
        if k in model_sd and v.shape != model_sd[k].shape
    ]
    missing = [k for k in model_sd if k not in sd and not (drop_head and _is_head(k))]
    unexpected = [k for k in sd if k not in model_sd]
    for label, keys in (
        ("checkpoint shape vs model shape", shapes),
        ("missing from checkpoint", missing),
        ("not in model", unexpected),
    ):
        if keys:
            more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            parts.append(f"{label}: {', '.join(keys[:_SHOWN])}{more}")
    return "; ".join(parts)


def load_weights(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    drop_head: bool,
    mode: str = "paper",
    old_grid: tuple[int, int] | None = None,
    log: Callable[[str], object] = print,
) -> Fitted:
    """Load `state_dict` into `model` in place; return what changed (`Fitted`), each change logged in one line.

    `drop_head`: leave out `head.*` and `pre_logits.*` and keep the model's own head (fine-tuning).
    `mode`: position-embedding resampling ("paper", "bilinear", "bicubic") when the grid differs.
    `old_grid`: the checkpoint's patch grid, needed only when it is not square.
    Raises CheckpointError when any other key is missing, unexpected or of another shape.
    """
    sd = dict(state_dict)
    dropped = tuple(k for k in sd if _is_head(k)) if drop_head else ()
    own = model.state_dict()
    # The [mask] embedding and head of masked patch prediction belong to pretraining only.
    pretraining = tuple(k for k in sd if is_pretraining_key(k) and k not in own)
    for k in dropped + pretraining:
        del sd[k]
    # 2-D, relative, fixed and per-block tables: the model knows their layout (and names the change once)
    resampled = model.fit_posemb(sd, mode, old_grid) if hasattr(model, "fit_posemb") else None
    if "pos_embed" in sd and getattr(model, "pos_embed", None) is not None:
        sd["pos_embed"], learned = _resample(model, sd, old_grid, mode)
        resampled = resampled or learned
    problems = _problems(model.state_dict(), sd, drop_head)
    if problems:
        raise CheckpointError(f"checkpoint does not fit the model (the variants differ): {problems}")
    model.load_state_dict(sd, strict=not drop_head)
    fitted = Fitted(resampled, dropped, pretraining)
    for note in fitted.notes:
        log(note)
    return fitted
