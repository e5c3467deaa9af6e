"""The paper's transfer protocol per data set (Appendix B.1.1 and Table 4), looked up by data source.

"We use small sub-splits from the training set (10% for Pets and Flowers, 2% for CIFAR, 1% ImageNet) as
development set and train on the remaining data. For final results we train on the entire training set
and evaluate on the respective test data." Table 4 gives the fine-tuning length at batch 512: ImageNet
20,000 steps, CIFAR-10/100 10,000, Pets and Flowers 500, VTAB 2,500.

A data set is recognised by the last part of its source (hub id, local directory or imagefolder path),
lower-cased with punctuation dropped: `uoft-cs/cifar10`, `../shared/data/cifar10` and `CIFAR-10` are all
CIFAR-10. Anything else is unknown and gets the stated fallbacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vitcli.data.ref import SourceRef


@dataclass(frozen=True)
class Known:
    """One of the paper's transfer data sets."""

    name: str  # as the paper names it
    minival: float  # fraction of train held out to choose the learning rate
    steps: int  # fine-tuning steps at batch 512 (Table 4)
    aliases: tuple[str, ...]  # normalised source names that mean this data set


KNOWN = (
    Known("ImageNet", 0.01, 20_000, ("imagenet", "imagenet1k", "ilsvrc2012", "imagenet2012", "ilsvrcimagenet1k")),
    Known("CIFAR-10", 0.02, 10_000, ("cifar10",)),
    Known("CIFAR-100", 0.02, 10_000, ("cifar100",)),
    Known("Oxford-IIIT Pets", 0.10, 500, ("oxfordiiitpet", "oxfordiiitpets", "oxfordpets", "pets", "pet")),
    Known("Oxford Flowers-102", 0.10, 500, ("oxfordflowers", "oxfordflowers102", "flowers102", "flowers")),
)
DEFAULT_MINIVAL = 0.02  # for data sets the paper does not name: its value for the mid-sized CIFAR sets
PAPER_BATCH = 512  # Table 4: every fine-tuning run uses batch 512
# Unknown data sets: 10 epochs, kept within the paper's range of fine-tuning lengths (500-20,000 steps).
DEFAULT_EPOCHS = 10
MIN_STEPS, MAX_STEPS = 500, 20_000


def normalise(source: str) -> str:
    """The comparable name of a data source: its last path part, lower-case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", SourceRef.parse(source).name.lower())


def lookup(source: str) -> Known | None:
    """The paper's data set that `source` holds, or None for a data set the paper does not name."""
    name = normalise(source)
    return next((k for k in KNOWN if name in k.aliases), None)


def minival_fraction(source: str, given: float | None) -> tuple[float, str]:
    """The minival fraction for a sweep on `source` and why: the recipe's, the paper's, or the fallback."""
    if given is not None:
        return given, "sweep.minival"
    known = lookup(source)
    if known is not None:
        return known.minival, f"the paper's value for {known.name}"
    return DEFAULT_MINIVAL, "not one of the paper's data sets: 2% (set sweep.minival to change)"


def finetune_steps(source: str, num_examples: int | None, batch_size: int) -> tuple[int, str]:
    """Fine-tuning length when no recipe gives one: Table 4's steps, rescaled to `batch_size`, or a rule.

    The paper's steps are at batch 512; at another batch the same number of examples is kept. An unknown
    data set trains DEFAULT_EPOCHS epochs, bounded by the paper's shortest and longest schedules (at 512).
    """
    known = lookup(source)
    scale = PAPER_BATCH / batch_size
    if known is not None:
        steps = max(1, round(known.steps * scale))
        return steps, f"Table 4 of the paper for {known.name}: {known.steps} steps at batch {PAPER_BATCH}"
    if num_examples is None:
        steps = max(1, round(MIN_STEPS * scale))
        return steps, f"unknown data set of unknown size (streaming): the paper's shortest, {MIN_STEPS} steps at 512"
    epochs = DEFAULT_EPOCHS * num_examples / PAPER_BATCH
    bounded = min(max(epochs, MIN_STEPS), MAX_STEPS)
    steps = max(1, round(bounded * scale))
    return steps, (f"not one of the paper's data sets: {DEFAULT_EPOCHS} epochs of {num_examples} images, within "
                   f"the paper's {MIN_STEPS}-{MAX_STEPS} steps at batch {PAPER_BATCH}")
