"""The recipes that ship with vit as package data: found by name after any kind of install."""

from __future__ import annotations

import re
from pathlib import Path

from vitcli.errors import RecipeError

SHIPPED = Path(__file__).resolve().parent.parent / "recipes"  # the one name of the shipped recipes folder


def locate(path: str | Path) -> Path:
    """The recipe file `path` names: the file itself when it exists, else a shipped recipe of that name.

    'demo', 'cifar10/scratch', 'finetune/cifar10_48.yaml' and 'recipes/demo.yaml' (the README's paths,
    typed outside a clone) all name shipped recipes; an existing file always wins.
    """
    path = Path(path)
    try:
        if path.exists():
            return path
    except (OSError, ValueError):  # a NUL byte or an over-long name: _read_yaml names the problem
        return path
    return by_name(path) or path


def by_name(name: str | Path) -> Path | None:
    """The shipped recipe file called `name` ('demo', 'cifar10/scratch', 'recipes/demo.yaml'), or None."""
    text = Path(name).as_posix().removeprefix("./").removeprefix("recipes/")
    candidate = SHIPPED / (text if text.endswith((".yaml", ".yml")) else f"{text}.yaml")
    return candidate if candidate.is_file() else None


def expand(paths) -> list[Path]:
    """Recipe files from files, shipped names and directories (every *.yaml below a directory, sorted).

    `recipes` or `recipes/finetune` outside a clone are the shipped folders, listed by those names.
    """
    out = []
    for path in map(Path, paths):
        shipped_dir = SHIPPED / path.as_posix().removeprefix("./").removeprefix("recipes").lstrip("/")
        if path.is_dir():
            found = sorted(path.rglob("*.yaml"))
            if not found:
                raise RecipeError(f"recipe check {path}: no recipe files (*.yaml) in this directory")
            out += found
        elif path.parts and path.parts[0] == "recipes" and shipped_dir.is_dir():
            out += [path / f.relative_to(shipped_dir) for f in sorted(shipped_dir.rglob("*.yaml"))]
        else:
            out.append(path)
    return out


def shipped() -> list[dict]:
    """The recipes that ship with vit: name, file and the first line of what their header says."""
    rows = []
    for file in sorted(SHIPPED.rglob("*.yaml")):
        name = file.relative_to(SHIPPED).with_suffix("").as_posix()
        rows.append({"name": name, "path": str(file), "about": _headline(file)})
    return rows


def _headline(file: Path, width: int = 72) -> str:
    """The first sentence of the header after the command that runs it, cut to `width` characters."""
    lines = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ").strip()
        if not (not lines and re.match(r"(\w+:\s*)?(vit|torchrun) ", text)):  # the command, maybe "then: vit ..."
            lines.append(text)
    text = " ".join(lines)
    for match in re.finditer(r"(\S+)\. ", text):
        if match.group(1).lstrip("(") not in ("al", "Sec", "e.g", "i.e", "vs", "Fig"):
            text = text[: match.end() - 2]
            break
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."
