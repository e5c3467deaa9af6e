"""Optimisers, parameter groups (weight decay, layer-wise lr decay, freezing) and the lr schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from vitcli.recipe.config import OptimCfg, ScheduleCfg
from vitcli.errors import RecipeError
from vitcli.models import param_groups_no_decay


def freeze(model: nn.Module, patterns: tuple[str, ...]) -> int:
    """Stop gradients for parameters named by prefix ("patch_embed") or block range ("blocks.0-5").

    Returns the number of frozen parameters. A pattern that matches nothing is an error, since a typo
    would otherwise silently train everything.
    """
    names = [n for n, _ in model.named_parameters()]
    frozen = 0
    for pattern in patterns:
        prefixes = _expand(pattern)
        hits = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise RecipeError(f"train.freeze: '{pattern}' matches no parameter; valid prefixes: {', '.join(tops)} "
                              f"or a block range such as 'blocks.0-5'")
        for name, param in model.named_parameters():
            if name in hits:
                param.requires_grad_(False)
                frozen += param.numel()
    return frozen


def _expand(pattern: str) -> list[str]:
    match = re.fullmatch(r"(.+)\.(\d+)-(\d+)", pattern)
    if not match:
        return [pattern]
    stem, lo, hi = match.group(1), int(match.group(2)), int(match.group(3))
    return [f"{stem}.{i}" for i in range(lo, hi + 1)]


def _layer_id(name: str, depth: int) -> int:
    # Embeddings are layer 0, block i is layer i+1, the final norm and head are layer depth+1; the
    # position table added to block i's input ("every_layer": pos_embed_layers.<i-1>) goes with block i.
    table = re.match(r"pos_embed_layers\.(\d+)\.", name)
    if table:
        return int(table.group(1)) + 2
    if name.startswith(("patch_embed", "cls_token", "pos_embed", "reg_token", "mask_token")):
        return 0
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else depth + 1


def param_groups(model: nn.Module, cfg: OptimCfg) -> list[dict]:
    """Group trainable parameters by (weight decay, lr scale)."""
    no_decay = param_groups_no_decay(model)
    depth = len(getattr(model, "blocks", []))
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        wd = 0.0 if name in no_decay else cfg.weight_decay
        scale = cfg.layer_decay ** (depth + 1 - _layer_id(name, depth)) if cfg.layer_decay else 1.0
        groups.setdefault((wd, scale), []).append(param)
    return [{"params": p, "weight_decay": wd, "lr_scale": s} for (wd, s), p in groups.items()]


def build_optimizer(model: nn.Module, cfg: OptimCfg, lr: float) -> torch.optim.Optimizer:
    """Adam(W) with decoupled weight decay, or SGD with momentum, over `param_groups`."""
    groups = param_groups(model, cfg)
    if not groups:
        raise RecipeError("train.freeze: every parameter is frozen; nothing would train")
    # Fused Adam updates all parameters in one kernel, on CPU and CUDA, and works on FSDP2's sharded
    # DTensors; fused SGD has no DTensor rule, so SGD uses the multi-tensor (foreach) path instead.
    if cfg.name in ("adam", "adamw"):
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.b1, cfg.b2), fused=True)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, foreach=True)


def lr_at(step: int, total: int, peak: float, cfg: ScheduleCfg) -> float:
    """Learning rate of update `step` (0-based): linear warmup, then cosine/linear decay to `end_lr`."""
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant" or total <= cfg.warmup_steps:
        return peak
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    if cfg.decay == "linear":
        return peak + (cfg.end_lr - peak) * progress
    return cfg.end_lr + (peak - cfg.end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply the scheduled lr to every group, times its layer-decay scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
