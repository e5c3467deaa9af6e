"""The runtime: device, precision, seed and process group, as one explicit object passed down.

Nothing in the engine reads the environment except `Runtime.create` (and `launch_rank`,
`launch_restarts` for the CLI), which honour the variables that `torchrun` sets (RANK, WORLD_SIZE,
LOCAL_RANK, TORCHELASTIC_RESTART_COUNT) and SLURM's SLURM_RESTART_COUNT. `vit` has no launcher of its own.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from vitcli.engine.runtime.faults import PeerWatch
from vitcli.errors import RunError

DEFAULT_TIMEOUT_S = 600.0  # train.timeout's default: longer than any checkpoint write or first compile


@dataclass(frozen=True)
class Runtime:
    """Where and how the engine computes."""

    device: torch.device
    precision: str  # "bf16" or "fp32"
    seed: int
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    timeout: float = DEFAULT_TIMEOUT_S  # seconds any collective waits for the other processes
    restarts: int = 0  # how often torchrun (or SLURM) restarted this job: > 0 resumes the run
    peers: PeerWatch | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, device: str = "auto", precision: str = "bf16", seed: int = 0,
               timeout: float = DEFAULT_TIMEOUT_S) -> "Runtime":
        """Pick the device and join the torchrun process group when launched under torchrun.

        Every collective of the group waits at most `timeout` seconds; a failure of any rank ends the
        others within seconds (`faults.PeerWatch`).
        """
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
        restarts = launch_restarts()
        if world > 1 and not dist.is_initialized():
            _join(dev, rank, world, restarts, timedelta(seconds=timeout))
        peers = PeerWatch(rank) if world > 1 else None
        return cls(device=dev, precision=precision, seed=seed, rank=rank, world=world, local_rank=local_rank,
                   timeout=timeout, restarts=restarts, peers=peers)

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

    def any_rank(self, flag: bool) -> bool:
        """Whether `flag` is true on any process (a collective: every rank must call it at the same point)."""
        if not self.distributed:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def failed(self, exc: BaseException) -> None:
        """Tell the other processes this one failed, so that none waits for it (see faults.PeerWatch)."""
        if self.peers is not None:
            self.peers.publish(exc)

    def close(self) -> None:
        """Stop watching the peers, then leave the process group (torchrun expects a clean destroy)."""
        if self.peers is not None:
            self.peers.stop()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _join(dev: torch.device, rank: int, world: int, restarts: int, timeout: timedelta) -> None:
    """Join the process group. Under torchrun (whose agent hosts the key-value store) each restart of the
    group gets keys of its own: with the store's keys of the group before it, a restarted group's gloo
    mesh dials the dead processes' addresses and hangs (seen with torch 2.14), and its ranks would read
    the old group's failure (faults.PeerWatch) as their own."""
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        dist.init_process_group(backend, timeout=timeout)
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=timeout)
    dist.init_process_group(backend, store=dist.PrefixStore(f"vit/restart-{restarts}/", store), rank=rank,
                            world_size=world, timeout=timeout)


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def launch_restarts() -> int:
    """How often this job was started again: by torchrun after a lost rank (`--max-restarts`), or by
    SLURM after a preemption (`--requeue`). 0 on a first start."""
    counts = [os.environ.get(name, "0") for name in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT")]
    return max(int(c) if c.strip().isdigit() else 0 for c in counts)


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
