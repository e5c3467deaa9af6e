"""The run directory: what a training run leaves behind, and the guard against mixing two runs.

    runs/<name>/          (or runs/<name>-2, ... when taken)
      .lock               held (flock) by the one process writing the run, for its whole life
      recipe.yaml         the resolved recipe (every field, defaults included)
      recipe.json         the same as data, compared on --resume
      metrics.jsonl       one JSON object per logged step (and per evaluation)
      checkpoints/        step-XXXXXXXX.pt and `latest`
      model.safetensors   final weights with timm's key names, config.json beside it

Rules (docs/security.md): regular files only, never a link followed; one writer (the lock); nothing of
a run changes until a resume is known to be valid (`check` before `record`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from vitcli import files
from vitcli.errors import RunError, VitError
from vitcli.recipe.length import DOTTED
from vitcli.recipe.schema import diff

# Keys a resumed run may change when the user says so explicitly with --set: they alter how long or how
# often, not what is learned per step.
RESUMABLE_CHANGES = (*DOTTED, "train.log_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "eval.every", "data.workers",
                     "train.skip_nonfinite")
# What a run that stopped before logging or saving anything leaves: it may be started afresh.
_START_FILES = {"recipe.yaml", "recipe.json", files.LOCK_NAME}
# recipe.yaml opens with the hash of what the run wrote below it, so a hand edit is seen on resume.
_HEADER = "# vit run recipe; sha256 of the lines below as written: "
_MAX_RECIPE_BYTES = 1 << 20


def default_run_dir(name: str, *, resume: bool = False, restarted: bool = False) -> Path:
    """`runs/<name>` under the current directory, or the first free `runs/<name>-2`, `-3`, ... when taken.

    A short name the next command can type (`vit eval --from runs/demo`) that never mixes two runs;
    with `resume`, the run to continue is `runs/<name>` itself; a `restarted` job (torchrun, SLURM)
    continues the newest of them, which its first start made.
    """
    if restarted and not resume:
        return latest_numbered(name)
    first = Path("runs") / name
    if resume or not first.exists():
        return first
    n = 2
    while (first.parent / f"{name}-{n}").exists():
        n += 1
    return first.parent / f"{name}-{n}"


def holds_run(out: Path) -> bool:
    """Whether `out` holds a vit run (its recipe.json), which a restarted job continues."""
    return files.check_regular(Path(out) / "recipe.json", follow=False)


def latest_numbered(name: str) -> Path:
    """The run a restarted job without --out started: the newest of `runs/<name>`, `runs/<name>-2`, ...
    (the one `default_run_dir` gave its first start), else where a first start would go."""
    first = Path("runs") / name
    taken = [first] if first.exists() else []
    n = 2
    while (first.parent / f"{name}-{n}").exists():
        taken.append(first.parent / f"{name}-{n}")
        n += 1
    return taken[-1] if taken else first


@contextlib.contextmanager
def writer(out: Path, *, resume: bool) -> Iterator[None]:
    """Hold the run directory's lock for the `with` body; refuse a second writer in one line."""
    out = Path(out)
    _check_place(out, resume)
    with files.RunLock(out):
        yield


def new_folders(out: Path) -> list[Path]:
    """The folders a new run at `out` would create (`out` first, then its missing parents); [] if it exists."""
    out = Path(out)
    try:
        return [p for p in (out, *out.parents) if not (p.exists() or p.is_symlink())]
    except OSError:  # a name too long for the file system: the run's lock refuses it in one line
        return []


@contextlib.contextmanager
def undone_on_failure(created: list[Path]) -> Iterator[Callable[[], None]]:
    """Remove the folders of `created` (from `new_folders`, taken before anything was made) when the `with`
    body fails before it calls the callable it is given, the mark that the run has started.

    A start refused after the run directory was made (a split, a label, a model that cannot be built) then
    leaves nothing behind, so a retry gets the same runs/<name> and no empty shell is left for other commands
    to trip over. Call it with the run's lock held: nobody else writes there. Once started, a run's files
    stay (a checkpoint resumes it).
    """
    started = []
    try:
        yield lambda: started.append(True)
    except BaseException:
        if created and not started:
            _remove_new(created)
        raise


