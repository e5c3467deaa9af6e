"""The `vit` command line: each command turns options into a recipe and makes one call into the engine.

torch is imported only inside command bodies, so `vit --help`, `vit models` and `vit recipe check` answer
at once. Every user error is a `VitError`, caught here, printed as one line, exit code 2.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import sys

# Must be set before torch loads. OpenMP threads that spin while waiting for each other slow a loaded
# CPU down up to 10x (measured: a demo step took 3-4 s instead of 0.35 s next to another busy process);
# sleeping instead costs microseconds per parallel region. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.markup import escape
from rich.text import Text

from vitcli import __version__, assembly, formats, recipe, tables
from vitcli.errors import RecipeError, VitError

app = typer.Typer(
    name="vit",
    help="Pretrain, fine-tune, evaluate and few-shot-evaluate Vision Transformers from YAML recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
recipe_app = typer.Typer(help="Show and check recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")

out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# -- options shared by several commands, declared once --------------------------------------------------
RecipeArg = Annotated[Path, typer.Argument(
    help="Recipe YAML file, or the name of a shipped recipe (vit recipe list), e.g. demo or cifar10/scratch.",
    show_default=False, metavar="RECIPE")]
FinetuneRecipeArg = Annotated[Optional[Path], typer.Argument(
    help="Recipe YAML file or shipped recipe name (optional); default: finetune/default, the paper's "
    "fine-tuning settings, on the checkpoint's own data.", show_default=False, metavar="RECIPE")]
EvalRecipeArg = Annotated[Optional[Path], typer.Argument(
    help="Recipe YAML file or shipped recipe name (optional); default: the checkpoint's own recipe.",
    show_default=False, metavar="RECIPE")]
BenchRecipeArg = Annotated[Optional[Path], typer.Argument(
    help="Recipe YAML file or shipped recipe name (optional); default: --model with default settings.",
    show_default=False, metavar="RECIPE")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override a recipe field, e.g. optim.lr=3e-3, "
    "fewshot.shots=[1,5] or fewshot.datasets[0].source=PATH. Repeatable.", show_default=False)]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="Run directory. Default: runs/<run.name> (the recipe's name), or runs/<run.name>-2, "
    "-3, ... when taken; with --resume, runs/<run.name>.", show_default=False)]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")]
FromOpt = Annotated[str, typer.Option(
    "--from", help="Weights: a vit run directory or checkpoint (.pt); a timm or Hugging Face ViT folder "
    "(config.json + weights) or file (.safetensors/.pth/.bin); a Google .npz (ViT-B_16.npz, AugReg); or a hub "
    "name: hf-hub:ORG/NAME, timm:ARCH.TAG.", show_default=False)]
ResOpt = Annotated[Optional[str], typer.Option(
    "--res", help="Resolution, e.g. 384 or 384x256; position embeddings are resampled.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object with the results on stdout.")]
NoRetrainOpt = Annotated[bool, typer.Option(
    "--no-retrain", help="lr sweep: keep the minival winner instead of retraining it on the whole train split "
    "(cheaper; not the paper's protocol).")]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="ema or raw: which weights of the checkpoint (eval, fewshot, predict: default the "
    "recipe's eval.weights, ema).", show_default=False)]
DataOpt = Annotated[Optional[str], typer.Option(
    "--data", help="Data source instead of the checkpoint's (hub id, local dir, imagefolder:PATH); its own "
    "splits are used unless --split names one.", show_default=False)]
SplitOpt = Annotated[Optional[str], typer.Option(
    "--split", help="Split expression to score, e.g. test or train[98%:]. Default: the data's test, else "
    "validation split.", show_default=False)]
IgnoreLabelsOpt = Annotated[bool, typer.Option(
    "--ignore-labels", help="Score data label i as the head's output i, even where the class names differ.")]


def _version(value: bool) -> None:
    if value:
        print(f"vit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Pretrain, fine-tune, evaluate and few-shot-evaluate Vision Transformers from YAML recipes."""


