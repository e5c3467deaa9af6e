"""A run's sessions: every process that worked on it, each with its command, start and wall time.

results.json lists them (`sessions`) and sums their wall time (`wall_s`), so a resumed run keeps its
history and its wall time never reads less than its training time (`train_s`, also summed over
sessions). Checkpoints carry the list, so a session that was stopped (SIGTERM, a crash) still counts,
up to its last checkpoint, like its training time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone


@dataclass
class Session:
    """This process's part of a run."""

    command: str
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    started: float = field(default_factory=time.monotonic)


def start(command: str) -> Session:
    """A session that starts now."""
    return Session(command)


def current(session: Session) -> dict:
    """The session as results.json and checkpoints record it, its wall time up to now."""
    return {"command": session.command, "date": session.date, "wall_s": round(time.monotonic() - session.started, 3)}


def restored(stored, train_seconds: float) -> list[dict]:
    """The earlier sessions a checkpoint lists. A checkpoint of an older vit lists none but may have trained:
    its time is one session of unknown command, so the sums stay true."""
    if isinstance(stored, list) and all(_valid(s) for s in stored):
        return [{"command": s.get("command"), "date": s.get("date"), "wall_s": float(s["wall_s"])} for s in stored]
    return [{"command": None, "date": None, "wall_s": round(train_seconds, 3)}] if train_seconds > 0 else []


def _valid(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("wall_s"), (int, float))
            and all(isinstance(entry.get(k), (str, type(None))) for k in ("command", "date")))


def totals(before: list[dict], session: Session, train_s: float) -> dict:
    """results.json's `wall_s` (every session's, never less than the training time) and `sessions`."""
    sessions = [*before, current(session)]
    wall = round(sum(s["wall_s"] for s in sessions), 3)
    return {"wall_s": max(wall, train_s), "sessions": sessions}
