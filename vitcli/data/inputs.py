"""What `vit predict` reads: image files, folders of them, or a split of a data source, as one list.

Each input becomes a named image; decoding happens per item (in loader workers for long inputs), and an
image that does not decode is reported with its name instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from vitcli.data.images import DECODE_ERRORS, decode, decode_stored, find_images, image_suffixes, reason
from vitcli.data.ref import SourceRef
from vitcli.data.source import Split
from vitcli.errors import DataError

_DATASET_FILES = ("dataset_dict.json", "state.json", "dataset_info.json")
_DATA_SUFFIXES = (".parquet", ".arrow")


@dataclass
class Missing:
    """An input path that names nothing readable (reported with the unreadable images)."""

    name: str
    reason: str


def is_data_source(text: str) -> bool:
    """Whether a predict INPUT names a data source rather than image files or folders of them.

    Sources are `imagefolder:`/`builtin:` names, folders holding parquet/arrow or `save_to_disk` files,
    such files themselves, and (when no such path exists) Hugging Face hub ids.
    """
    _path(text)  # refuses a blank INPUT
    ref = SourceRef.parse(text)
    if ref.kind in ("imagefolder", "builtin"):
        return True
    path = ref.path
    if path.is_file():
        return path.suffix in _DATA_SUFFIXES
    if path.is_dir():
        return any((path / name).exists() for name in _DATASET_FILES) or _holds_data_files(path)
    return ref.kind == "hub" and path.suffix.lower() not in image_suffixes()


def _path(text: str) -> Path:
    """An INPUT as a path. An empty one is refused: `Path("")` is the current folder, which would predict
    every image below wherever the command happens to run."""
    if not text.strip():
        raise DataError(f"INPUT {text!r} is blank; give image files, folders of images or a data source "
                        "(write '.' for the current folder)")
    return Path(text).expanduser()


def _holds_data_files(folder: Path) -> bool:
    # The hub's layout keeps parquet files at the top or under data/; image folders hold images.
    return any(next(folder.glob(f"{pattern}*{suffix}"), None) is not None
               for pattern in ("", "data/") for suffix in _DATA_SUFFIXES)


def image_files(inputs: Sequence[str]) -> tuple[list[Path], list[Missing]]:
    """The image files named by `inputs` (files as given, folders searched recursively, in order).

    A path that does not exist, or a folder with no image in it, is returned as Missing.
    """
    files: list[Path] = []
    missing: list[Missing] = []
    for text in inputs:
        path = _path(text)
        if path.is_dir():
            found = find_images(path)
            files += found
            if not found:
                missing.append(Missing(text, "no image files in this folder"))
        elif path.exists():
            files.append(path)  # a FIFO or a device too: the decoder refuses it in its own words
        else:
            missing.append(Missing(text, "no such file or directory"))
    return files, missing


class ImageInputs(torch.utils.data.Dataset):
    """Named images, decoded on access: item i -> (i, uint8 [C, H, W] or None, error or None).

    `transform` maps a decoded PIL image (any mode) to an RGB (or L) PIL image of the model's size: the
    evaluation transform, so predictions equal those `vit eval` scores.
    """

    def __init__(self, names: list[str], transform: Callable, *, files: list[Path] | None = None,
                 split: Split | None = None):
        self.names, self.transform, self.files = names, transform, files
        self.column = split.image_column if split is not None else None
        self.rows = None
        if split is not None:
            self.rows = split.dataset.select_columns([self.column]).cast_column(self.column,
                                                                                datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        try:
            image = decode(self.files[i]) if self.files is not None else decode_stored(self.rows[i][self.column])
            array = np.array(self.transform(image))
            pixels = torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)  # L: HxW
        except DECODE_ERRORS as e:
            return i, None, reason(e)
        return i, pixels, None


def from_files(inputs: Sequence[str], transform: Callable) -> tuple[ImageInputs, list[Missing]]:
    """Image files and folders as ImageInputs named by their paths, plus the inputs that name nothing."""
    files, missing = image_files(inputs)
    return ImageInputs([str(f) for f in files], transform, files=files), missing


def from_split(split: Split, transform: Callable) -> ImageInputs:
    """A data split as ImageInputs, each image named by its file path when it has one, else by index."""
    if split.num_examples is None:
        raise DataError(f"{split.where}: vit predict reads map-style data; set data.streaming: false")
    paths = _paths(split)
    names = [path or f"{split.source}[{split.split}]#{i}" for i, path in enumerate(paths)]
    return ImageInputs(names, transform, split=split)


def _paths(split: Split) -> list[str | None]:
    """The file path stored with each image (imagefolder keeps one), read without the image bytes."""
    import pyarrow.compute as pc

    column = split.dataset.with_format("arrow")[split.image_column]
    try:
        return pc.struct_field(column, "path").to_pylist()
    except (KeyError, TypeError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return [None] * split.num_examples


def collate(items):
    """A batch of ImageInputs items: (indices of decoded images, uint8 batch or None, [(index, error)])."""
    good = [(i, pixels) for i, pixels, _ in items if pixels is not None]
    bad = [(i, error) for i, pixels, error in items if pixels is None]
    batch = torch.stack([pixels for _, pixels in good]) if good else None
    return [i for i, _ in good], batch, bad