def handle_errors(func):
    """Turn a VitError into one red line on stderr and its exit code; nothing else is swallowed."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VitError as exc:
            # The message is data, not markup: "[train]" in a split name must print as written. A value
            # quoted in it may hold a newline or a control character: escaped, the error stays one line.
            err_console.print(Text.assemble(("error:", "bold red"), " ", one_line(str(exc))))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; the last checkpoint on disk is intact")
            raise typer.Exit(130) from None

    return wrapper


def one_line(message: str) -> str:
    """The message with line breaks and other control characters escaped (\\n, \\x1b ...)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


def is_main_process() -> bool:
    """Under torchrun every rank has the results; only rank 0 prints them."""
    from vitcli.engine.runtime.process import (
        launch_rank,  # torch is loaded by now: results exist
    )

    return launch_rank() == 0


def emit(results: dict, as_json: bool, table: str | Callable[[dict], Table]) -> None:
    """Results as one JSON object on stdout, or as a Rich table (once, from the main process).

    `table` is a function that renders the results, or the title of a plain metric/value table.
    """
    if not is_main_process():
        return
    if as_json:
        print(json.dumps(results, default=str))
        return
    out_console.print(table(results) if callable(table) else _metric_table(results, table))


_RUN_RECORD = ("date", "vit_version", "command")  # in results.json and --json; a table shows the results


