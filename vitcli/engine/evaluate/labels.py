"""Matching a data split's classes to a model's outputs, by name where both sides have names.

Scoring a head on data it was not trained for gives a number, not an error: a 1000-class head on
CIFAR-10 scores 0%, and an image folder that lacks one class shifts every later label by one. So the
rule is: the same names in the same order are used as they are; names that are a subset of the head's
are mapped onto the head's outputs; anything else is refused, unless the user asks to score by class
index anyway (`ignore`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from vitcli.data import Split
from vitcli.errors import DataError, one_of

_SHOWN = 3  # mismatching names quoted in an error
_HINT = "fine-tune on this data first (vit finetune), or pass --ignore-labels to score by class index anyway"


def align(split: Split, head: int, names: Sequence[str] | None, *, ignore: bool = False,
          whose: str = "the model's head", hint: str | None = None,
          log: Callable[[str], object] | None = None) -> Split:
    """`split` with `num_classes == head`, the head's class names, and a label map when names differ.

    `names` are the head's class names in output order (None: not known). Raises DataError with one
    line when the data's classes cannot be matched to the head's outputs.
    """
    names = list(names) if names is not None else None
    if names is not None and len(names) != head:
        names = None  # a description that does not fit the head cannot be trusted to match by
    data = split.class_names
    if ignore:
        return _by_index(split, head, names, whose)
    if names is not None and data is not None:
        if list(data) == names:
            return split
        missing = [n for n in data if n not in names]
        if missing:
            raise DataError(
                f"{split.where}: its class names differ from {whose}'s: {len(missing)} of {len(data)} are not "
                f"among its {head} classes ({one_of(missing[:_SHOWN])}{', ...' if len(missing) > _SHOWN else ''}; "
                f"{whose} has {one_of(names[:_SHOWN])}{', ...' if head > _SHOWN else ''}); {hint or _HINT}")
        lut = tuple(names.index(n) for n in data)
        if log is not None:
            log(f"{split.where}: {len(data)} classes matched by name to {whose}'s {head}")
        return dataclasses.replace(split, num_classes=head, class_names=names, label_map=lut)
    # Labels without names are class indices by nature (their count is the largest label + 1, a
    # guess): they fit any head at least that wide. Named data on an unnamed head of another width
    # is the trap this module exists for (a 1000-class head scored on CIFAR-10).
    if split.num_classes > head or (data is not None and split.num_classes != head):
        hint = hint or ("evaluate on the data the head was trained for or fine-tune first (vit finetune)"
                        if split.num_classes > head else _HINT)
        side = "the data has" if names is not None else "the checkpoint has"
        raise DataError(f"{split.where} has {split.num_classes} classes but {whose} has {head}, and {side} "
                        f"no class names to match them by; {hint}")
    return _by_index(split, head, names, whose)


def _by_index(split: Split, head: int, names: list[str] | None, whose: str) -> Split:
    """--ignore-labels: data label i is scored as output i; only labels beyond the head are refused."""
    if split.num_classes > head:
        raise DataError(f"{split.where} has {split.num_classes} classes but {whose} has {head}; even by "
                        "class index its labels do not fit: fine-tune first (vit finetune)")
    data = split.class_names
    shown = names or (data and [*data, *map(str, range(len(data), head))])
    return dataclasses.replace(split, num_classes=head, class_names=shown, label_map=None)
