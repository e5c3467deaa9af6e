"""Classification metrics that add up across batches and across distributed ranks.

A `ClassificationMeter` keeps only sums (images, summed loss, top-1/top-5 hits, per-class hits, totals
and predictions, and the confusion matrix of counts), so two meters merge by addition and a whole meter travels as one float64 tensor: each rank
calls `to_tensor()`, the trainer all-reduces it with SUM, and `from_tensor()` rebuilds the global
meter. Ratios are taken only in `compute()`, after all the sums are in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vitcli.errors import DataError

# Slots of the flat state tensor before the per-class blocks (hits, images, predictions per class, then
# the confusion matrix, true class major).
_COUNT, _LOSS, _TOP1, _TOP5 = range(4)
_HEADER = 4
# Above this many classes the C x C confusion matrix is not kept: at 21,843 classes (ImageNet-21k) it
# would be 3.8 GB of float64 on every rank, and no one reads a matrix that size.
CONFUSION_MAX_CLASSES = 1000


def _state_size(num_classes: int) -> int:
    confusion = num_classes * num_classes if num_classes <= CONFUSION_MAX_CLASSES else 0
    return _HEADER + 3 * num_classes + confusion


class ClassificationMeter:
    """Running top-1, top-5, cross-entropy loss, per-class recall (top-1) and precision, and the
    confusion matrix (up to `CONFUSION_MAX_CLASSES` classes) of a classifier.

    Sums are kept on the CPU in float64 so millions of images add up without rounding drift;
    per-batch statistics are computed on the logits' own device and moved over once per batch.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise DataError(f"a classifier needs at least 1 class, got num_classes={num_classes}")
        self.num_classes = num_classes
        # top-5 is meaningless beyond the number of classes; k=min(5, C) keeps 2-class tasks valid.
        self.topk = min(5, num_classes)
        self.has_confusion = num_classes <= CONFUSION_MAX_CLASSES
        self._state = torch.zeros(_state_size(num_classes), dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add one batch: `logits` [B, C] (any float dtype, any device) and integer `labels` [B]."""
        self._check_batch(logits, labels)
        if labels.numel() == 0:
            return
        labels = labels.to(logits.device, torch.long)
        logits = logits.detach().float()
        top = logits.topk(self.topk, dim=1).indices
        hits = top == labels[:, None]
        # The first top-k column is the argmax, so top-1 and top-5 agree on ties.
        top1 = hits[:, 0]
        C = self.num_classes
        # Per-image losses are float32; their sum is float64 so a large batch loses no digits.
        loss = F.cross_entropy(logits, labels, reduction="none").double().sum()
        header = torch.stack(
            [
                torch.tensor(float(labels.numel()), dtype=torch.float64, device=logits.device),
                loss,
                top1.sum().double(),
                hits.any(dim=1).sum().double(),
            ]
        )
        predicted = top[:, 0]
        per_class = [torch.bincount(labels[top1], minlength=C), torch.bincount(labels, minlength=C),
                     torch.bincount(predicted, minlength=C)]
        if self.has_confusion:
            per_class.append(torch.bincount(labels * C + predicted, minlength=C * C))
        batch = torch.cat([header, *(p.double() for p in per_class)])
        # One device-to-host copy per batch instead of one per statistic.
        self._state += batch.to("cpu", torch.float64)

    def _check_batch(self, logits: Tensor, labels: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise DataError(
                f"logits of shape {tuple(logits.shape)} do not fit a {self.num_classes}-class "
                f"meter: expected [batch, {self.num_classes}]"
            )
        if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise DataError(
                f"labels of shape {tuple(labels.shape)} for {logits.shape[0]} logits rows: "
                "expected one integer label per row"
            )
        if labels.numel() == 0:
            return
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(f"label {bad} is outside the classes 0..{self.num_classes - 1}")

    def merge(self, other: ClassificationMeter) -> ClassificationMeter:
        """Add another meter's sums into this one (same number of classes) and return self."""
        if other.num_classes != self.num_classes:
            raise DataError(
                f"cannot merge a {other.num_classes}-class meter into a {self.num_classes}-class one"
            )
        self._state += other._state
        return self

    def to_tensor(self) -> Tensor:
        """The meter's sums as one float64 tensor [4 + 3C (+ C*C)], ready for an all-reduce with SUM."""
        return self._state.clone()

    @classmethod
    def from_tensor(cls, t: Tensor, num_classes: int) -> ClassificationMeter:
        """Rebuild a meter from `to_tensor()` output (possibly summed over ranks)."""
        expected = _state_size(num_classes)
        if t.ndim != 1 or t.numel() != expected:
            raise DataError(
                f"meter state of shape {tuple(t.shape)} does not fit {num_classes} classes: "
                f"expected [{expected}]"
            )
        meter = cls(num_classes)
        meter._state = t.detach().to("cpu", torch.float64).clone()
        return meter

    @property
    def images(self) -> int:
        """Number of images seen so far."""
        return int(self._state[_COUNT])

    def compute(self) -> dict[str, float]:
        """Return {"top1", "top5", "loss", "images"}: accuracies in [0, 1], the mean loss, the image count."""
        n = self._state[_COUNT].item()
        if n == 0:
            raise DataError("no images were evaluated: the evaluation data yielded 0 labelled images")
        return {
            "top1": self._state[_TOP1].item() / n,
            "top5": self._state[_TOP5].item() / n,
            "loss": self._state[_LOSS].item() / n,
            "images": int(n),
        }

    def _block(self, i: int) -> Tensor:
        C = self.num_classes
        return self._state[_HEADER + i * C : _HEADER + (i + 1) * C]

    def _names(self, class_names: list[str] | None) -> list[str]:
        if class_names is not None and len(class_names) != self.num_classes:
            raise DataError(
                f"{len(class_names)} class names given for a {self.num_classes}-class meter"
            )
        return list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]

    def per_class_top1(self, class_names: list[str] | None = None) -> dict[str, float]:
        """Top-1 accuracy (recall) of each class that had images, keyed by class name (or index as text)."""
        names = self._names(class_names)
        correct, total = self._block(0), self._block(1)
        return {names[c]: correct[c].item() / total[c].item() for c in torch.nonzero(total).flatten().tolist()}

    def per_class_precision(self, class_names: list[str] | None = None) -> dict[str, float]:
        """Of the images predicted as each class, the fraction that are that class.

        Keyed like `per_class_top1`, for every class that had images or predictions; a class that was
        never predicted scores 0 (scikit-learn's convention), so every value is a number.
        """
        names = self._names(class_names)
        correct, total, predicted = self._block(0), self._block(1), self._block(2)
        seen = torch.nonzero(total + predicted).flatten().tolist()
        return {names[c]: correct[c].item() / predicted[c].item() if predicted[c] > 0 else 0.0 for c in seen}

    def confusion(self) -> list[list[int]] | None:
        """Counts [true class][predicted class], or None above `CONFUSION_MAX_CLASSES` classes."""
        if not self.has_confusion:
            return None
        C = self.num_classes
        return self._state[_HEADER + 3 * C :].reshape(C, C).long().tolist()
