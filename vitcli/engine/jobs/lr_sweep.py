"""The paper's learning-rate sweep as a job: each lr trained on the minival split, the choice, the retrain.

What the sweep is and why (Appendix B.1.1) is told in `engine/train/sweep.py`, which holds its parts;
this module runs them: `training.train` for every run, `evaluation.evaluate` for a --no-retrain winner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vitcli import files, formats
from vitcli.recipe.config import RecipeCfg
from vitcli.engine.jobs.evaluation import evaluate
from vitcli.engine.jobs.preamble import with_splits
from vitcli.engine.jobs.training import recipe_as_json, train
from vitcli.engine.runtime.process import launch_rank
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train import sweep
from vitcli.errors import RunError
from vitcli.weights import reader


def run_sweep(cfg: RecipeCfg, out: Path, *, resume: bool, allowed: frozenset[str], hint: str,
              log: Reporter | None = None, render: Callable[[dict], str] = recipe_as_json,
              init: reader.Pretrained | None = None) -> dict:
    """Run every learning rate on the minival, pick one, retrain it on all of train (unless told not to).

    `render` writes each run's recipe.yaml and `init` is train.init_from's checkpoint read already, as in
    `train`: every run of the sweep starts from that one read.
    """
    out = Path(out)
    # Under torchrun every process runs the sweep; only rank 0 talks (the rule Runtime.create follows).
    log = log or Reporter(enabled=launch_rank() == 0)
    if (out / "recipe.json").is_file():
        raise RunError(f"--out {out}: holds a single run, not a sweep; choose a new --out for the sweep")
    cfg = with_splits(cfg, "train", log.info, hold_out=False)  # the source's own splits, before minival is cut
    train_split, val_split, fraction, why = sweep.minival_splits(cfg)
    sweep.check_minival(cfg, val_split, fraction)
    log.info(f"sweep: {len(cfg.optim.lr)} learning rates, each trained on {train_split} and chosen on the "
             f"minival {val_split} ({fraction:.0%}: {why})")
    run = {"resume": resume, "allowed": allowed, "hint": hint, "log": log, "render": render, "init": init}
    table = []
    for i, lr in enumerate(cfg.optim.lr):
        sub = sweep.one_run(cfg, lr, train_split, val_split)
        result = _train_one(sub, out / f"lr-{lr:g}", f"sweep {i + 1}/{len(cfg.optim.lr)}: lr {lr:g}", **run)
        table.append(sweep.minival_row(lr, result, out / f"lr-{lr:g}"))
    best, choice = sweep.choose(table)
    log.info(f"sweep: {choice}")
    summary = {"out": str(out), "best_lr": best["lr"], "choice": choice, "best_minival_top1": best["minival_top1"],
               "minival_fraction": fraction, "minival_fraction_from": why, "train_split": train_split,
               "minival_of": cfg.data.train_split,
               "minival_split": val_split, "retrained": cfg.sweep.retrain, "sweep": table}
    summary["final"] = _final(cfg, best, out, (train_split, val_split), run)
    files.write_json(out / "sweep.json", summary)
    test = summary["final"].get("test_top1")
    log.info(f"sweep: final model in {out}" + (f"; {summary['final']['test_split']} top-1 {formats.percent(test)}"
                                               if test is not None else ""))
    return summary


def _final(cfg: RecipeCfg, best: dict, out: Path, splits: tuple[str, str], run: dict) -> dict:
    """The model the sweep keeps in `out`: the chosen lr retrained on all of train (the paper's protocol),
    or with --no-retrain the minival winner as it is; its row of sweep.json, with its test numbers."""
    if cfg.sweep.retrain:
        final = sweep.one_run(cfg, best["lr"], cfg.data.train_split, cfg.data.eval_split)
        result = _train_one(final, out / "final", f"final: lr {best['lr']:g} on all of {cfg.data.train_split}", **run)
        sweep.keep_winner(out / "final", out)
        return sweep.final_row(cfg, best["lr"], result, out / "final")
    train_split, val_split = splits
    run["log"].warn(f"--no-retrain: the model kept was trained on {train_split} only; {sweep.NOT_PAPER}")
    sweep.keep_winner(Path(best["out"]), out)
    row = sweep.unretrained_row(cfg, best, train_split)
    split = cfg.data.eval_split
    if split and split != val_split:
        result = evaluate(sweep.one_run(cfg, best["lr"], cfg.data.train_split, split), reader.read(out))
        row.update(test_top1=result["top1"], test_top5=result["top5"], test_loss=result["loss"],
                   test_images=sweep.image_count(result["images"]))
    return row


def _train_one(sub: RecipeCfg, run_dir: Path, label: str, *, resume: bool, allowed: frozenset[str], hint: str,
               log: Reporter, render: Callable[[dict], str], init: reader.Pretrained | None) -> dict:
    """Train one run of the sweep into `run_dir`, or return its results when it already finished."""
    result = sweep.finished(run_dir, sub)
    log.info(f"{label} -> {run_dir}{' (finished earlier, not trained again)' if result else ''}")
    if result is not None:
        return result
    # A run started earlier continues from its last checkpoint, even without --resume: the sweep
    # directory is the unit the user asked to run, its runs are never mixed (prepare checks).
    again = resume or (run_dir / "recipe.json").is_file()
    return train(sub, run_dir, resume=again, allowed_changes=allowed, resume_hint=hint, render=render, init=init)
