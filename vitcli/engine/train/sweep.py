"""The paper's learning-rate sweep (Appendix B.1.1): choose on a minival, retrain on all of train, test.

`--set optim.lr=[0.001,0.003,0.01,0.03]` trains each value on the first part of the training split and
evaluates it on the held-out rest, the minival (`sweep.minival`, by default the paper's fraction for the
data set: 10% Pets and Flowers, 2% CIFAR, 1% ImageNet, else 2%); the test split is never used to choose.
"For final results we train on the entire training set and evaluate on the respective test data": the
chosen value is trained once more on the whole split (`final/`) and that model is reported on
`data.eval_split`. `sweep.retrain: false` (`--no-retrain`) keeps the minival winner instead, trained on
less data: cheaper, and not the paper's protocol.

Each run is a directory of its own under `--out`, so an interrupted sweep resumes where it stopped;
finished runs are not trained again. The chosen run's weights are copied to `--out` itself.

This module holds the sweep's parts (the minival, each run's recipe, the choice, the rows of sweep.json);
the entry point that trains and evaluates them is `engine/jobs/lr_sweep.py`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from vitcli import files, formats
from vitcli.recipe import schema, transfer
from vitcli.recipe.config import RecipeCfg, SweepCfg
from vitcli.recipe.length import resolve_length
from vitcli.engine.persistence import rundir
from vitcli.errors import RecipeError

_KEPT = ("model.safetensors", "model_ema.safetensors", "config.json")
NOT_PAPER = "not the paper's protocol, which retrains the chosen lr on the whole training split"


def is_sweep(cfg: RecipeCfg) -> bool:
    """True when the recipe lists more than one learning rate."""
    return isinstance(cfg.optim.lr, tuple) and len(cfg.optim.lr) > 1


def minival_splits(cfg: RecipeCfg) -> tuple[str, str, float, str]:
    """(train part, minival, fraction, why that fraction), carved from the end of `data.train_split`.

    The train split must be whole splits (`train`, or `train+validation` as Flowers-102 and Pets are
    trained): split expressions cannot slice a slice, and a test split that overlaps it would report a
    number measured on training images. Of a union, the same fraction is held out of each split (so of
    the whole): `train[:90%]+validation[:90%]` trains, `train[90%:]+validation[90%:]` chooses.
    """
    d = cfg.data
    train = d.train_split.strip()
    parts = [part.strip() for part in train.split("+")]
    if "[" in train or not all(parts):
        raise RecipeError(f"data.train_split {train!r}: an lr sweep carves its minival from whole splits; give "
                          "their names (e.g. 'train' or 'train+validation') and the held-out fraction as "
                          "sweep.minival")
    tested = {part.partition("[")[0].strip() for part in (d.eval_split or "").split("+")}
    if tested & set(parts):
        raise RecipeError(f"data.eval_split {d.eval_split!r} is part of data.train_split {train!r}, on which the "
                          "final model is retrained; give a separate test split (e.g. 'test') or null, and the "
                          "minival fraction as sweep.minival")
    fraction, why = transfer.minival_fraction(d.source, cfg.sweep.minival)
    keep = f"{round(100 * (1 - fraction))}%"
    return ("+".join(f"{part}[:{keep}]" for part in parts), "+".join(f"{part}[{keep}:]" for part in parts),
            fraction, why)


MIN_MINIVAL = 10  # images: below this a minival top-1 moves in steps of 10% or more, and chance decides


def check_minival(cfg: RecipeCfg, val_split: str, fraction: float) -> None:
    """Refuse a minival too small to choose on: with one image, every lr scores 0% or 100%."""
    from vitcli.data import load_split

    d = cfg.data
    split = load_split(d.source, val_split, image_column=d.image_column, label_column=d.label_column,
                       num_classes=d.num_classes, streaming=d.streaming)
    n, classes = split.num_examples, split.num_classes or 0
    if n is not None and n < max(MIN_MINIVAL, classes):
        need = max(MIN_MINIVAL, classes)
        raise RecipeError(f"sweep.minival: the minival {val_split} of {d.source} holds {formats.plural(n, 'image')} "
                          f"({fraction:.0%} of the split), too few to choose a learning rate on (its top-1 moves in "
                          f"steps of {1 / max(n, 1):.0%}); a minival needs at least {need} images (10, and one per "
                          "class): give a larger sweep.minival, e.g. --set sweep.minival=0.1, or more training data")


def one_run(cfg: RecipeCfg, lr: float, train_split: str, eval_split: str | None) -> RecipeCfg:
    """One run of the sweep: a single lr on the given splits. Its sweep section is the default, so that a
    --no-retrain sweep and a full one share their finished minival runs."""
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr), sweep=SweepCfg(),
                               data=dataclasses.replace(cfg.data, train_split=train_split, eval_split=eval_split))


def final_metric(result: dict, name: str) -> float | None:
    """The run's final metric, of its EMA weights when it kept them (as `vit eval` reports by default)."""
    return result.get(f"ema_{name}", result.get(name))


