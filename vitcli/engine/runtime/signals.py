"""Preemption and Ctrl-C: finish the current step, save a checkpoint, exit with a resume hint.

A first SIGTERM or SIGINT only sets a flag that the training loop reads at the next step boundary (a
checkpoint of a half-applied step would be worthless). A second Ctrl-C means "now": it raises
KeyboardInterrupt at once, and the last checkpoint on disk is still intact because writes are atomic.
Work that writes nothing (the final evaluation, after the last checkpoint) runs under `immediately()`:
there a signal stops at once, since a preempted job has seconds, not the minutes an evaluation may take.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from vitcli.errors import VitError


class Interrupted(VitError):
    """The run stopped on a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell convention: 130 for SIGINT, 143 for SIGTERM


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a flag for the training loop."""

    def __init__(self, resume_hint: str):
        self.resume_hint = resume_hint
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._now: Callable[[], Interrupted] | None = None  # set inside `immediately()`

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def join(self, signum: int = signal.SIGTERM) -> None:
        """Stop with the other processes, which were asked to (torchrun passes the agent's SIGTERM on)."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if self._now is not None:
            raise self._now()

    @contextlib.contextmanager
    def immediately(self, error: Callable[[], Interrupted]):
        """Inside: a signal (or one that came just before) raises `error()` at once instead of waiting."""
        if self.requested:
            raise error()
        self._now = error
        try:
            yield
        finally:
            self._now = None

    def __enter__(self) -> "StopRequest":
        # Signal handlers can only be installed from the main thread (tests may run fit() elsewhere).
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def exit(self, saved: Path | None, step: int) -> Interrupted:
        """The error to raise once the checkpoint is saved."""
        name = signal.Signals(self.signum).name
        where = f"checkpoint saved: {saved}" if saved else "checkpoint saved by the main process"
        return Interrupted(f"stopped by {name} after step {step}; {where}; resume with: {self.resume_hint}",
                           self.signum)
