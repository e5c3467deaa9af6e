"""The run directory: what a training run leaves behind, and the guard against mixing two runs.

    runs/<name>-<timestamp>/
      recipe.yaml         the resolved recipe (every field, defaults included)
      recipe.json         the same as data, compared on --resume
      metrics.jsonl       one JSON object per logged step (and per evaluation)
      checkpoints/        step-XXXXXXXX.pt and `latest`
      model.safetensors   final weights with timm's key names, config.json beside it
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vitcli.errors import RunError
from vitcli.files import atomic_write, remove_temp_files

# Keys a resumed run may change when the user says so explicitly with --set: they alter how long or how
# often, not what is learned per step.
RESUMABLE_CHANGES = ("train.steps", "train.epochs", "train.examples", "train.log_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "eval.every", "data.workers",
                     "train.skip_nonfinite")


def default_out(name: str) -> Path:
    """`runs/<name>-<timestamp>` under the current directory."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare(out: Path, recipe_yaml: str, recipe_data: dict, *, resume: bool, allowed: set[str]) -> None:
    """Create or reopen a run directory; refuse to mix two different runs in one directory."""
    out = Path(out)
    saved = out / "recipe.json"
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: is a file, not a directory; choose another --out")
    if resume:
        _check_resumable(out, saved, recipe_data, allowed)
        # A run killed mid-write leaves `.name.XXXX.tmp` files; nothing else writes here now, so they
        # can only be debris (the complete files they would have become are older or were never named).
        remove_temp_files(out)
    elif out.exists() and any(out.iterdir()) and not _never_started(out):
        what = "another run" if saved.is_file() else "files that are not a vit run"
        raise RunError(f"--out {out}: the directory already holds {what}; pass --resume to continue it "
                       "or choose a new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"--out {out}: cannot write there ({exc.strerror}); choose another --out") from None
    atomic_write(out / "recipe.yaml", lambda f: f.write(recipe_yaml.encode()))
    atomic_write(saved, lambda f: f.write(json.dumps(recipe_data, indent=1).encode()))


def _never_started(out: Path) -> bool:
    """A run that stopped before logging or saving anything (bad data, say) holds only its recipe; it
    may be started afresh, so that rerunning the same command after fixing the input just works."""
    return {p.name for p in out.iterdir()} <= {"recipe.yaml", "recipe.json"}


def _check_resumable(out: Path, saved: Path, recipe_data: dict, allowed: set[str]) -> None:
    if not saved.is_file():
        raise RunError(f"--resume: {out} holds no vit run (no recipe.json); drop --resume to start a new run")
    try:
        old = json.loads(saved.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunError(f"--resume: {saved} is unreadable ({exc}); the run cannot be checked, start a new "
                       "--out") from None
    differing = diff(old, recipe_data)
    refused = [k for k in differing if k not in allowed or k not in RESUMABLE_CHANGES]
    if refused:
        raise RunError(f"--resume: the recipe differs from the run in {out} at: {', '.join(refused[:8])}; "
                       f"resume with the same recipe (changeable with --set: {', '.join(RESUMABLE_CHANGES[:3])})")


def diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two recipe dicts (the run section is ignored)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if path == "run":
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff(a, b, path + ".")
        elif a != b:
            keys.append(path)
    return keys