def image_count(value: float | None) -> int | None:
    """An image count read back from JSON (a float there) as an int."""
    return None if value is None else int(value)


def minival_row(lr: float, result: dict, run_dir: Path) -> dict:
    """One learning rate's line of sweep.json: its minival numbers and what it trained."""
    return {"lr": lr, "minival_top1": final_metric(result, "top1"), "minival_loss": final_metric(result, "loss"),
            "minival_images": image_count(final_metric(result, "images")),
            "train_examples": result.get("train_examples"), "steps": result.get("steps"), "out": str(run_dir)}


def choose(table: list[dict]) -> tuple[dict, str]:
    """The row with the best minival top-1; a tie goes to the lower minival loss, then the first listed.

    Returns the row and a sentence saying which lr won and why, for the log and the table.
    """
    def key(row):
        top1, loss = row["minival_top1"], row["minival_loss"]
        return (top1 if top1 is not None else -1.0, -(loss if loss is not None else float("inf")))

    best = max(table, key=key)  # max keeps the first of equal keys
    tied = [r for r in table if r is not best and r["minival_top1"] == best["minival_top1"]]
    top1 = best["minival_top1"]
    if top1 is None:
        return best, f"lr {best['lr']:g} chosen: no run reported a minival top-1 (first listed)"
    if not tied:
        return best, f"lr {best['lr']:g} chosen: highest minival top-1 ({formats.percent(top1)})"
    others = ", ".join(f"{r['lr']:g}" for r in tied)
    if all(r["minival_loss"] == best["minival_loss"] for r in tied):
        return best, (f"lr {best['lr']:g} chosen: minival top-1 {formats.percent(top1)} and loss tied with lr "
                      f"{others}; the first listed wins")
    losses = ", ".join(f"{r['minival_loss']:.4f}" for r in tied)
    return best, (f"lr {best['lr']:g} chosen: minival top-1 {formats.percent(top1)} tied with lr {others}; "
                  f"the lower minival loss breaks the tie ({best['minival_loss']:.4f} vs {losses})")


def final_row(cfg: RecipeCfg, lr: float, result: dict, run_dir: Path) -> dict:
    """The retrained model: trained on all of train, its test numbers from the run's own final evaluation."""
    row = {"lr": lr, "out": str(run_dir), "train_split": cfg.data.train_split,
           "train_examples": result.get("train_examples"), "steps": result.get("steps"),
           "test_split": cfg.data.eval_split}
    if cfg.data.eval_split:
        row.update(test_top1=final_metric(result, "top1"), test_top5=final_metric(result, "top5"),
                   test_loss=final_metric(result, "loss"), test_images=image_count(final_metric(result, "images")))
    return row


def finished(run_dir: Path, sub: RecipeCfg) -> dict | None:
    """The results of a run that already went to the end with exactly this recipe, else None."""
    done, saved = run_dir / "results.json", run_dir / "recipe.json"
    if not (done.is_file() and saved.is_file()):
        return None
    result = json.loads(done.read_text())
    # The run recorded its recipe with the length resolved from the size of the split it trained on.
    size = result.get("train_examples") if isinstance(result, dict) else None
    ran, _ = resolve_length(sub, size if isinstance(size, int) else None)
    if rundir.diff(json.loads(saved.read_text()), schema.to_dict(ran)):
        return None  # changed recipe: jobs.train's resume check accepts or refuses it with the keys named
    return result


def keep_winner(best: Path, out: Path) -> None:
    """Copy the kept run's final weights and config to the sweep directory, so it reads as a run directory."""
    for name in _KEPT:
        if (best / name).is_file():
            data = (best / name).read_bytes()
            files.atomic_write(out / name, lambda f, data=data: f.write(data))


def unretrained_row(cfg: RecipeCfg, best: dict, train_split: str) -> dict:
    """--no-retrain: the minival winner as it is (its test numbers are added when there is a test split)."""
    return {"lr": best["lr"], "out": best["out"], "train_split": train_split, "not_retrained": NOT_PAPER,
            "train_examples": best.get("train_examples"), "steps": best.get("steps"),
            "test_split": cfg.data.eval_split}
