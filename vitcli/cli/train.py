"""`vit pretrain` and `vit finetune`: a recipe assembled from options, one call into the engine."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional


from vitcli import recipe
from vitcli.cli.app import app
from vitcli.cli.options import (DataOpt, EpochsOpt, FinetuneRecipeArg, FromOpt, JsonOpt, ModelOpt, NoRetrainOpt,
                                OutOpt, PretrainDataOpt, PretrainRecipeArg, ResOpt, ResumeOpt, SetOpt, SplitOpt,
                                StepsOpt, WeightsOpt, length_options, preflight)
from vitcli.cli.output import best_weights, emit, handle_errors, reporter
from vitcli.cli.tables import sweep_table
from vitcli.errors import RecipeError
from vitcli.recipe import assembly, length


@app.command("pretrain")
@handle_errors
def pretrain_cmd(path: PretrainRecipeArg = None, data: PretrainDataOpt = None, res: ResOpt = None,
                 model: ModelOpt = None, steps: StepsOpt = None, epochs: EpochsOpt = None, sets: SetOpt = None,
                 out: OutOpt = None, resume: ResumeOpt = False, as_json: JsonOpt = False) -> None:
    """Train a ViT from scratch as a recipe describes, or on --data with the default recipe (pretrain/default).

    --data replaces the recipe's data source and its splits: the source's own are used (train to train on; test, else validation, else a held-out part of train to evaluate on), and one line says which.

    [b]Examples[/b]:
      [cyan]vit pretrain demo[/]  (writes runs/demo)
      [cyan]vit pretrain --data imagefolder:photos --res 32 --model Ti/4 --steps 2000[/]  (runs/photos)
      [cyan]vit pretrain cifar10/scratch --data ../shared/data/cifar10[/]  (runs/cifar10-scratch)
      [cyan]vit pretrain demo --out runs/demo --resume[/]
      [cyan]vit pretrain --resume --out runs/demo --steps 900[/]  (continues the run from its own recipe)
      [cyan]torchrun --nproc-per-node 8 -m vitcli pretrain imagenet1k/b16[/]
    """
    preflight(recipe_path=path, sets=sets)
    given = {"data.source": data, "model.name": model, **length_options(steps, epochs)}
    options = assembly.recipe_overrides(res, given)
    if path is None and data is None and resume and out:  # continue a run from its own recipe
        cfg = assembly.resumed(out, [*options, *(sets or [])])
    else:
        cfg = assembly.pretrain(path, options, sets or [])
    _train(cfg, out, resume, options, sets or [], _command("vit pretrain", path, {"--res": res, **_flags(given)}),
           as_json)


@app.command("finetune")
@handle_errors
def finetune_cmd(path: FinetuneRecipeArg = None, from_: FromOpt = ..., data: DataOpt = None, split: SplitOpt = None,
                 res: ResOpt = None, steps: StepsOpt = None, epochs: EpochsOpt = None, sets: SetOpt = None,
                 out: OutOpt = None, resume: ResumeOpt = False, no_retrain: NoRetrainOpt = False,
                 weights: WeightsOpt = None,
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
    preflight(from_, path, sets)
    from vitcli.weights import reader

    if weights not in (None, "best"):
        raise RecipeError(f"--weights {weights}: fine-tuning starts from the checkpoint's weights as saved; "
                          "--weights takes only best here (the run's best/, kept by train.keep_best)")
    from_, _ = best_weights(from_, weights)
    source = reader.read(from_)
    given = {"data.source": data, "data.eval_split": split, **length_options(steps, epochs),
             "sweep.retrain": False if no_retrain else None}
    options = assembly.recipe_overrides(res, given)
    cfg = assembly.from_checkpoint(source, path, options, sets or [], assembly.FINETUNE)
    flags = {"--from": from_, "--res": res, **_flags(given)}
    _train(cfg, out, resume, options, sets or [], _command("vit finetune", path, flags), as_json, init=source)


def _flags(given: dict[str, object]) -> dict[str, object]:
    """Recipe keys set by options, as the options that set them (for the command that resumes)."""
    names = {"data.source": "--data", "model.name": "--model", "train.steps": "--steps", "train.epochs": "--epochs",
             "data.eval_split": "--split", "sweep.retrain": "--no-retrain"}
    return {names[k]: (True if k == "sweep.retrain" else v) for k, v in given.items() if v is not None}


def _command(head: str, path: Optional[Path], flags: dict[str, object]) -> str:
    """The command as typed, options included (quoted for a shell), without --set, --out and --resume."""
    words = [head, *([shlex.quote(str(path))] if path else [])]
    for flag, value in flags.items():
        if value is True:
            words.append(flag)
        elif value is not None:
            words += [flag, shlex.quote(f"{value:g}" if isinstance(value, float) else str(value))]
    return " ".join(words)



def _train(cfg, out: Optional[Path], resume: bool, options, sets: list[str], command: str, as_json: bool,
           init=None) -> None:
    """Run the recipe (a sweep when it lists several learning rates); `init` is finetune's checkpoint, read once."""
    from vitcli.engine import jobs

    given = out
    # Every torchrun process picks the same default: none can create it before all have joined the
    # process group, which happens after this.
    out = Path(out or cfg.run.out or jobs.default_run_dir(cfg.run.name, resume=resume,
                                                          restarted=jobs.launch_restarts() > 0))
    # valid items: the recipe was assembled from them
    allowed = {recipe.given_key(item)[0] for item in [*options, *sets]}
    if allowed & set(length.DOTTED):  # a new length in one unit clears the others (recipe/length.py): all may change
        allowed |= set(length.DOTTED)
    allowed = frozenset(allowed)
    # The hint repeats the run's overrides: without them a resume would be refused as another recipe.
    # The command as typed (rebuilt from the parsed options, not sys.argv: the same under CliRunner or torchrun).
    typed = " ".join([command, *(f"--set {shlex.quote(item)}" for item in sets)])
    hint = f"{typed} --resume --out {out}"
    # results.json's sessions record each command as typed; the model card's Reproduce shows the run without
    # --resume (what trains it from the start).
    session = typed + (" --resume" if resume else "") + (f" --out {shlex.quote(str(given))}" if given else "")
    if resume:
        assembly.check_run_recipe(out, cfg)
    # recipe.yaml is the run's recipe rendered for people: YAML stays in recipe.py, the engine writes it.
    if jobs.is_sweep(cfg):
        emit(jobs.run_sweep(cfg, out, resume=resume, allowed=allowed, hint=hint, render=recipe.dump,
                            log=reporter(as_json), init=init), as_json,
             sweep_table)
    else:
        results = jobs.train(cfg, out, resume=resume, allowed_changes=allowed, resume_hint=hint, render=recipe.dump,
                             command=session, reproduce=typed, log=reporter(as_json), init=init)
        emit(results, as_json, f"results ({out})")