def _remove_new(created: list[Path]) -> None:
    out = created[0]
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out, ignore_errors=True)  # rmtree never follows a link out of the folder
    for parent in created[1:]:
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty: runs/ may have gained another run meanwhile


def prepare(out: Path, recipe_yaml: str, recipe_data: dict, *, resume: bool, allowed: set[str],
            resolve: Callable | None = None) -> None:
    """Check a run directory for a new run (and write its recipe) or for a resume (writing nothing).

    A resume writes its recipe only once the checkpoint has been read and fits (`record`). `resolve`
    turns the run's stored recipe into the one that ran, as the new recipe was (`check_resume`).
    """
    out = Path(out)
    _check_place(out, resume)
    if resume:
        check_resume(out, recipe_yaml, recipe_data, allowed, resolve)
        # A run killed mid-write leaves `.name.XXXX.tmp` files; the lock says nobody writes here now, so
        # they can only be debris (the complete files they would have become are older or never named).
        files.remove_temp_files(out)
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {out}: cannot write there ({exc.strerror}); choose another --out") from None
    if not os.access(out, os.W_OK):
        raise RunError(f"--out {out}: cannot write there (Permission denied); choose another --out")
    record(out, recipe_yaml, recipe_data)


def _check_place(out: Path, resume: bool) -> None:
    """Before anything is created: --out must be a directory that is new, never started, or --resume'd."""
    files.check_path(out, "--out")
    if out.is_symlink() and not out.is_dir():
        raise RunError(f"--out {out}: is a symbolic link to nothing usable; choose another --out")
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: is a file, not a directory; choose another --out")
    saved = out / "recipe.json"
    if resume:
        if not files.check_regular(saved, follow=False):
            raise RunError(f"--resume: {out} holds no vit run (no recipe.json); drop --resume to start a new run")
        return
    if out.is_dir() and not {p.name for p in out.iterdir()} <= _START_FILES:
        what = "another run" if saved.exists() else "files that are not a vit run"
        raise RunError(f"--out {out}: the directory already holds {what}; pass --resume to continue it "
                       "or choose a new --out")


def _with_defaults(old: dict, saved: Path, resolve: Callable | None = None) -> dict:
    """A stored recipe with the keys added to vit since it was written filled in at their defaults, and
    with what `resolve` fills in (a fine-tune's length and warm-up, which older versions chose only after
    recording the recipe), so a run from an older version resumes; one that no longer parses is compared
    as it is."""
    from vitcli.recipe import schema
    from vitcli.errors import VitError

    try:
        cfg = schema.from_dict(old, str(saved))
        return schema.to_dict(resolve(cfg) if resolve is not None else cfg)
    except VitError:
        return old


def check_resume(out: Path, recipe_yaml: str, recipe_data: dict, allowed: set[str],
                 resolve: Callable | None = None) -> None:
    """Refuse a resume whose recipe differs from the run's (beyond `allowed` changes), before any write."""
    saved = out / "recipe.json"
    _check_contents(out)
    try:
        old = json.loads(files.read_bytes(saved, limit=_MAX_RECIPE_BYTES))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunError(f"--resume: {saved} is unreadable ({str(exc) or 'nested too deeply'}); the run cannot be "
                       "checked, start a new --out") from None
    if not isinstance(old, dict):
        raise RunError(f"--resume: {saved} is not a recipe (a JSON object); the run cannot be checked, start a "
                       "new --out")
    differing = diff(_with_defaults(old, saved, resolve), recipe_data)
    refused = [k for k in differing if k not in allowed or k not in RESUMABLE_CHANGES]
    if refused:
        raise RunError(f"--resume: the recipe differs from the run in {out} at: {', '.join(refused[:8])}; "
                       f"resume with the same recipe (changeable with --set: {', '.join(RESUMABLE_CHANGES[:3])}); "
                       f"or continue it as it was, with no recipe: vit pretrain --resume --out {out}")
    if _edited_and_changed(out / "recipe.yaml", recipe_yaml):
        raise RunError(f"--resume: {out}/recipe.yaml was edited since the run wrote it, and this resume would "
                       "overwrite it; copy it elsewhere (pass the copy as RECIPE to use it) or delete it, then "
                       "resume")


