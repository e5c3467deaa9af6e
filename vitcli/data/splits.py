"""Which splits a data source has, and which of them a command uses when it names none (`auto`).

A source's own split names decide: the held-out split is `test`, else `validation` (or `val`); the
training split is `train`, with `validation` added when `test` is the held-out one (Flowers-102:
`train+validation` to train on, `test` to score). A source with one split (an image folder) has that
split only. Nothing of another source's split expressions carries over.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import datasets

from vitcli import hub
from vitcli.data import imagefolder
from vitcli.data import source as _source
from vitcli.data.ref import SourceRef
from vitcli.data.source_errors import root_cause
from vitcli.errors import DataError, first_line

_EVAL_NAMES = ("test", "validation", "val", "valid", "eval")
_TRAIN_NAMES = ("train", "training")


@dataclass(frozen=True)
class DefaultSplits:
    """The splits chosen from a source's own split names (None: it has none fit for that use)."""

    names: tuple[str, ...]
    train: str | None  # to train on, or draw few-shot examples from
    held_out: str | None  # test, else validation: never trained on

    @property
    def only(self) -> str | None:
        """The source's one split, when it has just one (an image folder)."""
        return self.names[0] if len(self.names) == 1 else None


def split_names(source: str) -> list[str]:
    """The names of the splits `source` has, as `datasets` lists them; one-line DataError otherwise."""
    ref = SourceRef.parse(source)
    if ref.kind == "builtin":
        if ref.target != "digits":
            _source._load(source, "train", False)  # raises the one-line "not a builtin source"
        return list(_source._digits())
    if ref.kind == "imagefolder":
        return list(imagefolder.scan(source).splits)
    if ref.kind == "local":
        return _local_names(source, _source.existing(ref))
    return _hub_names(source)


def default_splits(source: str) -> DefaultSplits:
    """The train and held-out splits of `source`, chosen from its own split names."""
    return choose(split_names(source))


def choose(names: list[str]) -> DefaultSplits:
    """Pick train and held-out splits from a list of split names (see the module docstring)."""
    held_out = next((n for n in _EVAL_NAMES if n in names), None)
    train = next((n for n in _TRAIN_NAMES if n in names), None)
    if train and held_out == "test" and "validation" in names:
        train = f"{train}+validation"
    return DefaultSplits(tuple(names), train, held_out)


def _local_names(source: str, path: Path) -> list[str]:
    if (path / "dataset_dict.json").is_file():
        try:
            return list(json.loads((path / "dataset_dict.json").read_text())["splits"])
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise DataError(f"data.source {source!r}: unreadable dataset_dict.json ({e})") from None
    if (path / "state.json").is_file():
        return [str(datasets.load_from_disk(str(path)).split or "train")]
    if path.is_file():
        return ["train"]
    return _listed(source, str(path))


def _listed(source: str, path: str, **kwargs) -> list[str]:
    try:
        return list(datasets.get_dataset_split_names(path, **kwargs))
    except FileNotFoundError as e:  # also datasets' DataFilesNotFoundError / EmptyDatasetError
        raise DataError(f"data.source {source!r}: no data files found ({first_line(e)}); expected "
                        "parquet/arrow files in the hub's layout, a save_to_disk directory, or imagefolder:PATH") from e
    except (ValueError, OSError, datasets.exceptions.DatasetsError) as e:
        raise DataError(f"data.source {source!r}: cannot list its splits ({root_cause(e)})") from e


def _hub_names(source: str) -> list[str]:
    offline = datasets.config.HF_HUB_OFFLINE or not hub.reachable()
    mode = _source._offline_mode if offline else contextlib.nullcontext
    try:
        with mode():
            return list(datasets.get_dataset_split_names(source))
    except Exception as e:
        if not (_source._is_unavailable(e) or isinstance(e, (ValueError, datasets.exceptions.DatasetsError))):
            raise
        raise _source.hub_unavailable(source) from e
