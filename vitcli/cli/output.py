"""What every command shares on the way out: the one error boundary, JSON or Rich results, rank 0 only."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vitcli import formats
from vitcli.errors import VitError

out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
    from vitcli.engine import jobs  # loaded by now: results exist

    return jobs.launch_rank() == 0


def emit(results: dict, as_json: bool, table: str | Callable[[dict], Table]) -> None:
    """Results as one JSON object on stdout, or as a Rich table (once, from the main process).

    `table` is a function that renders the results, or the title of a plain metric/value table.
    """
    if not is_main_process():
        return
    if as_json:
        print(json.dumps(results, default=str))
        return
    out_console.print(table(results) if callable(table) else metric_table(results, table))


_RUN_RECORD = ("date", "vit_version", "command")  # in results.json and --json; a table shows the results


def metric_table(results: dict, title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if isinstance(value, dict) or (isinstance(value, list) and key != "res") or key in _RUN_RECORD:
            continue
        table.add_row(escape(key), escape(formats.metric(key, value)))
    return table


def ema_note(asked: str | None, results: dict) -> None:
    """Only a user who asked for the EMA weights by name needs to hear that there were none."""
    if asked == "ema" and results.get("weights") == "raw" and is_main_process():
        err_console.print("the checkpoint has no EMA weights; used the raw weights", markup=False)
