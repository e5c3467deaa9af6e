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
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from vitcli import files, formats
from vitcli.recipe import schema, transfer
from vitcli.recipe.config import RecipeCfg, SweepCfg
from vitcli.engine import jobs
from vitcli.engine.datasplits import with_splits
from vitcli.engine.persistence import rundir
from vitcli.engine.runtime.process import launch_rank
from vitcli.engine.runtime.progress import Reporter
from vitcli.errors import RecipeError, RunError

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


def run_sweep(cfg: RecipeCfg, out: Path, *, resume: bool, allowed: frozenset[str], hint: str,
              log: Reporter | None = None, render: Callable[[dict], str] = jobs.recipe_as_json) -> dict:
    """Run every learning rate on the minival, pick one, retrain it on all of train (unless told not to).

    `render` writes each run's recipe.yaml, as in `jobs.train`.
    """
    out = Path(out)
    # Under torchrun every process runs the sweep; only rank 0 talks (the rule Runtime.create follows).
    log = log or Reporter(enabled=launch_rank() == 0)
    if (out / "recipe.json").is_file():
        raise RunError(f"--out {out}: holds a single run, not a sweep; choose a new --out for the sweep")
    cfg = with_splits(cfg, "train", log.info)  # a new source's own splits, before minival is cut from them
    train_split, val_split, fraction, why = minival_splits(cfg)
    log.info(f"sweep: {len(cfg.optim.lr)} learning rates, each trained on {train_split} and chosen on the "
             f"minival {val_split} ({fraction:.0%}: {why})")
    run = {"resume": resume, "allowed": allowed, "hint": hint, "log": log, "render": render}
    table = []
    for i, lr in enumerate(cfg.optim.lr):
        sub = _with(cfg, lr, train_split, val_split)
        result = _train(sub, out / f"lr-{lr:g}", f"sweep {i + 1}/{len(cfg.optim.lr)}: lr {lr:g}", **run)
        table.append({"lr": lr, "minival_top1": _metric(result, "top1"), "minival_loss": _metric(result, "loss"),
                      "minival_images": _count(_metric(result, "images")),
                      "train_examples": result.get("train_examples"), "steps": result.get("steps"),
                      "out": str(out / f"lr-{lr:g}")})
    best, choice = choose(table)
    log.info(f"sweep: {choice}")
    summary = {"out": str(out), "best_lr": best["lr"], "choice": choice, "best_minival_top1": best["minival_top1"],
               "minival_fraction": fraction, "minival_fraction_from": why, "train_split": train_split,
               "minival_of": cfg.data.train_split,
               "minival_split": val_split, "retrained": cfg.sweep.retrain, "sweep": table}
    if cfg.sweep.retrain:
        final = _with(cfg, best["lr"], cfg.data.train_split, cfg.data.eval_split)
        result = _train(final, out / "final", f"final: lr {best['lr']:g} on all of {cfg.data.train_split}", **run)
        _keep_winner(out / "final", out)
        summary["final"] = _final_row(cfg, best["lr"], result, out / "final")
    else:
        log.warn(f"--no-retrain: the model kept was trained on {train_split} only; {NOT_PAPER}")
        _keep_winner(Path(best["out"]), out)
        summary["final"] = _unretrained_row(cfg, best, out, train_split, val_split)
    files.write_json(out / "sweep.json", summary)
    test = summary["final"].get("test_top1")
    log.info(f"sweep: final model in {out}" + (f"; {summary['final']['test_split']} top-1 {formats.percent(test)}"
                                               if test is not None else ""))
    return summary


def _with(cfg: RecipeCfg, lr: float, train_split: str, eval_split: str | None) -> RecipeCfg:
    """One run of the sweep: a single lr on the given splits. Its sweep section is the default, so that a
    --no-retrain sweep and a full one share their finished minival runs."""
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr), sweep=SweepCfg(),
                               data=dataclasses.replace(cfg.data, train_split=train_split, eval_split=eval_split))


def _train(sub: RecipeCfg, run_dir: Path, label: str, *, resume: bool, allowed: frozenset[str], hint: str,
           log: Reporter, render: Callable[[dict], str]) -> dict:
    """Train one run of the sweep into `run_dir`, or return its results when it already finished."""
    result = _finished(run_dir, sub)
    log.info(f"{label} -> {run_dir}{' (finished earlier, not trained again)' if result else ''}")
    if result is not None:
        return result
    # A run started earlier continues from its last checkpoint, even without --resume: the sweep
    # directory is the unit the user asked to run, its runs are never mixed (prepare checks).
    again = resume or (run_dir / "recipe.json").is_file()
    return jobs.train(sub, run_dir, resume=again, allowed_changes=allowed, resume_hint=hint, render=render)


