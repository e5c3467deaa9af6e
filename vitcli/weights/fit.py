"""Loading a plain state dict into a ViT the way the paper fine-tunes.

Fine-tuning drops the pre-trained head and pre-logits layer (the model keeps its fresh, usually
zero-initialised, head) and resamples the position embeddings when the resolution changed. Everything
else must fit exactly: a silent partial load would train a different model than the recipe names.
Reading checkpoint files (wrappers, formats, safety) is not done here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vitcli.errors import CheckpointError
from vitcli.models.masked import is_pretraining_key
from vitcli.models.posemb import resample_posemb, square_grid

HEAD_PREFIXES = ("head.", "pre_logits.", "head_dist.")
_SHOWN = 5  # keys named per kind of problem; more are counted


def _is_head(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def _fmt(grid: tuple[int, int]) -> str:
    return f"{grid[0]}x{grid[1]}"


def _num_prefix(sd: dict[str, torch.Tensor]) -> int:
    """Tokens the checkpoint puts before the patches (class and register tokens)."""
    return sum(sd[k].shape[1] for k in ("cls_token", "dist_token", "reg_token") if k in sd and sd[k].ndim == 3)


def _resample(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    old_grid: tuple[int, int] | None,
    mode: str,
) -> tuple[torch.Tensor, str | None]:
    """Fit checkpoint position embeddings to the model's grid; returns them and a note when resampled."""
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
    return out, f"position embeddings resampled: {_fmt(old_grid)} -> {_fmt(new_grid)} ({mode})"


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
) -> list[str]:
    """Load `state_dict` into `model` in place and return the notes it logged (one line each).

    `drop_head`: leave out `head.*` and `pre_logits.*` and keep the model's own head (fine-tuning).
    `mode`: position-embedding resampling ("paper", "bilinear", "bicubic") when the grid differs.
    `old_grid`: the checkpoint's patch grid, needed only when it is not square.
    Raises CheckpointError when any other key is missing, unexpected or of another shape.
    """
    sd = dict(state_dict)
    notes = []
    if drop_head:
        dropped = [k for k in sd if _is_head(k)]
        for k in dropped:
            del sd[k]
        if dropped:
            notes.append(f"head not loaded: {len(dropped)} tensors of head/pre_logits dropped, new head kept")
    own = model.state_dict()
    pretraining = [k for k in sd if is_pretraining_key(k) and k not in own]
    for k in pretraining:  # the [mask] embedding and head of masked patch prediction: pretraining only
        del sd[k]
    if pretraining:
        notes.append(f"masked-patch parts not loaded: {len(pretraining)} tensors of mask_token/mpp_head dropped")
    # 2-D, relative, fixed and per-block tables: the model knows their layout (and names the change once)
    own = model.fit_posemb(sd, mode, old_grid) if hasattr(model, "fit_posemb") else []
    if "pos_embed" in sd and getattr(model, "pos_embed", None) is not None:
        sd["pos_embed"], note = _resample(model, sd, old_grid, mode)
        own = own or ([note] if note else [])
    notes += own
    problems = _problems(model.state_dict(), sd, drop_head)
    if problems:
        raise CheckpointError(f"checkpoint does not fit the model (the variants differ): {problems}")
    model.load_state_dict(sd, strict=not drop_head)
    for note in notes:
        log(note)
    return notes
