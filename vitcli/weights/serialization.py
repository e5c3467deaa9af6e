"""Reading and writing tensor files so that loading can never run code.

Pickles (`.pt`, `.pth`, `.bin`) load with `weights_only=True`; safetensors hold only tensors by design.
Every failure is one line naming the file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from vitcli import files
from vitcli.errors import CheckpointError, first_line
from vitcli.files import atomic_write

# torch.save writes a zip archive; older torch and plain pickle.dump write pickle protocol 2+ (0x80).
_TORCH_HEADERS = (b"PK\x03\x04", b"\x80")


def load(path: Path) -> dict:
    """Load a `.pt`/`.pth`/`.bin` file with `weights_only=True`; every failure is one clear line."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    handle = check_file(path)
    if not handle.read(4).startswith(_TORCH_HEADERS):
        handle.close()
        # Without this, torch reports random bytes as an "unsupported" pickle, i.e. as unsafe code.
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a "
                              "pickle); accepted: .pt/.pth/.bin written by torch.save, .safetensors, a run directory")
    handle.seek(0)
    try:
        with handle, warnings.catch_warnings():
            # Plain pickles (not torch.save zips) of any protocol but 2 draw a two-line UserWarning on
            # every load; it says nothing about the file's safety, which weights_only decides.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch refuses a global (a class or function the pickle would call) or a pickle opcode it does
        # not allow (e.g. the REDUCE of a hand-made pickle): both mean "loading this would run code".
        # Worded differently per protocol and torch version: "Unsupported global", "Unsupported operand",
        # "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
        if "unsupported" in str(exc).lower():
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects that would run code when unpickled; "
                "vit only loads plain tensors (weights_only=True). Convert it to safetensors where you trust it"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_reason(exc)})") from None
    except (KeyError, IndexError, TypeError, AttributeError, struct.error) as exc:
        # Bytes that are no pickle at all make the weights-only unpickler fail on its own bookkeeping
        # (a memo key or stack slot that was never written): the file is damaged, not unsafe.
        raise CheckpointError(f"{path}: corrupt checkpoint, not a readable pickle ({type(exc).__name__}: "
                              f"{_reason(exc)})") from None




def check_file(path: Path, *, follow: bool = True):
    """Open a weights file for reading once it is known to be a regular file (never blocking on a FIFO).

    The one safety gate of every weights format (pickles, safetensors, and whatever reader.py grows):
    a directory, FIFO, socket or device is refused in one line before any library touches it.
    """
    return files.open_read(Path(path), follow=follow, error=CheckpointError)


@contextlib.contextmanager
def _by_handle(path: Path) -> Iterator[str]:
    """The name safetensors opens `path` by: on Linux this process's handle on the file `check_file` opened
    (/proc/self/fd/N), so the file read is the file checked and a folder named in another encoding opens
    too (safetensors takes only UTF-8 paths: a run in a Latin-1 folder read as "corrupt"); else the path."""
    with check_file(path) as handle:
        proc = f"/proc/self/fd/{handle.fileno()}"
        yield proc if os.path.exists(proc) else str(path)


def _reason(exc: BaseException) -> str:
    # Library messages run on ("... This is an internal miniz error. If you are seeing ..."): keep the
    # first sentence of the first line, which is the part that says what is wrong.
    return first_line(exc, sentence=True, limit=200)




def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (which by design holds only tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with _by_handle(path) as name:
            return load_file(name)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({_reason(exc)})") from None




def safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file's header ({} when it has none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with _by_handle(path) as name, safe_open(name, framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({_reason(exc)})") from None


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically."""
    from safetensors.torch import save

    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write(Path(path), lambda f: f.write(blob))
