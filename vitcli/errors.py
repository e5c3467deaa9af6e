"""The one family of errors `vit` shows to users.

Every message is a single line that names the file, field or value at fault and what would be valid.
The CLI catches `VitError`, prints its message and exits with `exit_code`; nothing else is caught there,
so a real bug still shows its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VitError(Exception):
    """A problem with the user's input (recipe, data, checkpoint, options): exit code 2, no traceback."""

    exit_code = 2


class RecipeError(VitError):
    """A recipe file or override is invalid."""


class DataError(VitError):
    """A data source is missing, unreachable or malformed."""


class CheckpointError(VitError):
    """A checkpoint is missing, corrupt, unsafe or does not fit the model."""


class RunError(VitError):
    """A run cannot start or continue (output directory, numerical fault, disk)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(choices: Iterable[str]) -> str:
    """Format valid choices for an error message."""
    return ", ".join(repr(c) if isinstance(c, str) else str(c) for c in choices)


def first_line(e: BaseException, *, sentence: bool = False, limit: int | None = None) -> str:
    """The first line of an exception's message (its type when it has none), control characters as '?':
    parsers quote the raw bytes they met, and a user's error is one printable line.

    `sentence`: only its first sentence, for libraries whose one line runs on ("Parquet magic bytes not
    found in footer. Either the file is corrupted or ..."); `limit`: at most that many characters.
    """
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if sentence:
        line = line.split(". ", 1)[0].rstrip(".")
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line if limit is None else line[:limit]
