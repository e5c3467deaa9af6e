"""The runtime: device, precision, seed and process group, as one explicit object passed down.

Nothing in the engine reads the environment except `Runtime.create`, which honours the variables that
`torchrun` sets (RANK, WORLD_SIZE, LOCAL_RANK). `vit` has no launcher of its own.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from vitcli.errors import RunError


@dataclass(frozen=True)
class Runtime:
    """Where and how the engine computes."""

    device: torch.device
    precision: str  # "bf16" or "fp32"
    seed: int
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def create(cls, device: str = "auto", precision: str = "bf16", seed: int = 0) -> "Runtime":
        """Pick the device and join the torchrun process group when launched under torchrun."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = launch_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise RunError("train.device: cuda was asked for, but torch sees no CUDA GPU on this machine (torch "
                           f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use train.device: "
                           "auto or cpu")
        if device == "cuda" and local_rank >= torch.cuda.device_count():
            raise RunError(f"train.device: cuda: this process has LOCAL_RANK {local_rank} but the machine has "
                           f"{torch.cuda.device_count()} GPU(s); start at most that many processes per node")
        dev = torch.device(device, local_rank) if device == "cuda" else torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            # TF32 matmuls for the fp32 parts; bf16 autocast covers the rest.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(device=dev, precision=precision, seed=seed, rank=rank, world=world, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, metrics and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        """bf16 autocast on CPU or CUDA when asked for; a no-op context in fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def seed_everything(self, offset: int = 0) -> None:
        """Seed torch, numpy and random (mixup and RandAugment draw from the latter two)."""
        seed = self.seed + offset
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (torchrun expects a clean destroy)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def rng_state() -> dict:
    """All random-generator states a training step depends on, in a `weights_only`-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value):
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value
