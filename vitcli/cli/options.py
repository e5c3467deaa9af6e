"""Options shared by several commands, declared once as `Annotated` aliases."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

RecipeArg = Annotated[Path, typer.Argument(
    help="Recipe YAML file, or the name of a shipped recipe (vit recipe list), e.g. demo or cifar10/scratch.",
    show_default=False, metavar="RECIPE")]
FinetuneRecipeArg = Annotated[Optional[Path], typer.Argument(
    help="Recipe YAML file or shipped recipe name (optional); default: finetune/default, the paper's "
    "fine-tuning settings, on the checkpoint's own data.", show_default=False, metavar="RECIPE")]
PretrainRecipeArg = Annotated[Optional[Path], typer.Argument(
    help="Recipe YAML file or shipped recipe name (vit recipe list), e.g. demo or cifar10/scratch; optional: "
    "default pretrain/default (give --data), or with --resume --out RUN the run's own recipe.",
    show_default=False, metavar="RECIPE")]
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
    "recipe's eval.weights, ema); best: the run's best/ (kept by train.keep_best).", show_default=False)]
DataOpt = Annotated[Optional[str], typer.Option(
    "--data", help="Data source instead of the checkpoint's (hub id, local dir, imagefolder:PATH); its own "
    "splits are used unless --split names one.", show_default=False)]
PretrainDataOpt = Annotated[Optional[str], typer.Option(
    "--data", help="Data source to train on (hub id, local parquet/arrow dir, imagefolder:PATH, builtin:digits), "
    "instead of the recipe's; its own splits are used (train; test, else validation, else a held-out part of "
    "train).", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="Model variant, e.g. Ti/16, S/16, B/16 or a tiny Ti/4 (vit models lists them); replaces the "
    "recipe's.", show_default=False)]
StepsOpt = Annotated[Optional[int], typer.Option(
    "--steps", help="Training length in optimiser steps; replaces the recipe's length in any unit.",
    show_default=False)]
EpochsOpt = Annotated[Optional[float], typer.Option(
    "--epochs", help="Training length in passes over the training split; replaces the recipe's length in any unit.",
    show_default=False)]
SplitOpt = Annotated[Optional[str], typer.Option(
    "--split", help="Split expression to score, e.g. test or train[98%:]. Default: the data's test, else "
    "validation split.", show_default=False)]
IgnoreLabelsOpt = Annotated[bool, typer.Option(
    "--ignore-labels", help="Score data label i as the head's output i, even where the class names differ.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print only the result and errors: no progress, no log lines.")]


class LogFormat(str, Enum):
    """How log and progress lines are written on stderr."""

    text = "text"
    json = "json"


LogFormatOpt = Annotated[LogFormat, typer.Option(
    "--log-format", help="text, or json: every log and progress line on stderr as one JSON object (for "
    "cluster log collectors).")]


class FigureFormat(str, Enum):
    """File format of vit inspect's and vit eval --out's figures."""

    png = "png"
    pdf = "pdf"
    svg = "svg"


FigureFormatOpt = Annotated[FigureFormat, typer.Option(
    "--format", help="Figure file format: png, or pdf / svg (vector, for papers).")]
DpiOpt = Annotated[int, typer.Option("--dpi", min=30, max=1200, help="Resolution of PNG figures.")]


def preflight(from_: str | None = None, recipe_path: Path | None = None, sets: list[str] | None = None) -> None:
    """The checks that need no heavy library, before torch, timm and datasets load (seconds): the --from
    path exists, the RECIPE file exists and parses, every --set key is one of the schema's."""
    from vitcli import recipe
    from vitcli.weights.remote import local_path

    if from_ is not None:
        local_path(str(from_))
    if recipe_path is not None:
        recipe.read(recipe_path)
    recipe.check_overrides(sets or [])


def length_options(steps: int | None, epochs: float | None) -> dict[str, object]:
    """--steps / --epochs as the recipe keys they set (one of them at most)."""
    from vitcli.errors import RecipeError

    if steps is not None and epochs is not None:
        raise RecipeError(f"--steps {steps} and --epochs {epochs:g}: give one training length, not both")
    return {"train.steps": steps, "train.epochs": epochs}
