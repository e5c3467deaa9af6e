"""The paper's learning-rate sweep: one independent run per value, the best on a held-out minival wins.

`--set optim.lr=[0.001,0.003,0.01,0.03]` trains each value on `train[:98%]` and evaluates it on
`train[98%:]` (the test split is never used to choose). Each value is a run directory of its own under
`--out`, so an interrupted sweep resumes where it stopped; finished values are not trained again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.table import Table

from vitcli import files, recipe, schema
from vitcli.config import RecipeCfg
from vitcli.engine import jobs
from vitcli.engine.persistence import rundir
from vitcli.engine.runtime.process import launch_rank
from vitcli.engine.runtime.progress import Reporter
from vitcli.errors import RunError

MINIVAL = "98%"  # the paper holds out 2% of the training split to pick hyper-parameters
_KEPT = ("model.safetensors", "model_ema.safetensors", "config.json")


def is_sweep(cfg: RecipeCfg) -> bool:
    """True when the recipe lists more than one learning rate."""
    return isinstance(cfg.optim.lr, tuple) and len(cfg.optim.lr) > 1


def minival_splits(cfg: RecipeCfg) -> tuple[str, str]:
    """(train, minival): the recipe's own when it already holds out a slice of train, else train[:98%].

    A recipe such as ImageNet's (`train[:99%]` / `validation`) evaluates on a split that is reported as
    the result; choosing the lr there would tune on the test data, so such splits are re-derived.
    """
    train, held_out = cfg.data.train_split, cfg.data.eval_split or ""
    base = train.partition("[")[0]
    if "[" in train and held_out.partition("[")[0] == base and "[" in held_out:
        return train, held_out
    return f"{base}[:{MINIVAL}]", f"{base}[{MINIVAL}:]"


def run_sweep(cfg: RecipeCfg, out: Path, *, resume: bool, allowed: frozenset[str], hint: str,
              log: Reporter | None = None) -> dict:
    """Run every learning rate (resuming unfinished ones), pick the best minival top-1, keep its weights."""
    out = Path(out)
    # Under torchrun every process runs the sweep; only rank 0 talks (the rule Runtime.create follows).
    log = log or Reporter(enabled=launch_rank() == 0)
    if (out / "recipe.json").is_file():
        raise RunError(f"--out {out}: holds a single run, not a sweep; choose a new --out for the sweep")
    train_split, val_split = minival_splits(cfg)
    table = []
    for i, lr in enumerate(cfg.optim.lr):
        sub = dataclasses.replace(
            cfg, optim=dataclasses.replace(cfg.optim, lr=lr),
            data=dataclasses.replace(cfg.data, train_split=train_split, eval_split=val_split))
        run_dir = out / f"lr-{lr:g}"
        result = _finished(run_dir, sub)
        log.info(f"sweep {i + 1}/{len(cfg.optim.lr)}: lr {lr:g} -> {run_dir}"
                 f"{' (finished earlier, not trained again)' if result else ''}")
        if result is None:
            # A value started earlier continues from its last checkpoint, even without --resume: the
            # sweep directory is the unit the user asked to run, its values are never mixed (prepare checks).
            again = resume or (run_dir / "recipe.json").is_file()
            result = jobs.train(sub, run_dir, recipe.to_yaml(sub), resume=again, allowed_changes=allowed,
                                resume_hint=hint)
        table.append({"lr": lr, "minival_top1": result.get("ema_top1", result.get("top1")),
                      "minival_loss": result.get("ema_loss", result.get("loss")), "steps": result.get("steps"),
                      "out": str(run_dir)})
    best = max(table, key=lambda row: row["minival_top1"] if row["minival_top1"] is not None else -1.0)
    _keep_winner(Path(best["out"]), out)
    summary = {"out": str(out), "best_lr": best["lr"], "best_minival_top1": best["minival_top1"],
               "train_split": train_split, "minival_split": val_split, "sweep": table}
    summary.update(_evaluate_winner(cfg, best["lr"], out, val_split))
    files.write_json(out / "sweep.json", summary)
    log.info(f"sweep: best lr {best['lr']:g} (minival top-1 {best['minival_top1']}); its weights are in {out}")
    return summary


def _evaluate_winner(cfg: RecipeCfg, lr: float, out: Path, val_split: str) -> dict:
    """The winner on the recipe's own eval split (e.g. test), reported but never used to choose."""
    split = cfg.data.eval_split
    if not split or split == val_split:
        return {}
    from vitcli.weights import reader

    chosen = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr))
    result = jobs.evaluate(chosen, reader.read(out), weights=cfg.eval.weights)
    return {"eval_split": split, **{f"eval_{k}": result[k] for k in ("top1", "top5", "loss") if k in result}}


def _finished(run_dir: Path, sub: RecipeCfg) -> dict | None:
    """The results of a value that already ran to the end with exactly this recipe, else None."""
    done, saved = run_dir / "results.json", run_dir / "recipe.json"
    if not (done.is_file() and saved.is_file()):
        return None
    if rundir.diff(json.loads(saved.read_text()), schema.to_dict(sub)):
        return None  # changed recipe: jobs.train's resume check accepts or refuses it with the keys named
    return json.loads(done.read_text())


def _keep_winner(best: Path, out: Path) -> None:
    """Copy the winner's final weights and config to the sweep directory, so it reads as a run directory."""
    for name in _KEPT:
        if (best / name).is_file():
            data = (best / name).read_bytes()
            files.atomic_write(out / name, lambda f, data=data: f.write(data))


def sweep_table(summary: dict) -> Table:
    """The sweep as a Rich table: one row per learning rate, the winner marked."""
    table = Table(title=f"lr sweep ({summary['out']}): chosen on {summary['minival_split']}",
                  header_style="bold")
    for col in ("lr", "minival top-1", "minival loss", "steps", "run directory", ""):
        table.add_column(col, justify="left" if col in ("run directory", "") else "right")
    for row in summary["sweep"]:
        top1, loss = row["minival_top1"], row["minival_loss"]
        table.add_row(f"{row['lr']:g}", "-" if top1 is None else f"{top1:.4f}",
                      "-" if loss is None else f"{loss:.4f}", str(row.get("steps", "")), row["out"],
                      "best" if row["lr"] == summary["best_lr"] else "")
    if "eval_top1" in summary:
        table.caption = f"best lr {summary['best_lr']:g} on {summary['eval_split']}: top-1 {summary['eval_top1']:.4f}"
    return table
