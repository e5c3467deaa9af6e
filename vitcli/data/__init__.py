"""Data: Hugging Face `datasets` sources, image transforms and loaders.

Knows nothing of recipes, YAML, the CLI or models: callers pass a `DataCfg` and plain values. `SourceRef`
(torch-free) is imported eagerly; the rest on first use, because the recipe layer reads data-source
strings with it at CLI import time, and importing torch takes seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vitcli.data.ref import SourceRef

_LAZY = {
    "ImageLoader": "loader",
    "ShardedSampler": "loader",
    "eval_loader": "loader",
    "train_loader": "loader",
    "Split": "source",
    "load_split": "source",
    "eval_transform": "transforms",
    "mixup_fn": "transforms",
    "train_transform": "transforms",
}

__all__ = ["ImageLoader", "ShardedSampler", "SourceRef", "Split", "eval_loader", "eval_transform", "load_split",
           "mixup_fn", "train_loader", "train_transform"]

if TYPE_CHECKING:
    from vitcli.data.loader import ImageLoader, ShardedSampler, eval_loader, train_loader
    from vitcli.data.source import Split, load_split
    from vitcli.data.transforms import eval_transform, mixup_fn, train_transform


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vitcli.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vitcli.data' has no attribute {name!r}")
