"""`vit bench`: the engine's own training step timed on synthetic images (see `engine/train/bench.py`)."""

from __future__ import annotations

from vitcli.recipe.config import RecipeCfg, Res
from vitcli.engine.jobs.preamble import session
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train import bench as cost
from vitcli.engine.train.step import TrainStep


def bench(cfg: RecipeCfg, *, steps: int = 10, warmup: int = 3, batch: int | None = None, res: Res | None = None,
          model: str | None = None, precision: str | None = None, peak: bool = True) -> dict:
    """Time `steps` training steps (after `warmup`) of the recipe's model on synthetic in-memory images.

    `batch` is the micro-batch timed (default: the recipe's micro-batch, else 32); `res`, `model` and
    `precision` override the recipe (train.compile and train.device come from it). Returns images/s, the
    median step time, MACs, achieved FLOP/s, the measured matmul peak, MFU and peak memory
    (`bench.measurements`); `peak=False` skips measuring the peak.
    """
    cfg = cost.bench_recipe(cfg, batch, res, model, precision)
    quiet = Reporter(enabled=False)
    with session(cfg, quiet) as (rt, _):
        if rt.distributed:
            raise RuntimeError("vit bench times one process; run it without torchrun")
        rt.seed_everything()
        step = TrainStep(cfg, cfg.data.num_classes, rt, quiet)
        times = cost.time_steps(step, cost.synthetic_batch(cfg, rt.device), steps, warmup)
        return cost.measurements(cfg, rt, times, peak)