def _metric_table(results: dict, title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if isinstance(value, dict) or (isinstance(value, list) and key != "res") or key in _RUN_RECORD:
            continue
        table.add_row(escape(key), escape(formats.metric(key, value)))
    return table


def _ema_note(asked: str | None, results: dict) -> None:
    """Only a user who asked for the EMA weights by name needs to hear that there were none."""
    if asked == "ema" and results.get("weights") == "raw" and is_main_process():
        err_console.print("the checkpoint has no EMA weights; used the raw weights", markup=False)


@app.command("models")
@handle_errors
def models_cmd(res: Annotated[Optional[str], typer.Option(
        "--res", help="Resolution to count tokens and GFLOPs at, e.g. 384 or 384x256.", show_default=False)] = None,
               as_json: JsonOpt = False) -> None:
    """List the model zoo: the paper's ViT variants and ResNet hybrids.

    Parameters are counted with a 1000-class head; GFLOPs are 2 x multiply-accumulates of one forward
    pass at the resolution (timm and DeiT report multiply-accumulates as "FLOPs", half these numbers).

    [b]Examples[/b]: [cyan]vit models[/]   [cyan]vit models --res 384[/]
    """
    rows = tables.zoo_rows(res or "224")
    if as_json:
        print(json.dumps({"res": rows[0]["res"], "models": rows}))
    else:
        out_console.print(tables.zoo_table(rows))


@recipe_app.command("list")
@handle_errors
def recipe_list(as_json: JsonOpt = False) -> None:
    """List the recipes that ship with vit: every command takes one by name or by its file.

    [b]Examples[/b]: [cyan]vit recipe list[/]   [cyan]vit pretrain demo[/]   [cyan]vit recipe show cifar10/scratch[/]
    """
    rows = recipe.shipped()
    if as_json:
        print(json.dumps(rows))
    else:
        out_console.print(tables.recipe_table(rows, str(recipe.SHIPPED)))


@recipe_app.command("show")
@handle_errors
def recipe_show(path: RecipeArg, sets: SetOpt = None) -> None:
    """Print the resolved recipe (base files merged, overrides applied, every default filled) as YAML.

    [b]Examples[/b]: [cyan]vit recipe show demo --set optim.lr=3e-3[/]   [cyan]vit recipe show imagenet1k/b16[/]
    """
    print(recipe.to_yaml(recipe.load(path, sets or [])), end="")


@recipe_app.command("check")
@handle_errors
def recipe_check(paths: Annotated[list[Path], typer.Argument(
        help="Recipe files, shipped recipe names, or directories (every *.yaml below them).",
        show_default=False)]) -> None:
    """Validate recipes; stop with exit code 2 at the first invalid one.

    [b]Examples[/b]: [cyan]vit recipe check recipes[/]   [cyan]vit recipe check my.yaml demo[/]
    """
    for path in recipe.expand(paths):
        recipe.load(path)
        err_console.print(f"ok  {path}")


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
                 no_retrain: NoRetrainOpt = False,
                 as_json: JsonOpt = False) -> None:
    """Fine-tune a pretrained ViT: new zero-initialised head, position embeddings resampled to --res.

    Without a RECIPE it fine-tunes on the checkpoint's own data with the paper's defaults (finetune/default).

    Without a length (train.steps, train.epochs or train.examples) a fine-tune sizes itself: the paper's Table 4 for its data sets (ImageNet 20,000 steps, CIFAR-10/100 10,000, Pets and Flowers 500, at batch 512), otherwise 10 epochs kept within 500-20,000 steps of 512 images; the same number of images at another batch size, with a warmup of at most 10% of the run. The first steps print the measured time per step and the projected total. A length given with --set replaces the recipe's in any unit.

    A list of learning rates is the paper's sweep: each value trains on train minus a held-out minival (sweep.minival; default the paper's 10% for Pets and Flowers, 2% CIFAR, 1% ImageNet, else 2%), the best minival top-1 wins (a tie: the lower minival loss), then that value is retrained on the whole train split and reported on the test split (data.eval_split). --no-retrain keeps the minival winner instead.

    [b]Examples[/b]:
      [cyan]vit finetune --from runs/demo --res 24[/]  (writes runs/demo-finetune)
      [cyan]vit finetune finetune/cifar10_48 --from runs/cifar10-scratch[/]  (runs/cifar10-48)
      [cyan]vit finetune finetune/cifar10_384 --from vit_b16.pth --set optim.lr=[0.003,0.01][/]
      [cyan]vit finetune --from runs/demo --data imagefolder:photos --res 32[/]
    """
    from vitcli.weights import reader

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
    from vitcli.engine.persistence.rundir import default_out
    from vitcli.engine.train.sweep import is_sweep, run_sweep, sweep_table

    # Every torchrun process picks the same default: none can create it before all have joined the
    # process group, which happens after this.
    out = Path(out or cfg.run.out or default_out(cfg.run.name, resume=resume))
    allowed = {item.partition("=")[0].strip() for item in sets}
    if allowed & set(LENGTH_KEYS):  # a new length in one unit clears the others (recipe.py): all may change
        allowed |= set(LENGTH_KEYS)
    allowed = frozenset(allowed)
    # The hint repeats the run's overrides: without them a resume would be refused as another recipe.
    hint = " ".join([command, *(f"--set {shlex.quote(item)}" for item in sets), "--resume", f"--out {out}"])
    # recipe.yaml is the run's recipe rendered for people: YAML stays in recipe.py, the engine writes it.
    if is_sweep(cfg):
        emit(run_sweep(cfg, out, resume=resume, allowed=allowed, hint=hint, render=recipe.dump), as_json,
             sweep_table)
    else:
        results = jobs.train(cfg, out, resume=resume, allowed_changes=allowed, resume_hint=hint, render=recipe.dump,
                             command=shlex.join(["vit", *sys.argv[1:]]))
        emit(results, as_json, f"results ({out})")