def _metric(result: dict, name: str) -> float | None:
    """The run's final metric, of its EMA weights when it kept them (as `vit eval` reports by default)."""
    return result.get(f"ema_{name}", result.get(name))


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


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


def _final_row(cfg: RecipeCfg, lr: float, result: dict, run_dir: Path) -> dict:
    """The retrained model: trained on all of train, its test numbers from the run's own final evaluation."""
    row = {"lr": lr, "out": str(run_dir), "train_split": cfg.data.train_split,
           "train_examples": result.get("train_examples"), "steps": result.get("steps"),
           "test_split": cfg.data.eval_split}
    if cfg.data.eval_split:
        row.update(test_top1=_metric(result, "top1"), test_top5=_metric(result, "top5"),
                   test_loss=_metric(result, "loss"), test_images=_count(_metric(result, "images")))
    return row


def _unretrained_row(cfg: RecipeCfg, best: dict, out: Path, train_split: str, val_split: str) -> dict:
    """--no-retrain: the minival winner as it is, evaluated on the recipe's test split."""
    row = {"lr": best["lr"], "out": best["out"], "train_split": train_split, "not_retrained": NOT_PAPER,
           "train_examples": best.get("train_examples"), "steps": best.get("steps"),
           "test_split": cfg.data.eval_split}
    split = cfg.data.eval_split
    if split and split != val_split:
        from vitcli.weights import reader

        result = jobs.evaluate(_with(cfg, best["lr"], cfg.data.train_split, split), reader.read(out))
        row.update(test_top1=result["top1"], test_top5=result["top5"], test_loss=result["loss"],
                   test_images=_count(result["images"]))
    return row


def _finished(run_dir: Path, sub: RecipeCfg) -> dict | None:
    """The results of a run that already went to the end with exactly this recipe, else None."""
    done, saved = run_dir / "results.json", run_dir / "recipe.json"
    if not (done.is_file() and saved.is_file()):
        return None
    if rundir.diff(json.loads(saved.read_text()), schema.to_dict(sub)):
        return None  # changed recipe: jobs.train's resume check accepts or refuses it with the keys named
    return json.loads(done.read_text())


def _keep_winner(best: Path, out: Path) -> None:
    """Copy the kept run's final weights and config to the sweep directory, so it reads as a run directory."""
    for name in _KEPT:
        if (best / name).is_file():
            data = (best / name).read_bytes()
            files.atomic_write(out / name, lambda f, data=data: f.write(data))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else formats.percent(value)


def sweep_table(summary: dict) -> Table:
    """The sweep as a Rich table: one row per learning rate (minival), then the final model (test)."""
    final = summary["final"]
    test = final.get("test_split") or "test"
    whole = summary.get("minival_of") or summary["train_split"].partition("[")[0]
    table = Table(title=f"lr sweep in {summary['out']} (lr-*/, final/): chosen on {summary['minival_split']}, "
                        f"{summary['minival_fraction']:.0%} of {whole}", header_style="bold")
    for col in ("lr", "trained on", "minival top-1", "minival loss", f"{test} top-1", "steps", ""):
        table.add_column(col, justify="left" if col in ("trained on", "") else "right")
    for row in summary["sweep"]:
        chosen = row["lr"] == summary["best_lr"]
        kept = chosen and not summary["retrained"]
        table.add_row(f"{row['lr']:g}", summary["train_split"], _pct(row["minival_top1"]), _num(row["minival_loss"]),
                      _pct(final.get("test_top1")) if kept else "-", str(row.get("steps", "")),
                      ("chosen, kept" if kept else "chosen") if chosen else "")
    if summary["retrained"]:
        images = final.get("train_examples")
        table.add_row(f"{final['lr']:g}", final["train_split"] + (f" ({images})" if images else ""), "-", "-",
                      _pct(final.get("test_top1")), str(final.get("steps", "")), "final")
    table.caption = summary["choice"] + (f"; retrained on all of {whole}" if summary["retrained"]
                                         else f"; --no-retrain: {NOT_PAPER}")
    return table
