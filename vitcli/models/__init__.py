"""The paper's Vision Transformers on timm modules: variants, model, position embeddings.

The torch-free half (`variants`) is imported eagerly; the rest is imported on first use, because the CLI
imports this package to list models and check recipes, and importing torch takes seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vitcli.models.variants import (
    Variant,
    buildable,
    count_params,
    grid,
    macs,
    resolve_variant,
    seq_len,
    zoo,
)

_LAZY = {
    "ViT": "vit",
    "PreLogits": "vit",
    "build_model": "vit",
    "describe": "vit",
    "param_groups_no_decay": "vit",
    "resample_posemb": "posemb",
}

__all__ = ["Variant", "buildable", "count_params", "grid", "macs", "resolve_variant", "seq_len", "zoo", *_LAZY]

if TYPE_CHECKING:
    from vitcli.models.posemb import resample_posemb
    from vitcli.models.vit import (
        PreLogits,
        ViT,
        build_model,
        describe,
        param_groups_no_decay,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vitcli.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vitcli.models' has no attribute {name!r}")