@app.command("eval")
@handle_errors
def eval_cmd(path: EvalRecipeArg = None, from_: FromOpt = ..., data: DataOpt = None, split: SplitOpt = None,
             res: ResOpt = None, weights: WeightsOpt = None, ignore_labels: IgnoreLabelsOpt = False,
             sets: SetOpt = None,
             out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for confusion_matrix.png.",
                                                         show_default=False)] = None,
             as_json: JsonOpt = False) -> None:
    """Evaluate a checkpoint: top-1, top-5, loss, per-class recall and precision, confusion matrix.

    --json holds the confusion counts (up to 1000 classes); --out DIR draws them with class names.

    The data's class names are matched to the head's: a subset is mapped by name; other names are refused
    unless --ignore-labels.

    [b]Examples[/b]:
      [cyan]vit eval --from runs/demo[/]
      [cyan]vit eval --from runs/cifar10-scratch --data ../shared/data/cifar10 --split test --res 48 --json[/]
      [cyan]vit eval --from runs/cifar10-scratch --out figures[/]
    """
    from vitcli.engine import jobs
    from vitcli.weights import reader

    source = reader.read(from_)
    options = assembly.recipe_overrides(res, {"data.source": data, "data.eval_split": split}, weights)
    cfg = assembly.from_checkpoint(source, path, options, sets or [], assembly.EVALUATE)
    results = jobs.evaluate(cfg, source, ignore_labels=ignore_labels, out=out)
    _ema_note(weights, results)
    emit(results, as_json, tables.eval_table)


