"""Local data sources checked before `datasets` reads them: bounded walks, parquet footers.

A data set is a few folders of files; a source that is a huge tree (a home directory) is refused in a
second instead of scanned for minutes, here and again inside `datasets`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitcli.errors import DataError, first_line

MAX_SCAN = 100_000  # files and folders looked at under a local data.source before it is refused


def data_files(source: str, path: Path, suffix: str) -> list[Path]:
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


def check_parquet(source: str, path: Path) -> None:
    """Read every parquet footer first, so a truncated or empty file is named (datasets names none)."""
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else data_files(source, path, ".parquet")
    for file in files:
        try:
            rows = pq.read_metadata(file).num_rows
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            reason = first_line(e, sentence=True)  # pyarrow adds "Either the file is corrupted or ..."
            raise DataError(f"data.source {source!r}: {file} is not a readable parquet file, truncated or "
                            f"corrupt ({reason}); download or write it again") from None
        if rows == 0:
            raise DataError(f"data.source {source!r}: {file} holds no rows; remove it or write it again")
