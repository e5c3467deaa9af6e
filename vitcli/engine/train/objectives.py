"""Training objectives: what a step computes from a batch. One contract for every objective:

    objective.prepare(model)                  add the objective's own parts to a freshly built model
    objective.loss(model, images, labels)     -> (scalar loss, {metric name: scalar tensor})

`model` is what the loop calls (possibly DDP/FSDP-wrapped or compiled), so every forward goes through
its `__call__`. Objectives draw randomness from the default generators, which checkpoints save and
restore, so a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitcli.recipe.config import RecipeCfg
from vitcli.data import mixup_fn
from vitcli.data.transforms import norm_stats
from vitcli.models import masked, resolve_variant
from vitcli.models.variants import mpp_outputs


class Supervised:
    """Cross-entropy on class labels, with label smoothing and mixup/cutmix as the recipe says."""

    needs_labels = True

    def __init__(self, cfg: RecipeCfg, num_classes: int) -> None:
        self.smoothing = cfg.train.label_smoothing
        self.mixup = mixup_fn(cfg.data, num_classes, cfg.train.label_smoothing)

    def prepare(self, model: nn.Module) -> None:
        """Nothing to add: the classification head is the model's own."""

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        """Mean cross-entropy of the batch; soft targets when mixup/cutmix made them."""
        if self.mixup is not None:
            images, labels = self.mixup(images, labels)
        logits = model(images).float()
        if labels.dim() == 2:  # soft targets from mixup/cutmix (label smoothing folded in)
            return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean(), {}
        return F.cross_entropy(logits, labels, label_smoothing=self.smoothing), {}


class MaskedPatch:
    """The paper's masked patch prediction: labels are ignored (`needs_labels` is False).

    Metrics: `mpp_loss` and, for the colour targets, `mpp_acc` (fraction of predicted classes right).
    """

    needs_labels = False

    def __init__(self, cfg: RecipeCfg) -> None:
        self.cfg = cfg.mpp
        self.patch = resolve_variant(cfg.model).patch
        mean, std = norm_stats(cfg.data, cfg.model.in_chans)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.outputs = mpp_outputs(self.cfg.target, self.patch, self.cfg.bits)

    def prepare(self, model: nn.Module) -> None:
        """Give the model its [mask] embedding and prediction head."""
        model.enable_masked_patch(self.outputs)

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        """Corrupt, predict the corrupted patches' targets, and score them."""
        del labels  # self-supervised
        b, _, h, w = images.shape
        c = self.cfg
        corruption = masked.sample_corruption(b, (h // self.patch) * (w // self.patch), c.corrupt, c.mask,
                                              c.random, device=images.device)
        pred = model(images, corruption=corruption).float()
        with torch.no_grad():
            pixels01 = images.float() * self.std.to(images.device) + self.mean.to(images.device)
            target = masked.make_target(c.target, pixels01, images.float(), self.patch, c.bits)
            target = target[corruption.selected]
        if c.target == "pixels":
            loss = F.mse_loss(pred, target)
            return loss, {"mpp_loss": loss.detach()}
        logits = pred.view(-1, 1 << (3 * c.bits))
        target = target.reshape(-1)
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        return loss, {"mpp_loss": loss.detach(), "mpp_acc": acc}


def build_objective(cfg: RecipeCfg, num_classes: int):
    """The objective `train.objective` names."""
    if cfg.train.objective == "masked_patch":
        return MaskedPatch(cfg)
    return Supervised(cfg, num_classes)
