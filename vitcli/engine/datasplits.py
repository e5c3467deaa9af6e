"""Turning `auto` split expressions into the data source's own splits, saying in one line which.

A command pointed at data other than its checkpoint's gets `auto` splits from assembly (config.AUTO);
they are chosen here, when the engine first opens the source, so the choice is the source's own:
see `vitcli.data.splits`. What each use needs differs: scoring (`eval`) may fall back to a source's
only split, a few-shot pool needs a held-out test split, training goes without evaluation when there
is no held-out split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from vitcli.recipe.config import AUTO, RecipeCfg
from vitcli.data.splits import default_splits
from vitcli.errors import DataError, one_of

Use = Literal["eval", "fewshot", "train"]


def with_splits(cfg: RecipeCfg, use: Use, log: Callable[[str], object]) -> RecipeCfg:
    """`cfg` with its `auto` data splits chosen from the source's split names (unchanged without any)."""
    d = cfg.data
    if AUTO not in (d.train_split, d.eval_split):
        return cfg
    chosen = default_splits(d.source)
    names = one_of(chosen.names)
    where = f"data.source {d.source!r} (splits {names})"
    train, evaluate = d.train_split, d.eval_split
    if train == AUTO:
        train = chosen.train or chosen.only
        if train is None and use != "eval":
            raise DataError(f"{where} has no 'train' split to {'draw shots from' if use == 'fewshot' else 'train on'}; "
                            f"name one with {'--train-split' if use == 'fewshot' else '--set data.train_split=...'}")
    if evaluate == AUTO:
        evaluate = chosen.held_out or (chosen.only if use == "eval" else None)
        if evaluate is None and use == "eval":
            raise DataError(f"{where} has no 'test' or 'validation' split; choose one with --split")
        if evaluate is None and use == "fewshot":
            raise DataError(f"{where} has no held-out split for the few-shot test: give --train-split and "
                            "--split (e.g. an image folder with train/ and test/ sub-folders has both)")
    if use == "eval":
        log(f"{d.source}: evaluating on split {evaluate!r} (its splits: {names})")
    elif use == "fewshot":
        log(f"{d.source}: few-shot examples from {train!r}, tested on {evaluate!r} (its splits: {names})")
    else:
        shown = f"evaluating on {evaluate!r}" if evaluate else "no held-out split, so no evaluation"
        log(f"{d.source}: training on {train!r}, {shown} (its splits: {names})")
    return replace(cfg, data=replace(d, train_split=train or d.train_split, eval_split=evaluate))
