"""Safe files: every file `vit` writes appears whole or not at all, and nothing in a run directory is
followed anywhere else.

Writes go to a temporary name in the same directory, are flushed, fsynced and renamed into place, so a
kill at any moment leaves the old or the new file, never a torn one. Reads and writes inside a run
directory accept regular files only and never follow a symbolic link: a link planted there (to
`~/.bashrc`, say) is refused in one line instead of being truncated, appended to or loaded. A run
directory has one writer, held by an advisory lock for the run's whole life. New files get the user's
umask (0644 under the usual 022), as files made by any other tool. Failures are one-line `RunError`s
(or the error class the caller names) that say which file.

Files and folders a user names for a command's output (`--csv`, `vit inspect --out`, `vit export --out`) are
not run directories: a link the user made (a home or project folder on another disk) is followed, once, at
the boundary (`user_file`, `user_dir`, `new_dir`); what is written below the resolved folder obeys the above.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from vitcli.errors import RunError, VitError

TEMP_SUFFIX = ".tmp"  # atomic_write's temp files: ".<name>.<random>.tmp" beside the target
LOCK_NAME = ".lock"  # the run directory's lock file (empty; the lock is the flock on it)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def check_path(path: Path | str, who: str, error: type[VitError] = RunError) -> None:
    """A path the user gave must be one the OS can take: no NUL byte, at most 255 bytes a name, 4095 in all
    (else `open` raises ValueError or ENAMETOOLONG deep inside whatever reads it)."""
    text = str(path)
    if "\x00" in text:
        raise error(f"{who} {text!r}: contains a NUL byte; give a path without one")
    raw = os.fsencode(text)
    if len(raw) > 4095 or any(len(part) > 255 for part in raw.split(b"/")):
        raise error(f"{who} {text[:60]}...: too long ({len(raw)} bytes; at most 255 a name, 4095 in all); give a "
                    "shorter path")


def kind(mode: int) -> str:
    """What a file of this st_mode is, in words ("a FIFO (named pipe)", "a symbolic link", ...)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_regular(path: Path, *, follow: bool, error: type[VitError] = RunError, who: str = "") -> bool:
    """True when `path` is a regular file, False when it does not exist; raise when it is anything else:
    `follow=False` (inside a run directory) refuses a link even to a regular file; `follow=True` (a file the
    user named) accepts a link, still only to a regular file (a FIFO would block, a device stream forever)."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise error(f"{who}{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{who}{path}: refused: it is {kind(info.st_mode)}, not a regular file; "
                    + ("a run directory holds only the regular files the run wrote" if not follow
                       else "give a regular file"))
    return True


class NotRegular(Exception):
    """What `open_regular` found instead of a regular file; its one argument says what, in words."""


def open_regular(path: Path, *, follow: bool) -> BinaryIO:
    """A regular file opened for reading, never blocking (a FIFO) nor following a link (follow=False). Raises
    os.open's OSError (ELOOP: a link) or ValueError (a NUL byte), or NotRegular; callers word them."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else _NOFOLLOW))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegular(kind(info.st_mode))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def open_read(path: Path, *, follow: bool, error: type[VitError] = RunError, who: str = "") -> BinaryIO:
    """Open a regular file for reading without ever blocking (a FIFO) or following a link (follow=False)."""
    try:
        return open_regular(path, follow=follow)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:  # O_NOFOLLOW met a link
            raise error(f"{who}{path}: refused: it is a symbolic link, not a regular file; a run directory "
                        "holds only the regular files the run wrote") from None
        if exc.errno == errno.ENOENT:
            raise error(f"{who}{path}: no such file") from None
        raise error(f"{who}{path}: cannot be read ({exc.strerror})") from None
    except NotRegular as exc:
        raise error(f"{who}{path}: refused: it is {exc}, not a regular file; give a regular file") from None


def read_bytes(path: Path, *, follow: bool = False, limit: int | None = None,
               error: type[VitError] = RunError) -> bytes:
    """The content of a regular file (at most `limit` bytes are read; more is an error)."""
    with open_read(path, follow=follow, error=error) as handle:
        data = handle.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise error(f"{path}: refused: larger than the {limit} bytes such a file can hold")
    return data


