"""Safe file writing: every file `vit` writes appears whole or not at all.

A file is written to a temporary name in the same directory, flushed, fsynced and renamed into place,
so a kill at any moment leaves the old or the new file, never a torn one. Failures of the disk become
one-line `RunError`s that name the file. Used by the run directory, checkpoints and exports alike.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from vitcli.errors import RunError

TEMP_SUFFIX = ".tmp"  # atomic_write's temp files: ".<name>.<random>.tmp" beside the target


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that readers see either the old content or the complete new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = write_error(exc, path)
        if error is not None:
            raise error from None
        raise




def write_error(exc: BaseException, path: Path) -> RunError | None:
    """The one-line error for a failed write of `path`, or None when `exc` is not an I/O failure.

    The OSError may sit under another exception: torch.save into a file reports a full disk as a
    RuntimeError ("unexpected pos ...") whose context is the ENOSPC OSError of the failed write.
    """
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunError(f"disk full while writing {path}; nothing was replaced, earlier files are intact")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        return RunError(f"cannot write {path} ({exc.strerror}); choose another --out")
    return RunError(f"cannot write {path} ({exc.strerror or exc}); earlier files are intact")




def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files a killed writer left behind (call only while no one writes the run)."""
    found = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if folder.is_dir():
            found += [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found




def _fsync_dir(folder: Path) -> None:
    # The rename itself must reach the disk, or a power cut can undo it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)




def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    atomic_write(Path(path), lambda f: f.write(json.dumps(data, indent=2).encode()))
