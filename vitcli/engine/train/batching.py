"""Global-batch semantics: the recipe's batch is the global batch, whatever the machine.

The optimisation a recipe describes (batch 4096, lr 3e-3) must not change because a laptop can only fit
32 images at once: each process runs `micro` images per forward/backward and accumulates `accum` of them,
so that micro x accum x world == the recipe's batch size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from vitcli.errors import RecipeError
from vitcli.formats import plural

# Without fused attention, activations are about this many bytes per token and width unit per block in
# 16-bit training (Korthikanti et al., 2022: 34 bytes); fp32 doubles it.
_ACT_BYTES_PER_TOKEN_WIDTH = 34
_CPU_MICRO_CAP = 128  # past this a CPU gains no throughput from a larger batch, only memory


@dataclass(frozen=True)
class BatchPlan:
    """How one optimiser step is split across processes and micro-batches."""

    global_batch: int
    world: int
    micro: int
    accum: int

    @property
    def per_rank(self) -> int:
        """Images one process contributes to a step."""
        return self.micro * self.accum

    def describe(self) -> str:
        """The line printed at start so the user can check the arithmetic."""
        return (f"global batch {self.global_batch} = {plural(self.world, 'process', 'processes')} x "
                f"{plural(self.accum, 'accumulation step')} x micro-batch {self.micro}")


def plan(global_batch: int, world: int, micro: int | None, per_image_bytes: int, device: torch.device) -> BatchPlan:
    """Derive micro-batch and accumulation; `micro=None` picks the largest that fits the memory budget."""
    if global_batch % world:
        raise RecipeError(f"train.batch_size {global_batch} is not divisible by the {world} processes; "
                          f"use a multiple of {world}")
    per_rank = global_batch // world
    if micro is None:
        micro = _auto_micro(per_rank, per_image_bytes, device)
    elif micro * world > global_batch or per_rank % micro:
        raise RecipeError(f"train.micro_batch {micro} does not divide the per-process batch {per_rank} "
                          f"(train.batch_size {global_batch} over {world} processes)")
    return BatchPlan(global_batch, world, micro, per_rank // micro)


def activation_bytes(depth: int, tokens: int, width: int, precision: str, checkpointing: bool = False) -> int:
    """Rough training memory per image: activations kept for backward, all blocks (with gradient
    checkpointing: one block's, recomputed, plus each block's input)."""
    # Checkpointed: each block's input (2 bytes an element in bf16) plus one block's full activations.
    per_token_width = depth * 2 + _ACT_BYTES_PER_TOKEN_WIDTH if checkpointing else depth * _ACT_BYTES_PER_TOKEN_WIDTH
    per = tokens * width * per_token_width
    return per * (2 if precision == "fp32" else 1)


def _auto_micro(per_rank: int, per_image_bytes: int, device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, cap = free * 0.6, per_rank
    else:
        budget, cap = _system_memory() * 0.4, _CPU_MICRO_CAP
    fits = max(1, int(budget // max(1, per_image_bytes)))
    best = 1
    for d in range(1, per_rank + 1):
        if per_rank % d == 0 and d <= min(fits, cap):
            best = d
    return best


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30
