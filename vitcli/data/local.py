"""Local data sources checked before `datasets` reads them: bounded walks, parquet footers, tar shard ends.

A data set is a few folders of files; a source that is a huge tree (a home directory) is refused in a
second instead of scanned for minutes, here and again inside `datasets`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitcli.errors import DataError, first_line

MAX_SCAN = 100_000  # files and folders looked at under a local data.source before it is refused


def data_files(source: str, path: Path, suffix: str | tuple[str, ...]) -> list[Path]:
    """The files ending in `suffix` under `path`, found within a bounded walk: a data set is a few
    folders of files, and a source that is a huge tree (a home directory) is refused in a second
    instead of scanned for minutes, here and again inside `datasets`."""
    found, seen = [], 0
    for root, dirs, names in os.walk(path):
        seen += len(dirs) + len(names)
        if seen > MAX_SCAN:
            raise DataError(f"data.source {source!r}: holds more than {MAX_SCAN} files and folders, which is not a "
                            "parquet/arrow data set; point data.source at the folder with the data files")
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in names if n.endswith(suffix)]
    return sorted(found)


def check_data_files(source: str, path: Path) -> None:
    """A folder must hold parquet, arrow or WebDataset tar files; every parquet footer and every tar's end
    is read first, so a truncated or empty file is named (datasets names none, and reads a truncated tar
    as if it ended there)."""
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else data_files(source, path, (".parquet", ".arrow", ".tar"))
    if not files and not any(path.glob("*.py")):  # a loading script is refused by name when datasets meets it
        # Refused here, after a bounded walk: `datasets` would search the whole tree itself, hidden folders
        # included (a home directory's caches), for minutes, before saying the same.
        raise DataError(f"data.source {source!r}: no parquet, arrow or tar files in this folder; give a folder of "
                        "parquet/arrow files (the hub's layout) or of WebDataset .tar shards, a save_to_disk "
                        "directory, or imagefolder:PATH for a folder of images")
    for file in (f for f in files if f.suffix == ".tar"):
        _check_tar(source, file)
    names: dict[str, tuple[Path, list]] = {}  # label column -> (first file, its class names)
    for file in (f for f in files if f.suffix == ".parquet"):
        try:
            meta = pq.read_metadata(file)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            reason = first_line(e, sentence=True)  # pyarrow adds "Either the file is corrupted or ..."
            raise DataError(f"data.source {source!r}: {file} is not a readable parquet file, truncated or "
                            f"corrupt ({reason}); download or write it again") from None
        if meta.num_rows == 0:
            raise DataError(f"data.source {source!r}: {file} holds no rows; remove it or write it again")
        for column, these in _class_names(meta).items():
            first, theirs = names.setdefault(column, (file, these))
            if these != theirs:
                raise DataError(
                    f"data.source {source!r}: {file} names the classes of {column!r} {_few(these)} but {first} "
                    f"names them {_few(theirs)}; datasets reads every file with the first one's names, so labels "
                    "would be scored against the wrong classes: write every split with the same class names in "
                    "the same order")


_BLOCK = 512  # a tar file is 512-byte blocks and ends with two zero blocks (then padding, also zeros)


def _check_tar(source: str, file: Path) -> None:
    """A WebDataset shard must be a whole tar file: `datasets` stops quietly where a truncated one ends, and
    a run would train on part of its data without a word. Reads two blocks of each end, whatever its size."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        first = f.read(_BLOCK)
        f.seek(max(0, size - 2 * _BLOCK))
        last = f.read(2 * _BLOCK)
    if size < 2 * _BLOCK or size % _BLOCK or last != bytes(2 * _BLOCK):
        raise DataError(f"data.source {source!r}: {file} is not a whole tar file ({size:,} bytes, "
                        f"{'not a multiple of 512' if size % _BLOCK else 'no end-of-archive blocks'}): truncated "
                        "or still being written; download or write it again")
    if first == bytes(_BLOCK):
        raise DataError(f"data.source {source!r}: {file} holds no files; remove it or write it again")


def _class_names(meta) -> dict[str, list]:
    """The ClassLabel names each column of a parquet file declares in its `datasets` metadata."""
    import json

    raw = (meta.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    if not isinstance(features, dict):
        return {}
    return {column: feature["names"] for column, feature in features.items() if isinstance(feature, dict)
            and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list)}


def _few(names: list) -> str:
    shown = ", ".join(repr(str(n)[:40]) for n in names[:4])
    return f"({shown}{', ...' if len(names) > 4 else ''})"
