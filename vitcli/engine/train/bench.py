"""What one training step of a recipe's model costs on this machine, before a run pays for it: the
measurements `vit bench` (`engine/jobs/benchmark.py`) makes.

The step timed is the engine's own (`TrainStep.run`: autocast, the objective's loss, backward, clipping,
the fused optimiser, EMA when the recipe keeps one), fed from tensors already in memory, so the figure is
the model's training speed with the data pipeline left out. It is set against the machine's dense matmul
peak in the same dtype, measured here, which turns images/s into model FLOP utilisation (MFU).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vitcli.recipe.config import RecipeCfg, Res
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.train.step import TrainStep
from vitcli.models import macs, resolve_variant

_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
_BENCH_CLASSES = 1000  # head size when the recipe does not fix one: ImageNet's, a negligible share of the cost


def matmul_peak(device: torch.device, precision: str, n: int = 2048, seconds: float = 1.0) -> float:
    """Dense matmul FLOP/s of this device in `precision` (n x n by n x n, median of repeats).

    The yardstick MFU is measured against: what the hardware actually sustains on the operation
    transformers spend most of their time in, rather than a datasheet figure.
    """
    a = torch.randn(n, n, device=device, dtype=_DTYPES[precision])
    b = torch.randn(n, n, device=device, dtype=_DTYPES[precision])
    flops = 2 * n**3
    torch.matmul(a, b)  # warm-up: thread pools, kernel selection
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        _sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times)


def measurements(cfg: RecipeCfg, rt: Runtime, times: list[float], peak: bool = True) -> dict:
    """What `vit bench` reports of the step times measured: images/s, the median step time, the forward
    MACs per image, achieved training FLOP/s (6 x MACs x images/s: 2 FLOPs per multiply-accumulate,
    times 3 for forward plus the two backward matmuls), the measured matmul peak and their ratio (MFU),
    and peak memory (RSS on CPU, allocated memory on CUDA)."""
    micro = cfg.train.micro_batch
    step_s = statistics.median(times)
    img_s = micro / step_s
    variant = resolve_variant(cfg.model)
    fwd_macs = macs(variant, cfg.model.res, cfg.data.num_classes)
    achieved = 6 * fwd_macs * img_s
    peak_flops = matmul_peak(rt.device, cfg.train.precision) if peak else None
    return {
        "model": variant.name,
        "res": list(cfg.model.res),
        "batch": micro,
        "precision": cfg.train.precision,
        "compile": cfg.train.compile,
        "device": str(rt.device),
        "threads": torch.get_num_threads(),
        "steps": len(times),
        "step_s": step_s,
        "step_s_min": min(times),
        "img_s": img_s,
        "macs_per_image": fwd_macs,
        "train_flops": achieved,
        "peak_flops": peak_flops,
        "mfu": achieved / peak_flops if peak_flops else None,
        "peak_memory_mb": peak_memory_mb(rt.device),
    }


def bench_recipe(cfg: RecipeCfg, batch: int | None = None, res: Res | None = None, model: str | None = None,
                 precision: str | None = None) -> RecipeCfg:
    """The recipe as timed: its model and training settings at one micro-batch, no initial weights (they
    change the numbers, not the cost) and a head of `data.num_classes` (ImageNet's 1000 when unset)."""
    m = cfg.model
    if model is not None:  # a named variant replaces the recipe's shape overrides
        m = dataclasses.replace(m, name=model, width=None, depth=None, heads=None, mlp_dim=None, patch=None)
    if res is not None:
        m = dataclasses.replace(m, res=tuple(res))
    t = cfg.train
    micro = batch or t.micro_batch or 32
    t = dataclasses.replace(t, batch_size=micro, micro_batch=micro, init_from=None, precision=precision or t.precision)
    data = dataclasses.replace(cfg.data, num_classes=cfg.data.num_classes or _BENCH_CLASSES)
    return dataclasses.replace(cfg, model=m, train=t, data=data)


def synthetic_batch(cfg: RecipeCfg, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One step's micro-batches of random images and labels at the recipe's resolution and batch."""
    micro = cfg.train.micro_batch or cfg.train.batch_size
    images = torch.randn(micro, cfg.model.in_chans, *cfg.model.res, device=device)
    labels = torch.randint(0, cfg.data.num_classes or _BENCH_CLASSES, (micro,), device=device)
    return [(images, labels)]


def time_steps(step: TrainStep, micro_batches: list, steps: int, warmup: int) -> list[float]:
    """Seconds per `step.run` for `steps` steps after `warmup` untimed ones; the peak memory counts from
    the first timed step."""
    device = step.rt.device
    for i in range(warmup):
        step.run(micro_batches, step.peak_lr, i)
    _sync(device)
    reset_peak_memory(device)
    return [timed(lambda i=i: step.run(micro_batches, step.peak_lr, warmup + i), device) for i in range(steps)]


def timed(work: Callable[[], object], device: torch.device) -> float:
    """Seconds `work()` takes on `device`: CUDA events around it on a GPU (the host clock would time the
    kernel launches, not the kernels), a synchronised host clock elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    work()
    return time.perf_counter() - begin


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak from here, so model building and warm-up allocations are not counted twice."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the process's peak resident set (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory since `reset_peak_memory`: allocated bytes on CUDA, resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # elsewhere: the peak since the process started (kB on Linux, bytes on macOS)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