@app.command("fewshot")
@handle_errors
def fewshot_cmd(path: EvalRecipeArg = None, from_: FromOpt = ..., shots: Annotated[Optional[str], typer.Option(
        "--shots", help="Shot counts per class, comma-separated, e.g. 1,5,10,25.", show_default=False)] = None,
                seeds: Annotated[Optional[int], typer.Option("--seeds", help="Random draws per shot count.",
                                                             show_default=False)] = None,
                data: DataOpt = None, split: SplitOpt = None,
                train_split: Annotated[Optional[str], typer.Option(
                    "--train-split", help="Split to draw the few-shot examples from. Default: the data's train "
                    "split (plus validation when test is held out).", show_default=False)] = None,
                res: ResOpt = None, weights: WeightsOpt = None, sets: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Few-shot linear evaluation (the paper's protocol): closed-form ridge regression on frozen features.

    [b]Examples[/b]:
      [cyan]vit fewshot --from runs/demo --shots 1,5,10[/]
      [cyan]vit fewshot fewshot/paper --from vit_b16.safetensors --seeds 3 --json[/]
    """
    from vitcli.engine import jobs
    from vitcli.weights import reader

    source = reader.read(from_)
    extra = {"fewshot.shots": f"[{shots}]" if shots else None, "fewshot.seeds": seeds, "data.source": data,
             "data.train_split": train_split, "data.eval_split": split,
             # --data is the one data set to evaluate on, in place of a recipe's list
             "fewshot.datasets": "[]" if data else None}
    options = assembly.recipe_overrides(res, extra, weights)
    cfg = assembly.from_checkpoint(source, path, options, sets or [], assembly.FEWSHOT)
    results = jobs.fewshot(cfg, source)
    _ema_note(weights, results)
    emit(results, as_json, tables.fewshot_table)


@app.command("predict")
@handle_errors
def predict_cmd(inputs: Annotated[list[str], typer.Argument(
        help="Image files, folders of images (searched recursively), or a data source (imagefolder:PATH, a "
        "parquet folder, a hub id).", show_default=False, metavar="INPUT...")],
                from_: FromOpt = ...,
                top_k: Annotated[int, typer.Option("--top-k", help="Classes shown per image.")] = 5,
                csv: Annotated[Optional[Path], typer.Option(
                    "--csv", help="Also write the predictions to this CSV file.", show_default=False)] = None,
                split: Annotated[Optional[str], typer.Option(
                    "--split", help="Split of a data source INPUT; default: the one vit eval scores.",
                    show_default=False)] = None,
                batch: Annotated[Optional[int], typer.Option(
                    "--batch", help="Images per forward pass; default: eval.batch_size.", show_default=False)] = None,
                res: ResOpt = None, weights: WeightsOpt = None, sets: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Predict the classes of images: the top-k class names and probabilities of each.

    Images are prepared as vit eval prepares its data. Files that cannot be read are listed at the end
    and do not stop the run; the exit code is then 1.

    [b]Examples[/b]:
      [cyan]vit predict --from runs/demo photos/[/]
      [cyan]vit predict --from runs/cifar10-scratch cat.jpg dog.png --top-k 3 --json[/]
      [cyan]vit predict --from runs/cifar10-scratch ../shared/data/cifar10 --split test --csv preds.csv[/]
    """
    from vitcli.engine import jobs
    from vitcli.weights import reader

    if as_json and csv is not None:
        raise VitError("--json and --csv: choose one (--json prints to stdout, --csv writes a file)")
    source = reader.read(from_)
    options = assembly.recipe_overrides(res, weights=weights)
    cfg = assembly.from_checkpoint(source, None, options, sets or [], assembly.PREDICT)
    results = jobs.predict(cfg, source, inputs, split=split, top_k=top_k, batch_size=batch)
    if csv is not None:
        tables.write_predictions_csv(csv, results["predictions"], top_k)
        err_console.print(f"predictions written to {csv}", markup=False)
    _ema_note(weights, results)
    emit(results, as_json, tables.predict_table)
    for bad in results["unreadable"]:
        err_console.print(Text.assemble(("unreadable:", "bold red"), f" {bad['path']}: {bad['error']}"))
    if results["unreadable"]:
        raise typer.Exit(1)


@app.command("export")
@handle_errors
def export_cmd(from_: Annotated[str, typer.Argument(
        help="What to export: a run directory or any --from checkpoint (file, folder or hub name).",
        show_default=False, metavar="RUN")],
               fmt: Annotated[str, typer.Option("--format", help="timm, hf (transformers) or onnx.")] = "timm",
               out: Annotated[Optional[Path], typer.Option(
                   "--out", "-o", help="New directory to write into. Default: RUN-FORMAT beside the run.",
                   show_default=False)] = None,
               weights: WeightsOpt = None, as_json: JsonOpt = False) -> None:
    """Write a model in a format other tools read: timm (safetensors + config.json), hf, onnx.

    [b]timm[/b]: timm.create_model('local-dir:OUT', pretrained=True) builds it.
    [b]hf[/b]: transformers.ViTForImageClassification.from_pretrained(OUT) loads it; a pre-logits layer becomes the pooler.
    [b]onnx[/b]: onnxruntime runs it (needs pip install 'vitcli\\[export]').
    What a format cannot hold is named in one line.

    [b]Examples[/b]:
      [cyan]vit export runs/demo --format hf[/]
      [cyan]vit export runs/demo --format onnx --out exported/demo-onnx[/]
      [cyan]vit export ViT-B_16.npz --format hf --out vit-b16-hf[/]
    """
    from vitcli.weights import convert, reader

    source = reader.read(from_)
    result = convert.export(source, fmt, out or convert.default_out(from_, source, fmt), weights=weights or "ema")
    if result["not_carried"] and is_main_process():
        err_console.print(Text(f"not carried: {result['not_carried']}"))
    emit(result, as_json, f"vit export --format {fmt}")


@app.command("inspect")
@handle_errors
def inspect_cmd(run: Annotated[Optional[Path], typer.Argument(
        help="A run directory: its model is inspected and its learning curves drawn.", show_default=False,
        metavar="RUN")] = None,
                from_: Annotated[Optional[Path], typer.Option("--from", help="Checkpoint to inspect (default: "
                                                              "RUN's model).", show_default=False)] = None,
                data: Annotated[Optional[str], typer.Option(
                    "--data", help="Data source of the sample images (default: the checkpoint's).",
                    show_default=False)] = None,
                split: Annotated[Optional[str], typer.Option("--split", help="Split of the sample images, "
                                                             "e.g. test[:256].", show_default=False)] = None,
                images: Annotated[Optional[list[Path]], typer.Option(
                    "--images", help="Image files for the attention maps. Repeatable.", show_default=False)] = None,
                samples: Annotated[int, typer.Option("--samples", help="Images the mean attention distance "
                                                     "is averaged over.")] = 64,
                out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs and "
                                                            "inspection.json. Default: inspect/<name>.",
                                                            show_default=False)] = None,
                res: ResOpt = None, weights: WeightsOpt = None, sets: SetOpt = None,
                as_json: JsonOpt = False) -> None:
    """Draw what a ViT learned (the paper's Figures 6 and 7) and a run's learning curves.

    Writes embedding_filters.png, posemb_similarity.png, attention_distance.png, attention_maps.png,
    learning_curves.png (for a RUN) and inspection.json with the numbers behind them.

    [b]Examples[/b]:
      [cyan]vit inspect runs/cifar10-scratch[/]
      [cyan]vit inspect --from model.safetensors --images cat.jpg --images dog.png --out figs[/]
    """
    from vitcli.engine import jobs
    from vitcli.weights import reader

    if run is None and from_ is None:
        raise RecipeError("give a RUN directory or --from CHECKPOINT to inspect")
    source = reader.read(from_ or run)
    run_dir = run if run is not None else (from_ if (from_ / "metrics.jsonl").is_file() else None)
    options = assembly.recipe_overrides(res, {"data.source": data}, weights)
    cfg = assembly.from_checkpoint(source, None, options, sets or [], assembly.INSPECT)
    name = (run or from_).resolve().name if (run or from_).is_dir() else (run or from_).stem
    report = jobs.inspect(cfg, source, Path(out or Path("inspect") / name), run_dir=run_dir, images=images,
                          split=split, samples=samples)
    emit(tables.inspect_summary(report), as_json, tables.inspect_table)


