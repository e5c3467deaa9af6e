"""Cheap checks on a split's labels, read from its Arrow column before any image is decoded.

They run when an evaluator or a loader is set up, so a label outside the head or a class too small
for the shots asked for fails in a second, not after minutes of feature extraction or training.
"""

from __future__ import annotations

import numpy as np

from vitcli.data.source import Split, label_range
from vitcli.errors import DataError


def check_labels(split: Split) -> None:
    """Every label of a map-style split fits its classes (through its label map); streaming: no-op."""
    if split.num_examples is None:
        return  # a stream is checked batch by batch as it is read
    limit = split.num_classes if split.label_map is None else len(split.label_map)
    low, high = label_range(split.dataset, split.label_column)
    if low < 0 or high >= limit:
        raise_label(split.where, low if low < 0 else high, limit)


def raise_label(where: str, value: int, num_classes: int):
    """The one-line error for a label outside [0, num_classes)."""
    hint = " (an unlabelled split?)" if value < 0 else "; set num_classes to cover every label"
    raise DataError(f"{where}: label {value} is outside [0, {num_classes}) for num_classes={num_classes}{hint}")


def class_counts(split: Split) -> np.ndarray | None:
    """Images per class (model output order, through the label map) of a map-style split; None when streaming."""
    if split.num_examples is None:
        return None
    check_labels(split)
    labels = split.dataset.with_format("arrow")[split.label_column].to_numpy().astype(np.int64)
    if split.label_map is not None:
        labels = np.asarray(split.label_map, dtype=np.int64)[labels]
    return np.bincount(labels, minlength=split.num_classes)
