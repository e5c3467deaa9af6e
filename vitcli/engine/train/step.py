"""One training step, public: what `fit()`, `vit bench` and the benchmarks all run.

A `TrainStep` holds the model of a recipe (built, initialised, frozen, averaged and wrapped: `ModelSetup`),
its optimiser and the objective that turns a batch into a loss, and runs one optimiser step on a list of
micro-batches: autocast in the runtime's precision, gradient accumulation (the summed gradient is the
global batch's mean), clipping, a non-finite check that every process agrees on, the update and the EMA
update. It reads no data and writes nothing: loaders, evaluation, checkpoints and logs are the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from vitcli.recipe.config import RecipeCfg
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train import optim
from vitcli.engine.train.model_setup import ModelSetup, setup_model
from vitcli.engine.train.objectives import build_objective
from vitcli.weights.reader import Pretrained


@dataclass
class StepResult:
    """What one step measured: this process's share, as tensors (reading them syncs the device)."""

    loss: torch.Tensor  # mean loss over the micro-batches of this process
    grad_norm: torch.Tensor  # global gradient norm before clipping
    lr: float
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # the objective's own figures
    applied: bool = True  # False when the update was skipped as non-finite


# Called with (loss, grad norm) when either is not finite on some process; it raises to stop the run, or
# returns to skip this update. Without one, the update is skipped.
NonFiniteHook = Callable[[torch.Tensor, torch.Tensor], None]


class TrainStep:
    """A recipe's model, optimiser and objective, and the one optimiser step they take together."""

    def __init__(self, cfg: RecipeCfg, num_classes: int, rt: Runtime, log: Reporter, *, objective=None,
                 on_nonfinite: NonFiniteHook | None = None, init: Pretrained | None = None):
        self.cfg, self.rt = cfg, rt
        self.objective = objective if objective is not None else build_objective(cfg, num_classes)
        self.setup: ModelSetup = setup_model(cfg, num_classes, rt, log, prepare=self.objective.prepare, init=init)
        self.peak_lr = float(cfg.optim.lr if not isinstance(cfg.optim.lr, tuple) else cfg.optim.lr[0])
        self.optimizer = optim.build_optimizer(self.setup.trainable, cfg.optim, self.peak_lr)
        self.on_nonfinite = on_nonfinite

    def run(self, micro_batches: list, lr: float, step: int) -> StepResult:
        """One optimiser step at learning rate `lr` on `micro_batches` [(images, labels), ...].

        `step` is the number of updates done before this one (the EMA's warm-up counts them).
        """
        model, rt = self.setup.train_model, self.rt
        optim.set_lr(self.optimizer, lr)
        model.train()
        loss_sum = torch.zeros((), device=rt.device)
        extra_sum: dict[str, torch.Tensor] = {}
        for i, (images, labels) in enumerate(micro_batches):
            images = images.to(rt.device, non_blocking=True)
            labels = labels.to(rt.device, non_blocking=True)
            with self.setup.no_sync(i < len(micro_batches) - 1), rt.autocast():
                loss, extra = self.objective.loss(model, images, labels)
            # Each micro-batch's mean loss is divided by the number of micro-batches, so the summed
            # gradient is the gradient of the mean over the whole global batch.
            loss = loss / len(micro_batches)
            loss.backward()
            loss_sum += loss.detach()
            for name, value in extra.items():
                extra_sum[name] = extra_sum.get(name, 0.0) + value.detach().float() / len(micro_batches)
        result = StepResult(loss_sum, self._clip(), lr, extra_sum)
        result.applied = self._finite(result)
        if result.applied:
            self.optimizer.step()
            self.setup.update_ema(step)
        self.optimizer.zero_grad(set_to_none=True)
        return result

    def _clip(self) -> torch.Tensor:
        clip = self.cfg.optim.clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.setup.trainable.parameters(),
                                                   clip if clip else float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a replicated DTensor
            grad_norm = grad_norm.full_tensor()
        return grad_norm

    def _finite(self, result: StepResult) -> bool:
        finite = torch.isfinite(result.loss + result.grad_norm).float()
        if self.rt.distributed:  # every rank must take the same decision, or DDP falls out of step
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if bool(finite):
            return True
        if self.on_nonfinite is not None:
            self.on_nonfinite(result.loss, result.grad_norm)
        return False
