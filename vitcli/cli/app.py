"""The Typer application `vit` and its `recipe` group; the command modules register on them."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from vitcli import __version__

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


def _version(value: bool) -> None:
    if value:
        print(f"vit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Pretrain, fine-tune, evaluate and few-shot-evaluate Vision Transformers from YAML recipes."""


def main() -> None:
    """Console-script entry point."""
    # Library warnings (e.g. a skipped undecodable image) reach the terminal as "warning: ..." lines.
    logging.basicConfig(format="%(levelname_lower)s: %(message)s", level=logging.WARNING)
    logging.getLogger().handlers[0].addFilter(_lower_level)
    app(prog_name="vit")


def _lower_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True
