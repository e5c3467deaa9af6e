"""The Typer application `vit` and its `recipe` group; the command modules register on them."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from vitcli import __version__

# Click's base error class, wherever this Typer keeps Click (recent versions vendor it as a private module).
_CLICK_ERROR = next(k for k in typer.BadParameter.__mro__ if k.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """Click's own refusals (an option outside its `min=`/`max=`, an unknown option, a missing argument)
    printed as the one `error:` line, exit code 2, that every other bad input gets (output.handle_errors),
    instead of a usage banner and a framed panel."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _CLICK_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `vit` alone: Typer has printed the help already
                if exc.format_message().strip():
                    typer.echo(exc.format_message(), err=True)
            else:
                from vitcli.cli.output import print_error

                print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except RuntimeError as exc:  # Click's Abort (an interrupted prompt): its standalone message
            if type(exc).__name__ != "Abort":
                raise
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="vit",
    cls=OneLineErrors,
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
    from vitcli.cli.streams import guarded_streams

    with guarded_streams():
        # Library warnings (e.g. a skipped undecodable image) reach the terminal as "warning: ..." lines
        # (through the guarded stderr, set up first).
        logging.basicConfig(format="%(levelname_lower)s: %(message)s", level=logging.WARNING)
        logging.getLogger().handlers[0].addFilter(_lower_level)
        app(prog_name="vit")


def _lower_level(record: logging.LogRecord) -> bool:
    from vitcli.formats import printable

    record.levelname_lower = record.levelname.lower()
    record.msg, record.args = printable(record.getMessage()), ()  # one line, whatever a name held
    return True
