"""What a data-source string names, parsed once: `SourceRef.parse` is the one reader of that syntax.

- `builtin:NAME`: a data set shipped with a library (`builtin:digits`);
- `imagefolder:PATH`: one folder per class (or per split, then per class);
- a local path (parquet/arrow files, a `save_to_disk` directory): any path that exists, and anything
  written as a path (`/`, `.`, `~` first, a backslash, or more than one `/`) so that a typo is reported
  as a missing path rather than looked up on the hub;
- otherwise a Hugging Face hub id, `name` or `owner/name`.

Torch-free: the recipe layer resolves relative paths with it when it reads a recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BUILTIN, IMAGEFOLDER = "builtin:", "imagefolder:"


@dataclass(frozen=True)
class SourceRef:
    """A data source: its `kind` and `target` (the builtin's name, the path as written, or the hub id)."""

    text: str  # as the user gave it: errors quote it
    kind: Literal["builtin", "imagefolder", "local", "hub"]
    target: str

    @classmethod
    def parse(cls, text: str) -> SourceRef:
        """Read a data-source string (see the module docstring for the forms)."""
        if text.startswith(BUILTIN):
            return cls(text, "builtin", text.removeprefix(BUILTIN))
        if text.startswith(IMAGEFOLDER):
            return cls(text, "imagefolder", text.removeprefix(IMAGEFOLDER))
        if Path(text).expanduser().exists() or _looks_like_path(text):
            return cls(text, "local", text)
        return cls(text, "hub", text)

    @property
    def path(self) -> Path:
        """The folder or file of an image folder or local source (`~` expanded)."""
        return Path(self.target).expanduser()

    @property
    def name(self) -> str:
        """The last part of the target ("cifar10" of `uoft-cs/cifar10` or `../data/cifar10/`, "digits")."""
        return re.split(r"[/\\]", self.target.rstrip("/\\"))[-1]

    def resolved(self, folder: Path) -> SourceRef:
        """The source with an explicitly relative path ("./x", "../x", also after `imagefolder:`) taken from
        `folder` (a recipe's own); "org/name" stays a hub id, and every other source is returned as it is."""
        if self.kind not in ("imagefolder", "local") or not self.target.startswith(("./", "../")):
            return self
        target = str((folder / self.target).resolve())
        return SourceRef.parse(IMAGEFOLDER + target if self.kind == "imagefolder" else target)

    def __str__(self) -> str:
        return self.text


def _looks_like_path(text: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a slash or a path prefix is a path.
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text
