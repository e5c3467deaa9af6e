"""Training length: the keys that give it, its one conversion to steps, and the choice for a fine-tune
that gives none. The engine counts optimiser steps only; recipes may say steps, epochs or examples.

`resolve_length` runs once per run, after the training split is open (an epoch or the paper's rule for
an unknown data set needs its size) and before recipe.json, the checkpoints and config.json record the
recipe: what they say is what ran.
"""

from __future__ import annotations

from dataclasses import replace

from vitcli.errors import RecipeError
from vitcli.recipe import transfer
from vitcli.recipe.config import RecipeCfg, TrainCfg

LENGTH_KEYS = ("steps", "epochs", "examples")  # the TrainCfg fields that give a length; at most one is set
DOTTED = tuple(f"train.{key}" for key in LENGTH_KEYS)  # the same, as recipe paths (--set, resume checks)


def given(train: TrainCfg) -> list[str]:
    """The length keys a recipe sets (a checked recipe sets at most one)."""
    return [key for key in LENGTH_KEYS if getattr(train, key) is not None]


def one_length(data: dict, named) -> None:
    """`--set train.steps=20` on a recipe that says `epochs: 40` means 20 steps, not a conflict: a length
    given on the command line (`named`: the dotted keys set) replaces the file's length in another unit."""
    keep = [k for k, path in zip(LENGTH_KEYS, DOTTED) if path in named]
    train = data.get("train")
    if keep and isinstance(train, dict):
        for key in LENGTH_KEYS:
            if key not in keep:
                train.pop(key, None)


def resolve_steps(train: TrainCfg, num_examples: int | None) -> int:
    """Turn the recipe's training length (steps, epochs or examples) into optimiser steps.

    The one place where training length changes unit. An epoch is `num_examples / batch_size` steps,
    rounded up so that a partial last batch still trains. No length: zero steps (evaluation only).
    """
    if train.steps is not None:
        return train.steps
    if train.examples is not None:
        return max(1, -(-train.examples // train.batch_size))
    if train.epochs is not None:
        if num_examples is None:
            raise RecipeError(
                "train.epochs needs the dataset size, which a streaming dataset does not know: "
                "give train.steps or train.examples instead"
            )
        return max(1, int(-(-train.epochs * num_examples // train.batch_size)))
    return 0


def resolve_length(cfg: RecipeCfg, num_examples: int | None) -> tuple[RecipeCfg, str]:
    """The recipe as it will run, and a sentence for the log ('' when the recipe already said).

    A fine-tune (`train.init_from`) that gives no length trains the paper's (transfer.py), written into
    `train.steps`; its warm-up is cut to 10% of the run when longer (the defaults' 500 warm-up steps
    would be a whole 500-step run). Any other recipe is returned unchanged.
    """
    train = cfg.train
    if not train.init_from or given(train):
        return cfg, ""
    steps, why = transfer.finetune_steps(cfg.data.source, num_examples, train.batch_size)
    schedule, note = cfg.schedule, ""
    if schedule.warmup_steps > steps // 10:
        note = f"; warmup {schedule.warmup_steps} -> {steps // 10} steps (10% of the run)"
        schedule = replace(schedule, warmup_steps=steps // 10)
    resolved = replace(cfg, train=replace(train, steps=steps), schedule=schedule)
    return resolved, (f"fine-tuning length: {steps} steps at batch {train.batch_size} ({why}{note}); "
                      "train.steps, train.epochs or train.examples choose another")
