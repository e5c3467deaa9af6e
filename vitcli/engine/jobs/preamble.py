"""What every entry point does first: the runtime, the reporter, the data's own splits, the model to run.

- `session`: the runtime the recipe asks for (joining torchrun's process group when launched by it) and
  a reporter that talks on the main process only; the process group is left however the job ends, and
  a failure of this process is published so that no other rank waits for it (`runtime.faults`).
- `with_splits`: a command pointed at data other than its checkpoint's gets `auto` splits from assembly
  (config.AUTO); they are chosen here, when the engine first opens the source, so the choice is the
  source's own: see `vitcli.data.splits`. What each use needs differs: scoring (`eval`) may fall back to
  a source's only split, a few-shot pool needs a held-out test split, training on a source without a
  held-out split holds out the end of its training split (the paper's minival fractions) to evaluate on.
- `checkpoint_record`: the fields every report of a checkpoint opens with, from the record of how its
  model was built (`weights.restore`, the one way from a checkpoint to a model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Literal

import torch

from vitcli.recipe import transfer
from vitcli.recipe.config import AUTO, RecipeCfg
from vitcli.data import load_split
from vitcli.data.splits import default_splits
from vitcli.engine.runtime.faults import collective_error, is_collective_error
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.signals import Interrupted
from vitcli.engine.runtime.progress import Reporter
from vitcli.errors import DataError, RunError, one_of
from vitcli.models import describe
from vitcli.weights.restore import Restored

Use = Literal["eval", "fewshot", "train"]


@contextlib.contextmanager
def session(cfg: RecipeCfg, log: Reporter | None, *,
            precision: str | None = None) -> Iterator[tuple[Runtime, Reporter]]:
    """The job's runtime (in `precision` instead of the recipe's when given) and its reporter (`log`, or
    one that talks on the main process only); the runtime is closed when the job ends, however it ends."""
    rt = Runtime.create(cfg.train.device, precision or cfg.train.precision, cfg.train.seed, cfg.train.timeout)
    try:
        if cfg.data.decode == "gpu" and rt.device.type != "cuda":  # asked for, so not quietly done on the CPU
            raise RunError(f"data.decode: gpu decodes JPEGs on a CUDA device, but this run is on {rt.device.type} "
                           "(torch sees no CUDA GPU); use data.decode: auto (gpu on CUDA, else cpu) or cpu")
        yield rt, log or Reporter(enabled=rt.is_main)
    except BaseException as exc:
        if rt.distributed and is_collective_error(exc):  # waiting for a peer that failed or hangs
            raise collective_error(exc, rt.rank, None, rt.timeout, rt.peers) from None
        if not isinstance(exc, Interrupted):  # a signal stops every rank by itself, at the same step
            rt.failed(exc)  # no other rank waits for this one (runtime/faults.py)
        raise
    finally:
        rt.close()


def with_splits(cfg: RecipeCfg, use: Use, log: Callable[[str], object], *, hold_out: bool = True) -> RecipeCfg:
    """`cfg` with its `auto` data splits chosen from the source's split names (unchanged without any).

    `hold_out=False` (an lr sweep, which carves its own minival from the whole training split): a source
    without a held-out split trains without evaluation instead of holding out part of its training split.
    """
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
    elif hold_out and evaluate is None and d.eval_split == AUTO and d.train_split == AUTO and not d.streaming:
        train, evaluate, why = held_out_part(cfg, train)
        log(f"{d.source}: training on {train!r}, evaluating on {evaluate!r}, {why} (its splits: {names})")
    else:
        shown = f"evaluating on {evaluate!r}" if evaluate else "no held-out split, so no evaluation"
        log(f"{d.source}: training on {train!r}, {shown} (its splits: {names})")
    return replace(cfg, data=replace(d, train_split=train or d.train_split, eval_split=evaluate))


def held_out_part(cfg: RecipeCfg, train: str) -> tuple[str, str, str]:
    """A source with no held-out split: (train part, held-out part, why), cut from the end of `train` in
    the paper's minival fractions (transfer.py: 2% for data sets it does not name), at least one image."""
    size = load_split(cfg.data.source, train, labels=False).num_examples or 0
    fraction, _ = transfer.minival_fraction(cfg.data.source, cfg.sweep.minival)
    held = min(max(1, round(size * fraction)), size - 1)
    if held < 1:
        raise DataError(f"data.source {cfg.data.source!r} split {train!r} holds {size} image(s): too few to hold "
                        "any out for evaluation; add images, or name splits with --set data.eval_split=...")
    cut = size - held
    return f"{train}[:{cut}]", f"{train}[{cut}:]", f"the last {held} of its {size} images held out ({fraction:.0%})"


def checkpoint_record(cfg: RecipeCfg, model: torch.nn.Module, done: Restored, **between) -> dict:
    """The fields a report of a checkpoint opens with, from what `restore` did: the file the weights came
    from, the model, its resolution, which weights and any position-embedding resampling; `between` goes
    after the model."""
    return {"checkpoint": str(done.file), "model": describe(cfg.model, model.num_classes)["variant"],
            **between, "res": list(cfg.model.res), "weights": done.weights, "posemb_resampled": done.posemb_resampled}