@app.command("bench")
@handle_errors
def bench_cmd(path: BenchRecipeArg = None, model: Annotated[Optional[str], typer.Option(
        "--model", help="Variant to time instead of the recipe's, e.g. B/16.", show_default=False)] = None,
              res: Annotated[Optional[str], typer.Option(
                  "--res", help="Resolution to time at, e.g. 384 or 384x256.", show_default=False)] = None,
              batch: Annotated[int, typer.Option("--batch", help="Micro-batch to time.")] = 32,
              steps: Annotated[int, typer.Option("--steps", help="Timed training steps (after warm-up).")] = 10,
              warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps first.")] = 3,
              sets: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Time training steps on this machine: images/s, step time, MFU against the measured matmul peak, peak memory.

    Sizes a run before paying for it. Data loading is left out (see benchmarks/ for the loader).

    [b]Examples[/b]:
      [cyan]vit bench imagenet1k/b16 --batch 64[/]
      [cyan]vit bench --model S/16 --res 224 --batch 32 --steps 5[/]
      [cyan]vit bench demo --set train.precision=bf16 --json[/]
    """
    from vitcli.engine.train.bench import bench

    for option, value, low in (("--steps", steps, 1), ("--batch", batch, 1), ("--warmup", warmup, 0)):
        if not low <= value <= (1 << 16):
            raise VitError(f"{option} {value}: must be a whole number in [{low}, 65536]")
    overrides = [*(sets or []), *([(f"model.res={res}", f"--res {res}")] if res else [])]
    cfg = (recipe.load(path, overrides) if path
           else recipe.from_data({"model": {"name": model or "B/16"}}, "vit bench", overrides))
    emit(bench(cfg, steps=steps, warmup=warmup, batch=batch, model=model if path else None), as_json, "vit bench")


def main() -> None:
    """Console-script entry point."""
    # Library warnings (e.g. a skipped undecodable image) reach the terminal as "warning: ..." lines.
    logging.basicConfig(format="%(levelname_lower)s: %(message)s", level=logging.WARNING)
    logging.getLogger().handlers[0].addFilter(_lower_level)
    app(prog_name="vit")


def _lower_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


if __name__ == "__main__":
    sys.exit(main())
