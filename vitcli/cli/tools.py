"""`vit models`, `vit recipe list|show|check`, `vit export` and `vit bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from vitcli import recipe
from vitcli.cli import tables
from vitcli.cli.app import app, recipe_app
from vitcli.cli.options import BenchRecipeArg, JsonOpt, RecipeArg, SetOpt, WeightsOpt
from vitcli.cli.output import best_weights, emit, handle_errors, is_main_process, note, out_console
from vitcli.recipe import assembly, ranges

BENCH_STEPS = 1 << 16  # timed or warm-up steps of `vit bench`: more measure nothing new


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
        note(f"ok  {path}")


@app.command("export")
@handle_errors
def export_cmd(from_: Annotated[str, typer.Argument(
        help="What to export: a run directory or any --from checkpoint (file, folder or hub name).",
        show_default=False, metavar="RUN")],
               fmt: Annotated[str, typer.Option(
                   "--format", help="timm, hf (transformers), onnx or torchvision.")] = "timm",
               out: Annotated[Optional[Path], typer.Option(
                   "--out", "-o", help="New directory to write into. Default: RUN-FORMAT beside the run.",
                   show_default=False)] = None,
               weights: WeightsOpt = None, as_json: JsonOpt = False) -> None:
    """Write a model in a format other tools read: timm (safetensors + config.json), hf, onnx.

    [b]timm[/b]: timm.create_model('local-dir:OUT', pretrained=True) builds it.
    [b]hf[/b]: transformers.ViTForImageClassification.from_pretrained(OUT) loads it; a pre-logits layer becomes the pooler.
    [b]onnx[/b]: onnxruntime runs it (needs pip install 'vitcli\\[export]').
    [b]torchvision[/b]: torchvision.models.VisionTransformer(**config['torchvision_VisionTransformer']) loads model.pth.
    What a format cannot hold is named in one line.

    [b]Examples[/b]:
      [cyan]vit export runs/demo --format hf[/]
      [cyan]vit export runs/demo --format onnx --out exported/demo-onnx[/]
      [cyan]vit export ViT-B_16.npz --format hf --out vit-b16-hf[/]
    """
    from vitcli.weights import convert, reader

    from_, weights = best_weights(from_, weights)
    source = reader.read(from_)
    result = convert.export(source, fmt, out or convert.default_export_dir(from_, source, fmt), weights=weights or "ema")
    if result["not_carried"] and is_main_process():
        note(Text(f"not carried: {result['not_carried']}"))
    emit(result, as_json, f"vit export --format {fmt}")


@app.command("bench")
@handle_errors
def bench_cmd(path: BenchRecipeArg = None, model: Annotated[Optional[str], typer.Option(
        "--model", help="Variant to time instead of the recipe's, e.g. B/16.", show_default=False)] = None,
              res: Annotated[Optional[str], typer.Option(
                  "--res", help="Resolution to time at, e.g. 384 or 384x256.", show_default=False)] = None,
              batch: Annotated[int, typer.Option("--batch", help="Micro-batch to time.", min=1,
                                                 max=ranges.MAX_BATCH)] = 32,
              steps: Annotated[int, typer.Option("--steps", help="Timed training steps (after warm-up).", min=1,
                                                 max=BENCH_STEPS)] = 10,
              warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps first.", min=0,
                                                  max=BENCH_STEPS)] = 3,
              sets: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Time training steps on this machine: images/s, step time, MFU against the measured matmul peak, peak memory.

    Sizes a run before paying for it. Data loading is left out (see benchmarks/ for the loader).

    [b]Examples[/b]:
      [cyan]vit bench imagenet1k/b16 --batch 64[/]
      [cyan]vit bench --model S/16 --res 224 --batch 32 --steps 5[/]
      [cyan]vit bench demo --set train.precision=bf16 --json[/]
    """
    from vitcli.engine import jobs

    overrides = [*assembly.recipe_overrides(res), *(sets or [])]  # options first: a --set wins (assembly's order)
    cfg = (recipe.load(path, overrides) if path
           else recipe.from_data({"model": {"name": model or "B/16"}}, "vit bench", overrides))
    results = jobs.bench(cfg, steps=steps, warmup=warmup, batch=batch, model=model if path else None)
    emit(results, as_json, "vit bench")
