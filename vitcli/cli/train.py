"""`vit pretrain` and `vit finetune`: a recipe assembled from options, one call into the engine."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vitcli import recipe
from vitcli.cli.app import app
from vitcli.cli.options import (DataOpt, FinetuneRecipeArg, FromOpt, JsonOpt, NoRetrainOpt, OutOpt, ResOpt,
                                ResumeOpt, SetOpt, SplitOpt, WeightsOpt)
from vitcli.cli.output import best_weights, emit, handle_errors, reporter
from vitcli.cli.tables import sweep_table
from vitcli.errors import RecipeError
from vitcli.recipe import assembly


@app.command("pretrain")
@handle_errors
def pretrain_cmd(path: Annotated[Optional[Path], typer.Argument(
        help="Recipe YAML file or shipped recipe name (vit recipe list), e.g. demo or cifar10/scratch; optional "
        "with --resume --out RUN, which continues the run from its own recipe.",
        show_default=False, metavar="RECIPE")] = None, sets: SetOpt = None, out: OutOpt = None,
                 resume: ResumeOpt = False, as_json: JsonOpt = False) -> None:
    """Train a ViT from scratch as a recipe describes.

    [b]Examples[/b]:
      [cyan]vit pretrain demo[/]  (writes runs/demo)
      [cyan]vit pretrain cifar10/scratch --set data.source=../shared/data/cifar10[/]  (runs/cifar10-scratch)
      [cyan]vit pretrain demo --out runs/demo --resume[/]
      [cyan]vit pretrain --resume --out runs/demo[/]  (continues the run from its own recipe)
      [cyan]torchrun --nproc-per-node 8 -m vitcli pretrain imagenet1k/b16[/]
    """
    if path is None:
        if not (resume and out):
            raise RecipeError("RECIPE: missing; give a recipe file, or --resume --out RUN to continue a run "
                              "from its own recipe")
        cfg = assembly.resumed(out, sets or [])
    else:
        cfg = assembly.pretrain(path, sets or [])
    _train(cfg, out, resume, sets or [], f"vit pretrain {path or ''}".rstrip(), as_json)


@app.command("finetune")
@handle_errors
def finetune_cmd(path: FinetuneRecipeArg = None, from_: FromOpt = ..., data: DataOpt = None, split: SplitOpt = None,
                 res: ResOpt = None, sets: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
                 no_retrain: NoRetrainOpt = False, weights: WeightsOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Fine-tune a pretrained ViT: new zero-initialised head, position embeddings resampled to --res.

    Without a RECIPE it fine-tunes on the checkpoint's own data with the paper's defaults (finetune/default).

    Without a length (train.steps, train.epochs or train.examples) a fine-tune sizes itself: the paper's Table 4 for its data sets (ImageNet 20,000 steps, CIFAR-10/100 10,000, Pets and Flowers 500, at batch 512), otherwise 10 epochs kept within 500-20,000 steps of 512 images; the same number of images at another batch size, with a warmup of at most 10% of the run. The first steps print the measured time per step and the projected total. A length given with --set replaces the recipe's in any unit.

    A list of learning rates is the paper's sweep: each value trains on train minus a held-out minival (sweep.minival; default the paper's 10% for Pets and Flowers, 2% CIFAR, 1% ImageNet, else 2%), the best minival top-1 wins (a tie: the lower minival loss), then that value is retrained on the whole train split (train+validation for a data set that has both besides test: the minival is cut from each) and reported on the test split (data.eval_split). --no-retrain keeps the minival winner instead.

    [b]Examples[/b]:
      [cyan]vit finetune --from runs/demo --res 24[/]  (writes runs/demo-finetune)
      [cyan]vit finetune finetune/cifar10_48 --from runs/cifar10-scratch[/]  (runs/cifar10-48)
      [cyan]vit finetune finetune/cifar10_384 --from vit_b16.pth --set optim.lr=[0.003,0.01][/]
      [cyan]vit finetune --from runs/demo --data imagefolder:photos --res 32[/]
    """
    from vitcli.weights import reader

    if weights not in (None, "best"):
        raise RecipeError(f"--weights {weights}: fine-tuning starts from the checkpoint's weights as saved; "
                          "--weights takes only best here (the run's best/, kept by train.keep_best)")
    from_, _ = best_weights(from_, weights)
    source = reader.read(from_)
    options = assembly.recipe_overrides(res, {"data.source": data, "data.eval_split": split,
                                              "sweep.retrain": "false" if no_retrain else None})
    cfg = assembly.from_checkpoint(source, path, options, sets or [], assembly.FINETUNE)
    hint = (f"vit finetune {path or ''} --from {from_}".replace("  ", " ") + (f" --res {res}" if res else "")
            + (" --no-retrain" if no_retrain else ""))
    hint += (f" --data {shlex.quote(data)}" if data else "") + (f" --split {shlex.quote(split)}" if split else "")
    _train(cfg, out, resume, sets or [], hint, as_json)


LENGTH_KEYS = ("train.steps", "train.epochs", "train.examples")


def _train(cfg, out: Optional[Path], resume: bool, sets: list[str], command: str, as_json: bool) -> None:
    from vitcli.engine import jobs

    # Every torchrun process picks the same default: none can create it before all have joined the
    # process group, which happens after this.
    out = Path(out or cfg.run.out or jobs.default_run_dir(cfg.run.name, resume=resume,
                                                          restarted=jobs.launch_restarts() > 0))
    allowed = {item.partition("=")[0].strip() for item in sets}
    if allowed & set(LENGTH_KEYS):  # a new length in one unit clears the others (recipe.py): all may change
        allowed |= set(LENGTH_KEYS)
    allowed = frozenset(allowed)
    # The hint repeats the run's overrides: without them a resume would be refused as another recipe.
    hint = " ".join([command, *(f"--set {shlex.quote(item)}" for item in sets), "--resume", f"--out {out}"])
    # recipe.yaml is the run's recipe rendered for people: YAML stays in recipe.py, the engine writes it.
    if jobs.is_sweep(cfg):
        emit(jobs.run_sweep(cfg, out, resume=resume, allowed=allowed, hint=hint, render=recipe.dump,
                            log=reporter(as_json)), as_json,
             sweep_table)
    else:
        results = jobs.train(cfg, out, resume=resume, allowed_changes=allowed, resume_hint=hint, render=recipe.dump,
                             command=shlex.join(["vit", *sys.argv[1:]]), log=reporter(as_json))
        emit(results, as_json, f"results ({out})")