def real_dir(folder: Path, *, create: bool = False) -> Path:
    """`folder` as a real directory inside a run directory (created when asked); a link is refused."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        if not create:
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, folder) from None
        return folder
    if not stat.S_ISDIR(info.st_mode):
        raise RunError(f"{folder}: refused: it is {kind(info.st_mode)}, not a directory; a run directory holds "
                       "only the files and folders the run made")
    return folder


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that readers see either the old content or the complete new one. The target may be
    missing or a regular file; a link or anything else in its place is refused (renaming over a link would
    not follow it, but a planted link says the directory is not the run's)."""
    path = Path(path)
    real_dir(path.parent, create=True)
    check_regular(path, follow=False)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        # O_EXCL|O_NOFOLLOW: never open someone else's file or link; mode 0o666 lets the umask decide
        # (tempfile.mkstemp would make every run file 0600, unreadable to a team on a shared cluster).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
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
        tmp.unlink(missing_ok=True)
        error = write_error(exc, path)
        if error is not None:
            raise error from None
        raise


def create_new(path: Path) -> BinaryIO:
    """A new regular file opened for writing: O_EXCL|O_NOFOLLOW, so a file or link already there (planted
    under a name the run was about to use) is refused instead of being truncated or followed."""
    real_dir(Path(path).parent, create=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    except FileExistsError:
        raise RunError(f"{path}: refused: something is already there under the name of a new file; a run "
                       "directory holds only the regular files the run wrote") from None
    except OSError as exc:
        raise write_error(exc, path) from None
    return os.fdopen(fd, "wb")


def user_file(path: Path | str, data: bytes, who: str) -> Path:
    """Write `data` to a file the user named (`--csv FILE`): atomically when it is (or will be) a regular
    file, its folders' links followed; straight through when it is this process's stdout or stderr
    (`/dev/stdout`, even redirected to a file), a FIFO or a character device such as /dev/null."""
    check_path(path, who)
    path = Path(path).expanduser()
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise RunError(f"{who} {path}: cannot be written ({exc.strerror}); choose another {who}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise RunError(f"{who} {path}: is a directory; give a file name")
    stream = _standard_stream(info)
    if stream is not None or (info is not None and not stat.S_ISREG(info.st_mode)):
        _write_through(path, data, stream, who)
        return path
    folder = user_dir(path.parent, who)
    try:
        atomic_write(Path(os.path.realpath(folder / path.name)), lambda f: f.write(data))
    except RunError as exc:  # its advice names the run's --out; here the file is the user's
        raise RunError(str(exc).replace("choose another --out", f"choose another {who}")) from None
    return path


def _standard_stream(info: os.stat_result | None):
    """sys.stdout or sys.stderr when `info` is the file behind them, else None."""
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            same = info is not None and os.path.samestat(info, os.fstat(fd))
        except OSError:
            continue
        if same:
            return stream
    return None


def _write_through(path: Path, data: bytes, stream, who: str) -> None:
    try:
        if stream is not None:
            stream.flush()  # what was printed before comes first
            stream.buffer.write(data)
            stream.flush()
            return
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # a FIFO nobody reads is refused, not waited on
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise RunError(f"{who} {path}: cannot be written ({exc.strerror}); choose another {who}") from None


def user_dir(path: Path | str, who: str) -> Path:
    """A folder the user named for a command's output, created when missing, returned resolved: a link the
    user made is followed here, once; what is written inside goes through the safe-file layer."""
    check_path(path, who)
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise RunError(f"{who} {path}: is a file, not a directory; choose another {who}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{who} {path}: cannot create it ({_why(exc)}); choose another {who}") from None
    return Path(os.path.realpath(path))


@contextmanager
def new_dir(path: Path | str, who: str) -> Iterator[Path]:
    """A new directory that appears whole or not at all: the caller writes into a temporary folder beside
    `path`, renamed to `path` when the block ends; on any failure it is removed and `path` is untouched.
    `path` may be missing or an empty directory (a link to one is followed)."""
    check_path(path, who)
    path = Path(os.path.realpath(Path(path).expanduser()))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunError(f"{who} {path}: already exists and is not an empty directory; choose a new {who}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name[:50]}.{secrets.token_hex(4)}.partial"
        os.mkdir(tmp)  # exclusive: never someone else's folder
    except OSError as exc:
        raise RunError(f"{who} {path}: cannot create it ({_why(exc)}); choose another {who}") from None
    try:
        yield tmp
        _fsync_dir(tmp)
        os.rename(tmp, path)  # replaces an empty directory; fails, and changes nothing, over anything else
        _fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = write_error(exc, path)
        if error is not None:  # named where the user will look for it, not by the temporary folder's name
            raise type(error)(str(error).replace(str(tmp), str(path))) from None
        raise


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a part of the path is a file, not a directory"
    return exc.strerror or str(exc)


def append_line(path: Path, line: str) -> None:
    """Append one line to a regular file (created when missing), fsynced; a failed append leaves no torn line."""
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            check_regular(path, follow=False)  # raises the one-line refusal
        raise write_error(exc, path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RunError(f"{path}: refused: it is {kind(info.st_mode)}, not a regular file; a run directory "
                           "holds only the regular files the run wrote")
        size = info.st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as exc:
            # A full disk may take half the line: cut it off again, so the log still parses line by line.
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise write_error(exc, path) from None
    finally:
        os.close(fd)


def write_error(exc: BaseException, path: Path) -> RunError | None:
    """The one-line error for a failed write of `path`, or None when `exc` is not an I/O failure. The OSError
    may sit under another exception: torch.save into a file reports a full disk as a RuntimeError
    ("unexpected pos ...") whose context is the ENOSPC OSError of the failed write."""
    if isinstance(exc, VitError):
        return exc if isinstance(exc, RunError) else RunError(str(exc))
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunError(f"disk full while writing {path}; nothing was replaced, earlier files are intact")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        return RunError(f"cannot write {path} ({exc.strerror}); choose another --out")
    if exc.errno == errno.ENAMETOOLONG:
        return RunError(f"cannot write {str(path)[:80]}... (file name too long); choose a shorter --out or run.name")
    return RunError(f"cannot write {path} ({exc.strerror or exc}); earlier files are intact")


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files a killed writer left behind (call only while holding the run's lock)."""
    found = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if folder.is_dir() and not folder.is_symlink():
            found += [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file() or p.is_symlink()]
    for path in found:
        path.unlink(missing_ok=True)  # unlinking a link removes the link, never its target
    return found


class RunLock:
    """The one-writer rule: an exclusive advisory lock on `<run>/.lock`, held while the run lives. `flock`
    locks belong to the open file, so the kernel drops the lock when the process ends in any way (exit,
    exception, SIGKILL); a stale lock file left behind locks nothing."""

    def __init__(self, run_dir: Path, *, who: str = "--out"):
        """`who`: what the refusals name (the option that gave the folder; "" for a run only read from)."""
        self.run_dir = Path(run_dir)
        self.who = f"{who} " if who else ""
        self.other = "; choose another --out" if who == "--out" else ""
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        path = self.run_dir / LOCK_NAME
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunError(f"{self.who}{self.run_dir}: refused: {path} is a symbolic link; a run directory holds "
                               "only the regular files the run wrote") from None
            if exc.errno == errno.ENAMETOOLONG:
                raise RunError(f"{self.who}{str(self.run_dir)[:80]}...: the path is too long for this file "
                               "system; choose a shorter --out or run.name") from None
            raise RunError(f"{self.who}{self.run_dir}: cannot write there ({exc.strerror}){self.other}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunError(f"{self.who}{self.run_dir}: refused: {path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                then = "or choose another --out" if self.other else "and try again"
                raise RunError(f"{self.who}{self.run_dir}: another vit process is writing this run directory (it "
                               f"holds {path}); wait for it to end {then}") from None
            raise RunError(f"{self.who}{self.run_dir}: cannot lock {path} ({exc.strerror})") from None
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the empty file stays, harmlessly
            self._fd = None


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
