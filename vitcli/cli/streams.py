"""The guard on stdout and stderr themselves, around the whole command line (`vitcli.cli.app.main`).

A command's own errors are caught by `output.handle_errors`; this is about the streams it prints to:
a closed pipe, a full disk behind a redirection, a locale that cannot encode a file name.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class OutputClosed(BaseException):
    """The reader of stdout went away (`vit ... | head`). A BaseException: no `except Exception`
    on the way (a data loader, a cleanup) may take it for a failure of its own."""


class OutputFailed(BaseException):
    """stdout cannot be written (a full disk, an I/O error): `name` and the OSError."""

    def __init__(self, name: str, error: OSError):
        super().__init__(name, error)
        self.name, self.error = name, error


class _GuardedFile(io.FileIO):
    """fd 1 or 2, whose write failures never end in a traceback. stdout holds the results: a failure there
    ends the command (OutputClosed / OutputFailed). stderr holds progress, warnings and errors: when it
    cannot be written they go nowhere and the work goes on (a training run is not stopped by a log)."""

    def __init__(self, fd: int, name: str, closed: bool = False):
        super().__init__(fd, "wb", closefd=False)
        self.stream_name, self.closed_at_start = name, closed

    def write(self, data) -> int | None:
        try:
            if self.closed_at_start:  # `vit ... >&-`: what was asked for cannot be shown (said once; the
                self.closed_at_start = False  # fd is /dev/null, which takes what is flushed at exit)
                raise OSError(errno.EBADF, "it was closed when vit started")
            return super().write(data)
        except OSError as exc:
            if self.stream_name == "stderr":
                _discard(2)
                return len(data)
            if exc.errno == errno.EPIPE:
                raise OutputClosed() from None
            raise OutputFailed(self.stream_name, exc) from None


@contextmanager
def guarded_streams() -> Iterator[None]:
    """Run the command line with stdout and stderr that never end it in a traceback.

    A closed stdout pipe ends the command quietly with exit code 0, as `head` expects of any Unix tool;
    stdout that cannot be written (`> /dev/full`) is one line on stderr and exit code 2; stderr that cannot
    be written is dropped, and the command goes on. Text the locale cannot
    encode (a file name in another script, or undecodable bytes kept by Python as surrogates) is printed
    with backslash escapes instead of raising UnicodeEncodeError.
    """
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        try:
            os.fstat(fd)
            closed = False
        except OSError:
            # Started with this stream closed (`>&-`): /dev/null takes its number, so no file opened later
            # becomes fd 1 or 2 and receives what a library prints; a write to stdout is then an error.
            _discard(fd)
            closed = True
        setattr(sys, name, io.TextIOWrapper(io.BufferedWriter(_GuardedFile(fd, name, closed)),
                                            encoding=getattr(old, "encoding", None) or "utf-8",
                                            errors="backslashreplace", line_buffering=name == "stderr"
                                            or bool(getattr(old, "line_buffering", False))))
    try:
        try:
            yield
        finally:
            sys.stdout.flush()  # inside the guard: a failure of the last output is caught below
    except OutputClosed:
        _discard(1)
        raise SystemExit(0) from None
    except OutputFailed as exc:
        _discard(1)
        _say(f"error: cannot write to stdout ({exc.error.strerror or exc.error}); the output is incomplete")
        raise SystemExit(2) from None


def _discard(*fds: int) -> None:
    """Point these of stdout and stderr at /dev/null: what is still buffered goes nowhere, exit is quiet.
    (A closed fd 1 or 2 is the lowest free number, so /dev/null may open right there: then it stays.)"""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        if fd != null:
            os.dup2(null, fd)
    if null not in fds:
        os.close(null)


def _say(line: str) -> None:
    try:
        os.write(2, (line + "\n").encode(getattr(sys.stderr, "encoding", None) or "utf-8", "backslashreplace"))
    except OSError:  # stderr fails too: the exit code is all that is left
        pass
