"""Data parallelism with what PyTorch ships: DDP, or FSDP2 (`fully_shard`) for the large variants."""

from __future__ import annotations

from torch import nn

from vitcli.recipe.config import TrainCfg
from vitcli.engine.runtime.process import Runtime


def wrap(model: nn.Module, cfg: TrainCfg, rt: Runtime) -> nn.Module:
    """Return the module the training loop calls; the raw `model` stays the one that is saved."""
    if not rt.distributed:
        return model
    if cfg.parallel == "fsdp":
        return _fsdp(model, rt)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _fsdp(model: nn.Module, rt: Runtime) -> nn.Module:
    # Shard each transformer block, then the root (embeddings, norm, head): parameters, gradients and
    # optimiser state are split across processes, and gathered one block at a time in forward/backward.
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model