def _check_contents(out: Path) -> None:
    """Every entry of the run directory (and of checkpoints/) is a regular file or a real directory.

    A link planted among the run's files would be followed by a later read or write; refusing the
    resume up front keeps the whole run, not just each file, to the rule.
    """
    for folder in (out, out / "checkpoints"):
        if folder is not out and not files.real_dir(folder).is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.is_symlink() or not (entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False)):
                files.check_regular(Path(entry.path), follow=False)  # raises the one-line refusal


def record(out: Path, recipe_yaml: str, recipe_data: dict) -> None:
    """Write the run's recipe files, each only when its content changes."""
    body = recipe_yaml.encode()
    yaml_path = out / "recipe.yaml"
    parts = _split(yaml_path)
    if parts is None or _sha(body) not in (parts[0], _sha(parts[1])):  # unchanged (edited or not): kept
        files.atomic_write(yaml_path, lambda f: f.write(f"{_HEADER}{_sha(body)}\n".encode() + body))
    text = json.dumps(recipe_data, indent=1).encode()
    saved = out / "recipe.json"
    if not (files.check_regular(saved, follow=False) and files.read_bytes(saved) == text):
        files.atomic_write(saved, lambda f: f.write(text))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _split(path: Path) -> tuple[str | None, bytes] | None:
    """(recorded hash or None, body) of a recipe.yaml, or None when there is none."""
    if not files.check_regular(path, follow=False):
        return None
    data = files.read_bytes(path, limit=_MAX_RECIPE_BYTES)
    first, _, rest = data.partition(b"\n")
    if first.startswith(_HEADER.encode()):
        return first[len(_HEADER):].decode("ascii", "replace").strip(), rest
    return None, data


def _edited_and_changed(path: Path, recipe_yaml: str) -> bool:
    """True when recipe.yaml was changed by hand and this recipe would have to replace it."""
    parts = _split(path)
    if parts is None:
        return False
    recorded, body = parts
    new = recipe_yaml.encode()
    if recorded == _sha(new) or body == new:
        return False  # the recipe is what the run wrote: nothing needs writing, the edit stays
    return recorded != _sha(body)


# What only a run that went to its end writes (jobs.train, after the final evaluation).
FINISHED_FILES = ("model.safetensors", "results.json")


def check_restart(out: Path, last: Path | None, done: int, total: int | None = None) -> None:
    """Refuse a resume that would train a finished run again from before its end.

    With its checkpoints gone (or only older ones left, `done` being the step of `last`), a resume would
    start over and overwrite the finished model.safetensors and results.json: a run's results are never
    replaced silently, so the user chooses (a new --out, or deleting the finished files first). The step
    it finished at is results.json's; when that file is gone or damaged, the run's length (`total`).
    """
    found = [name for name in FINISHED_FILES if os.path.lexists(out / name)]
    if not found:
        return
    finished_at = finished_step(out / "results.json")
    if finished_at is None:
        finished_at = total
    if last is not None and (finished_at is None or done >= finished_at):
        return
    where = (f"its newest checkpoint {last} is at step {done}, before the step {finished_at} it finished at"
             if last is not None else f"no checkpoint is left in {out}/checkpoints to continue from")
    raise RunError(f"--resume: {out} holds a finished run ({', '.join(found)}) and {where}; resuming would "
                   f"train it again and overwrite its results. Use it as it is (vit eval --from {out}), start a new "
                   f"--out, or delete {' and '.join(found)} to train it again")


def finished_step(path: Path, key: str = "steps") -> int | None:
    """The step a results.json recorded under `key` (a finished run's `steps`, best/'s `step`), or None when
    it cannot be read as a whole number."""
    try:
        steps = json.loads(files.read_bytes(path, limit=_MAX_RECIPE_BYTES)).get(key)
    except (OSError, ValueError, AttributeError, RecursionError, VitError):
        return None
    return steps if type(steps) is int else None
