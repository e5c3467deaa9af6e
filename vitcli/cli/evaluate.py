"""`vit eval`, `vit fewshot`, `vit predict` and `vit inspect`: a checkpoint, scored or looked at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from vitcli.cli import tables
from vitcli.cli.app import app
from vitcli.cli.options import (DataOpt, DpiOpt, EvalRecipeArg, FigureFormat, FigureFormatOpt, FromOpt,
                                IgnoreLabelsOpt, JsonOpt, ResOpt, SetOpt, SplitOpt, WeightsOpt, preflight)
from vitcli.cli.output import (best_weights, ema_note, emit, err_console, handle_errors, is_main_process, note,
                               reporter)
from vitcli.errors import RecipeError, VitError
from vitcli.formats import printable
from vitcli.recipe import assembly, ranges


@app.command("eval")
@handle_errors
def eval_cmd(path: EvalRecipeArg = None, from_: FromOpt = ..., data: DataOpt = None, split: SplitOpt = None,
             res: ResOpt = None, weights: WeightsOpt = None, ignore_labels: IgnoreLabelsOpt = False,
             sets: SetOpt = None,
             out: Annotated[Optional[Path], typer.Option(
                 "--out", "-o", help="Folder for the confusion matrix figure and eval.json.",
                 show_default=False)] = None, fig_format: FigureFormatOpt = FigureFormat.png, dpi: DpiOpt = 100,
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
    preflight(from_, path, sets)
    from vitcli.engine import jobs
    from vitcli.weights import reader

    from_, weights = best_weights(from_, weights)
    source = reader.read(from_)
    options = assembly.recipe_overrides(res, {"data.source": data, "data.eval_split": split}, weights)
    cfg = assembly.from_checkpoint(source, path, options, sets or [], assembly.EVALUATE)
    results = jobs.evaluate(cfg, source, ignore_labels=ignore_labels, out=out, log=reporter(as_json),
                             fmt=FigureFormat(fig_format).value, dpi=dpi)
    ema_note(weights, results)
    emit(results, as_json, tables.eval_table)


@app.command("fewshot")
@handle_errors
def fewshot_cmd(path: EvalRecipeArg = None, from_: FromOpt = ..., shots: Annotated[Optional[str], typer.Option(
        "--shots", help="Shot counts per class, comma-separated, e.g. 1,5,10,25.", show_default=False)] = None,
                seeds: Annotated[Optional[int], typer.Option("--seeds", help="Random draws per shot count.",
                                                             min=1, max=ranges.MAX_SEEDS, show_default=False)] = None,
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
    preflight(from_, path, sets)
    from vitcli.engine import jobs
    from vitcli.weights import reader

    from_, weights = best_weights(from_, weights)
    source = reader.read(from_)
    extra = {"fewshot.shots": [s.strip() for s in shots.split(",")] if shots else None, "fewshot.seeds": seeds,
             "data.source": data, "data.train_split": train_split, "data.eval_split": split,
             # --data is the one data set to evaluate on, in place of a recipe's list
             "fewshot.datasets": [] if data else None}
    options = assembly.recipe_overrides(res, extra, weights)
    cfg = assembly.from_checkpoint(source, path, options, sets or [], assembly.FEWSHOT)
    results = jobs.fewshot(cfg, source, log=reporter(as_json))
    ema_note(weights, results)
    emit(results, as_json, tables.fewshot_table)


@app.command("predict")
@handle_errors
def predict_cmd(inputs: Annotated[list[str], typer.Argument(
        help="Image files, folders of images (searched recursively), or a data source (imagefolder:PATH, a "
        "parquet folder, a hub id).", show_default=False, metavar="INPUT...")],
                from_: FromOpt = ...,
                top_k: Annotated[int, typer.Option(
                    "--top-k", help="Classes shown per image (more than the head has: all of them).", min=1)] = 5,
                csv: Annotated[Optional[Path], typer.Option(
                    "--csv", help="Also write the predictions to this CSV file.", show_default=False)] = None,
                split: Annotated[Optional[str], typer.Option(
                    "--split", help="Split of a data source INPUT; default: the one vit eval scores.",
                    show_default=False)] = None,
                batch: Annotated[Optional[int], typer.Option(
                    "--batch", help="Images per forward pass; default: eval.batch_size.", min=1, max=ranges.MAX_BATCH,
                    show_default=False)] = None,
                res: ResOpt = None, weights: WeightsOpt = None, sets: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Predict the classes of images: the top-k class names and probabilities of each.

    Images are prepared as vit eval prepares its data. Files that cannot be read are listed at the end
    and do not stop the run; the exit code is then 1.

    [b]Examples[/b]:
      [cyan]vit predict --from runs/demo photos/[/]
      [cyan]vit predict --from runs/cifar10-scratch cat.jpg dog.png --top-k 3 --json[/]
      [cyan]vit predict --from runs/cifar10-scratch ../shared/data/cifar10 --split test --csv preds.csv[/]
    """
    preflight(from_, None, sets)
    from vitcli.engine import jobs
    from vitcli.weights import reader

    if as_json and csv is not None:
        raise VitError("--json and --csv: choose one (--json prints to stdout, --csv writes a file)")
    from_, weights = best_weights(from_, weights)
    source = reader.read(from_)
    options = assembly.recipe_overrides(res, {"eval.batch_size": batch}, weights)
    cfg = assembly.from_checkpoint(source, None, options, sets or [], assembly.PREDICT)
    results = jobs.predict(cfg, source, inputs, split=split, top_k=top_k, log=reporter(as_json))
    if csv is not None:
        tables.write_predictions_csv(csv, results["predictions"], results["top_k"])
        if is_main_process():
            note(f"predictions written to {csv}")
    ema_note(weights, results)
    emit(results, as_json, tables.predict_table)
    for bad in results["unreadable"]:
        err_console.print(Text.assemble(("unreadable:", "bold red"), " " + printable(f"{bad['path']}: {bad['error']}")))
    if results["unreadable"]:
        raise typer.Exit(1)


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
                                                     "is averaged over.", min=1, max=ranges.MAX_BATCH)] = 64,
                out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs and "
                                                            "inspection.json. Default: inspect/<name>.",
                                                            show_default=False)] = None,
                res: ResOpt = None, weights: WeightsOpt = None, sets: SetOpt = None,
                fig_format: FigureFormatOpt = FigureFormat.png, dpi: DpiOpt = 100,
                as_json: JsonOpt = False) -> None:
    """Draw what a ViT learned (the paper's Figures 6 and 7) and a run's learning curves.

    Writes embedding_filters.png, posemb_similarity.png, attention_distance.png, attention_maps.png,
    learning_curves.png (for a RUN) and inspection.json with the numbers behind them.

    [b]Examples[/b]:
      [cyan]vit inspect runs/cifar10-scratch[/]
      [cyan]vit inspect --from model.safetensors --images cat.jpg --images dog.png --out figs[/]
    """
    preflight(from_ or run, None, sets)
    from vitcli.engine import jobs
    from vitcli.weights import reader

    if run is None and from_ is None:
        raise RecipeError("give a RUN directory or --from CHECKPOINT to inspect")
    if weights == "best":  # the run's best/ for the model figures; the run's curves stay the run's
        from_, weights = Path(best_weights(from_ or run, weights)[0]), None
    source = reader.read(from_ or run)
    run_dir = run if run is not None else (from_ if (from_ / "metrics.jsonl").is_file() else None)
    options = assembly.recipe_overrides(res, {"data.source": data}, weights)
    cfg = assembly.from_checkpoint(source, None, options, sets or [], assembly.INSPECT)
    if out is None:
        out = jobs.default_inspect_dir(assembly.source_name((run or from_).resolve()), source.path)
    report = jobs.inspect(cfg, source, Path(out), run_dir=run_dir, images=images, split=split, samples=samples,
                          log=reporter(as_json), fmt=FigureFormat(fig_format).value, dpi=dpi)
    emit(tables.inspect_summary(report), as_json, tables.inspect_table)
