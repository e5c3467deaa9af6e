"""What every command shares on the way out: the one error boundary, JSON or Rich results, rank 0 only."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vitcli import formats
from vitcli.formats import printable
from vitcli.cli.options import LogFormat, LogFormatOpt, QuietOpt
from vitcli.errors import VitError

out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class _Mode:
    """This invocation's output mode (`--quiet`, `--log-format`), set by `handle_errors`."""

    quiet = False
    fmt = "text"
    bars_off = False  # whether this process turned datasets' progress bars off
    level: int | None = None  # the root logger's level before a quiet command lowered it
    formatters: list = []  # (handler, formatter) pairs a JSON-log command replaced, put back after it


def handle_errors(func):
    """The boundary every command shares: a VitError becomes one red line on stderr (a JSON object with
    `--log-format json`) and its exit code; nothing else is swallowed. It also adds the output options
    `--quiet` and `--log-format` to the command, so they are declared once for all of them."""

    @functools.wraps(func)
    def wrapper(*args, quiet: bool = False, log_format: LogFormat = LogFormat.text, **kwargs):
        _Mode.quiet, _Mode.fmt = quiet, LogFormat(log_format).value
        _configure_logging()
        try:
            return func(*args, **kwargs)
        except VitError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _error("interrupted; the last checkpoint on disk is intact")
            raise typer.Exit(130) from None
        finally:  # a process that runs commands in turn (tests, notebooks) gets its own level back
            _restore_level()

    signature = inspect.signature(func, eval_str=True)  # Typer reads the options off these annotations
    extra = [inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=QuietOpt),
             inspect.Parameter("log_format", inspect.Parameter.KEYWORD_ONLY, default=LogFormat.text,
                               annotation=LogFormatOpt)]
    params = list(signature.parameters.values())
    wrapper.__signature__ = signature.replace(parameters=params + extra)
    wrapper.__annotations__ = {**func.__annotations__, "quiet": QuietOpt, "log_format": LogFormatOpt}
    return wrapper


def _error(message: str) -> None:
    if _Mode.fmt == "json":
        print(json.dumps({"level": "error", "message": message}), file=sys.stderr, flush=True)
    else:
        err_console.print(Text.assemble(("error:", "bold red"), " ", message))


def note(message: str | Text) -> None:
    """A line about the command's own work (a file written, what was not carried), as the mode says
    (callers under torchrun check `is_main_process` first: asking here would load torch for every command)."""
    if _Mode.quiet:
        return
    if _Mode.fmt == "json":
        print(json.dumps({"level": "info", "message": str(message)}), file=sys.stderr, flush=True)
    else:
        err_console.print(message if isinstance(message, Text) else Text(printable(message, lines=True)))


def reporter(as_json: bool = False):
    """The engine's reporter for this invocation: rank 0 only, in the output mode the options chose;
    with the command's `--json` the run summary is a JSON object too."""
    from vitcli.engine import jobs

    return jobs.Reporter(enabled=jobs.launch_rank() == 0, quiet=_Mode.quiet, fmt=_Mode.fmt, json_summary=as_json)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": record.levelname.lower(), "message": record.getMessage()})


def _restore_level() -> None:
    """The root logger's level and handlers' formats as they were before the command changed them."""
    if _Mode.level is not None:
        logging.getLogger().setLevel(_Mode.level)
        _Mode.level = None
    for handler, formatter in _Mode.formatters:
        handler.setFormatter(formatter)
    _Mode.formatters = []


def _configure_logging() -> None:
    """Library warnings (a skipped image) follow the mode: none when quiet, JSON lines with json."""
    root = logging.getLogger()
    if _Mode.quiet:  # otherwise the level stays whoever set it (main's WARNING, a test's caplog)
        _Mode.level = root.level
        root.setLevel(logging.ERROR)
    # datasets draws tqdm bars (preparing a split): noise when quiet, and not JSON. The variable is read
    # when datasets is imported; a process that imported it already (tests) is told directly.
    quiet_bars = _Mode.quiet or _Mode.fmt == "json"
    if quiet_bars:
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "datasets" in sys.modules and quiet_bars != _Mode.bars_off:  # a user's own setting is left alone
        datasets = sys.modules["datasets"]
        datasets.disable_progress_bars() if quiet_bars else datasets.enable_progress_bars()
    _Mode.bars_off = quiet_bars
    if _Mode.fmt == "json":
        for handler in root.handlers:
            _Mode.formatters.append((handler, handler.formatter))
            handler.setFormatter(_JsonLines())


def best_weights(from_, weights: str | None) -> tuple[str, str | None]:
    """`--weights best`: the run's best/ folder (train.keep_best) stands in for the run itself."""
    if weights not in (None, "ema", "raw", "best"):
        raise VitError(f"--weights {weights!r}: valid: 'ema', 'raw', 'best' (the run's best/)")
    if weights != "best":
        return str(from_), weights
    folder = Path(from_) / "best"
    if not (folder / "model.safetensors").is_file():
        raise VitError(f"--weights best: {folder} holds no model; a run keeps its best evaluation there when its "
                       "recipe sets train.keep_best (e.g. --set train.keep_best=top1 --set eval.every=500)")
    return str(folder), None


def print_error(message: str) -> None:
    """The one `error:` line on stderr that every bad input gets (a JSON line with --log-format json)."""
    # The message is data, not markup: "[train]" in a split name must print as written. A value quoted
    # in it may hold a newline or a control character: escaped, the error stays one line.
    _error(printable(message))


def plain(text: object) -> str:
    """User text for a Rich table or line: control characters escaped (formats.printable), and markup too
    ("[train]" in a split name prints as written)."""
    return escape(printable(text))


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
        table.add_row(plain(key), plain(formats.metric(key, value)))
    return table


def ema_note(asked: str | None, results: dict) -> None:
    """Only a user who asked for the EMA weights by name needs to hear that there were none."""
    if asked == "ema" and results.get("weights") == "raw" and is_main_process():
        note("the checkpoint has no EMA weights; used the raw weights")
