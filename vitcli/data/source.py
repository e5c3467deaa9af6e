"""Where images come from: one split of a Hugging Face `datasets` source, its columns and classes.

`load_split` accepts four kinds of source and hands back a `Split` that names the image and label
columns and knows how many classes there are:

- `builtin:digits`: scikit-learn's bundled UCI digits, a demo that needs no download;
- `imagefolder:PATH`: one folder per class;
- an existing local path: parquet/arrow files (the hub's layout) or a `save_to_disk` directory;
- anything else: a Hugging Face hub id.

All reading goes through `datasets`; this module only chooses the call and turns failures into
one-line `DataError`s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from vitcli import hub
from vitcli.errors import DataError, did_you_mean, one_of

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "labels", "fine_label")
UNLABELLED = "__unlabelled__"  # the constant label column of a split loaded with labels=False
_DIGITS_SEED = 0  # fixes the builtin:digits train/test split for good
_DIGITS_TRAIN_FRACTION = 0.8
_EMPTY = "corresponds to no data"  # how datasets says a split expression selects nothing
_SCRIPTS = "Dataset scripts are no longer supported"  # how datasets (>= 4) refuses to run a loading script


@dataclass
class Split:
    """One split of a data source, with the columns and classes the loaders need."""

    dataset: Any  # datasets.Dataset, or datasets.IterableDataset when streaming
    image_column: str
    label_column: str
    num_classes: int
    class_names: list[str] | None
    num_examples: int | None  # None when streaming
    source: str
    split: str
    # label_map[i] is the model output that the data's label i stands for (classes matched by name);
    # None: labels are used as they are. The loaders apply it to every batch.
    label_map: tuple[int, ...] | None = None

    @property
    def where(self) -> str:
        """How error messages name this split."""
        return f"data.source {self.source!r} split {self.split!r}"


def load_split(
    source: str,
    split: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    num_classes: int | None = None,
    streaming: bool = False,
    labels: bool = True,
) -> Split:
    """Load one split of `source` (a split expression such as "train[:98%]" when not streaming).

    Columns are detected when not given (image: img, image; label: label, labels, fine_label).
    `num_classes` comes from the label column's ClassLabel feature, else the argument, else the
    largest label + 1. Raises DataError for unreachable sources, unknown splits, empty splits and
    missing columns. A hub id fails within seconds when the hub cannot be reached (a cached copy
    still loads); HF_HUB_OFFLINE=1 skips the reachability probe.

    `labels=False` (self-supervised training) ignores any label column: the split gets a constant one
    (`UNLABELLED`, all 0, one class), so an image folder without class folders loads as well.
    """
    ds = _load(source, split, streaming)
    where = f"data.source {source!r} split {split!r}"
    if not streaming and len(ds) == 0:
        raise _empty_split(source, split)
    if ds.features is None:  # some streaming sources only know their schema once read
        ds = ds._resolve_features()  # datasets' own way to learn it (reads the first example)
    features = ds.features
    image = _pick_column(features, image_column, IMAGE_COLUMNS, datasets.Image, "image", where)
    if not labels:
        ds = _as_image_column(ds, image, features[image], where)
        return Split(dataset=_unlabelled(ds, streaming), image_column=image, label_column=UNLABELLED,
                     num_classes=1, class_names=None, num_examples=None if streaming else len(ds),
                     source=source, split=split)
    label = _pick_column(features, label_column, LABEL_COLUMNS, datasets.ClassLabel, "label", where)
    ds = _as_image_column(ds, image, features[image], where)
    if not streaming:
        _check_no_nulls(ds, {image: "image", label: "label"}, where)
    n, names = _classes(ds, label, features[label], num_classes, streaming, where)
    return Split(
        dataset=ds,
        image_column=image,
        label_column=label,
        num_classes=n,
        class_names=names,
        num_examples=None if streaming else len(ds),
        source=source,
        split=split,
    )


def _load(source: str, split: str, streaming: bool):
    if source == "builtin:digits":
        return _from_parts(_digits(), source, split, streaming)
    if source.startswith("builtin:"):
        raise DataError(f"data.source {source!r} is not a builtin source; valid: 'builtin:digits'")
    if source.startswith("imagefolder:"):
        folder = Path(source.removeprefix("imagefolder:")).expanduser()
        if not folder.is_dir():
            raise DataError(f"data.source {source!r}: {str(folder)!r} is not a directory of class folders")
        _check_image_folder(source, folder)
        return _local(source, split, streaming, "imagefolder", data_dir=str(folder))
    path = Path(source).expanduser()
    if path.exists():
        return _from_path(source, path, split, streaming)
    if looks_like_path(source):
        raise DataError(
            f"data.source {source!r}: no such file or directory; give an existing local path, "
            "imagefolder:PATH, builtin:digits or a Hugging Face hub id such as 'uoft-cs/cifar10'"
        )
    return _hub(source, split, streaming)


def looks_like_path(source: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a slash or a path prefix is a path.
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _from_path(source: str, path: Path, split: str, streaming: bool):
    if (path / "dataset_dict.json").exists():  # written by DatasetDict.save_to_disk
        return _from_parts(datasets.load_from_disk(str(path)), source, split, streaming)
    if (path / "state.json").exists():  # written by Dataset.save_to_disk: one unnamed split
        ds = datasets.load_from_disk(str(path))
        return _from_parts(datasets.DatasetDict({str(ds.split or "train"): ds}), source, split, streaming)
    if path.is_file():
        builder = {".parquet": "parquet", ".arrow": "arrow"}.get(path.suffix)
        if builder is None:
            raise DataError(f"data.source {source!r}: cannot read {path.suffix!r} files; valid: .parquet, .arrow")
        if builder == "parquet":
            _check_parquet(source, path)
        return _local(source, split, streaming, builder, data_files={"train": str(path)})
    _check_parquet(source, path)
    return _local(source, split, streaming, str(path))


def _local(source: str, split: str, streaming: bool, path: str, **kwargs):
    """`datasets.load_dataset` on local data, with its failures turned into DataErrors."""
    try:
        return datasets.load_dataset(path, split=split, streaming=streaming, **kwargs)
    except ValueError as e:
        raise _split_error(source, split, streaming, e, path, kwargs) from e
    except FileNotFoundError as e:  # also datasets' DataFilesNotFoundError / EmptyDatasetError
        raise DataError(
            f"data.source {source!r}: no data files found ({_first_line(e)}); expected parquet/arrow "
            "files in the hub's layout, a save_to_disk directory, or imagefolder:PATH"
        ) from e
    except (OSError, datasets.exceptions.DatasetsError) as e:
        # A corrupt file fails while datasets prepares the split; its own message is in the cause.
        raise DataError(f"data.source {source!r}: cannot read the data files ({_root_cause(e)})") from e
    except RuntimeError as e:
        if _SCRIPTS not in str(e):
            raise
        raise _script_error(source, e) from e


def _script_error(source: str, e: RuntimeError) -> DataError:
    # datasets >= 4 refuses loading scripts: it never runs them. Say so in one line.
    script = _first_line(e).rpartition(" ")[2]
    return DataError(f"data.source {source!r} holds a dataset loading script ({script}), which vit never runs; "
                     "give parquet/arrow files, a save_to_disk directory or imagefolder:PATH")


def _data_files(source: str, path: Path, suffix: str) -> list[Path]:
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


def _check_image_folder(source: str, folder: Path) -> None:
    """An image folder is PATH/<class>/<image> or PATH/<split>/<class>/<image>. A deeper tree (a home
    directory, a whole disk) is refused as soon as the walk meets its first folder below that layout,
    instead of being scanned by `datasets` for minutes in silence; the walk never goes deeper itself."""
    stack = [(folder, 0)]
    while stack:
        path, depth = stack.pop()
        try:
            entries = [e for e in os.scandir(path) if not e.name.startswith(".")]
        except OSError as e:
            raise DataError(f"data.source {source!r}: cannot list {str(path)!r} ({e.strerror})") from None
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if depth + 1 > _FOLDER_DEPTH:
                raise DataError(
                    f"data.source {source!r}: {entry.path!r} is a folder {depth + 1} levels down; an image "
                    "folder is PATH/<class>/<image> or PATH/<split>/<class>/<image>: point imagefolder: at the "
                    "folder that holds the class (or split) folders")
            stack.append((Path(entry.path), depth + 1))


def _check_parquet(source: str, path: Path) -> None:
    """Read every parquet footer first, so a truncated or empty file is named (datasets names none)."""
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else _data_files(source, path, ".parquet")
    for file in files:
        try:
            rows = pq.read_metadata(file).num_rows
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            reason = _first_line(e).split(". ", 1)[0]  # pyarrow adds "Either the file is corrupted or ..."
            raise DataError(f"data.source {source!r}: {file} is not a readable parquet file, truncated or "
                            f"corrupt ({reason}); download or write it again") from None
        if rows == 0:
            raise DataError(f"data.source {source!r}: {file} holds no rows; remove it or write it again")


def _hub(source: str, split: str, streaming: bool):
    # When a quick probe cannot reach the hub, the same call runs in offline mode (vitcli/hub.py).
    offline = datasets.config.HF_HUB_OFFLINE or not hub.reachable()
    mode = _offline_mode if offline else contextlib.nullcontext
    try:
        with mode():
            return datasets.load_dataset(source, split=split, streaming=streaming)
    except ValueError as e:
        with mode():
            raise _split_error(source, split, streaming, e, source, {}) from e
    except datasets.exceptions.DatasetGenerationError as e:
        raise DataError(f"data.source {source!r}: cannot read the data files ({_root_cause(e)})") from e
    except RuntimeError as e:
        if _SCRIPTS not in str(e):
            raise
        raise _script_error(source, e) from e
    except Exception as e:
        if not _is_unavailable(e):
            raise
        raise hub_unavailable(source) from e


def hub_unavailable(source: str) -> DataError:
    """The one line for a hub id that cannot be reached or does not exist (shared with split listing)."""
    return DataError(f"data.source: cannot load {source!r} from the Hugging Face hub (offline or not found); "
                     "download it where you have internet, or point data.source at a local copy "
                     "(a directory of parquet/arrow files or imagefolder:PATH)")


def _is_unavailable(e: Exception) -> bool:
    """Whether an exception from load_dataset means "this hub dataset cannot be had from here"."""
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(e, (OSError, HfHubHTTPError))  # OSError covers ConnectionError, FileNotFoundError


@contextlib.contextmanager
def _offline_mode():
    """Switch `datasets` and `huggingface_hub` to offline mode for one call.

    `datasets` reads HF_HUB_OFFLINE once at import into its own flag, beside huggingface_hub's.
    """
    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        with hub.offline_mode():
            yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


def _split_error(source: str, split: str, streaming: bool, e: ValueError, path: str, kwargs: dict) -> DataError:
    """Explain a split `load_dataset` refused, listing the splits that exist."""
    message = str(e)
    if _EMPTY in message:
        return _empty_split(source, split)
    if not ("split" in message.lower() or "instruction" in message.lower()):
        return DataError(f"data.source {source!r} split {split!r}: {_first_line(e)}")
    try:
        available = datasets.get_dataset_split_names(path, **kwargs)
    except Exception:  # listing is a courtesy: the original message still explains the failure
        return DataError(f"data.source {source!r}: bad split {split!r} ({_first_line(e)})")
    return _bad_split(source, split, available, streaming)


def _empty_split(source: str, split: str) -> DataError:
    return DataError(f"data.source {source!r} split {split!r} is empty; choose a split expression that "
                     "selects some examples")


def _bad_split(source: str, split: str, available, streaming: bool) -> DataError:
    name = split.split("[", 1)[0].strip()
    where = f"data.source {source!r}"
    splits = f"available splits: {one_of(available)}"
    if streaming and "[" in split:
        return DataError(f"{where}: split {split!r} has a slice, which needs streaming off; {splits}")
    if name in available:
        return DataError(
            f"{where}: split {split!r} is not a valid split expression "
            f"(e.g. 'train', 'train[:90%]', 'train[1000:]', 'train+test'); {splits}"
        )
    return DataError(f"{where} has no split {split!r}{did_you_mean(name, available)}; {splits}")


def _from_parts(parts: datasets.DatasetDict, source: str, split: str, streaming: bool):
    """Apply a split expression to in-memory splits with datasets' own split-expression parser."""
    try:
        instruction = datasets.ReadInstruction.from_spec(split)
        pieces = instruction.to_absolute({name: len(ds) for name, ds in parts.items()})
    except (ValueError, AssertionError) as e:
        if _EMPTY in str(e):
            raise _empty_split(source, split) from e
        raise _bad_split(source, split, list(parts), False) from e
    selected = [parts[p.splitname].select(range(p.from_, p.to)) for p in pieces]
    ds = selected[0] if len(selected) == 1 else datasets.concatenate_datasets(selected)
    return ds.to_iterable_dataset() if streaming else ds


MAX_CLASSES = 1_000_000  # a larger label is an id, not a class index: its head would not fit in memory
MAX_SCAN = 100_000  # files and folders looked at under a local data.source before it is refused
_FOLDER_DEPTH = 2  # folder levels of an image folder: <split>/<class>


@functools.lru_cache(maxsize=1)
def _digits() -> datasets.DatasetDict:
    """scikit-learn's UCI digits as grey 8x8 images, split once and for all into train/test."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    order = np.random.default_rng(_DIGITS_SEED).permutation(len(pixels))
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    cut = int(len(order) * _DIGITS_TRAIN_FRACTION)
    parts = {}
    for name, idx in (("train", order[:cut]), ("test", order[cut:])):
        data = {"image": list(pixels[idx]), "label": digits.target[idx].tolist()}
        parts[name] = datasets.Dataset.from_dict(data, features=features, split=name)
    return datasets.DatasetDict(parts)


def _unlabelled(ds, streaming: bool):
    """`ds` with its label column replaced by a constant one, so loaders need no special case."""
    if streaming:
        return ds.map(lambda _: {UNLABELLED: 0})
    import numpy as np

    return ds.add_column(UNLABELLED, np.zeros(len(ds), dtype=np.int64))


def _pick_column(features, given, candidates, feature_type, kind: str, where: str) -> str:
    """The column holding images or labels: the given one, a conventional name, or the only typed one."""
    columns = list(features)
    if given is not None:
        if given not in features:
            raise DataError(
                f"{where} has no {kind} column {given!r}{did_you_mean(given, columns)}; "
                f"columns found: {one_of(columns)}"
            )
        return given
    for name in candidates:
        if name in features:
            return name
    typed = [c for c in columns if isinstance(features[c], feature_type)]
    if len(typed) == 1:
        return typed[0]
    raise DataError(
        f"{where}: no {kind} column found (looked for {one_of(candidates)}); columns found: "
        f"{one_of(columns)}; name it with {kind}_column"
    )


def _as_image_column(ds, column: str, feature, where: str):
    if isinstance(feature, datasets.Image):
        return ds
    # Parquet written without datasets' metadata stores images as plain {bytes, path} structs.
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        return ds.cast_column(column, datasets.Image())
    raise DataError(
        f"{where}: column {column!r} holds {feature!r}, not images; name the image column with image_column"
    )


def _classes(ds, column: str, feature, given: int | None, streaming: bool, where: str):
    """Number of classes and their names, from the ClassLabel feature when there is one."""
    if isinstance(feature, datasets.ClassLabel):
        if given is None or given == feature.num_classes:
            return feature.num_classes, list(feature.names)
        if given < feature.num_classes:
            raise DataError(
                f"{where}: num_classes is {given} but label column {column!r} has "
                f"{feature.num_classes} classes; leave num_classes unset or set it to {feature.num_classes}"
            )
        # More outputs than the data's classes (a wider head evaluated on a subset) is legitimate.
        log.info("%s: using num_classes=%d for %d named classes", where, given, feature.num_classes)
        return given, None
    if not (isinstance(feature, datasets.Value) and "int" in feature.dtype):
        raise DataError(f"{where}: label column {column!r} holds {feature!r}, not integer class ids")
    if given is not None:
        return given, None
    if streaming:
        raise DataError(f"{where}: label column {column!r} has no ClassLabel feature; set num_classes when streaming")
    largest = label_range(ds, column)[1]
    if largest >= MAX_CLASSES:
        raise DataError(f"{where}: label column {column!r} holds the label {largest}, which would make a head of "
                        f"{largest + 1} classes (more than {MAX_CLASSES}); labels must be class ids 0..K-1")
    log.warning("%s: label column %r has no class names; num_classes = largest label + 1 = %d",
                where, column, largest + 1)
    return largest + 1, None


def _check_no_nulls(ds: datasets.Dataset, columns: dict[str, str], where: str) -> None:
    """A missing image or label is a hole in the data set, not an undecodable image: refuse it by name."""
    import pyarrow.compute as pc

    table = ds.with_format("arrow")
    for column, kind in columns.items():
        values = table[column]
        nulls = values.null_count
        if kind == "image" and not nulls:  # an Image column is a struct: both its bytes and path may be null
            empty = pc.and_(pc.is_null(pc.struct_field(values, "bytes")), pc.is_null(pc.struct_field(values, "path")))
            nulls = int(pc.sum(empty).as_py() or 0) if values.type.num_fields else 0
        else:
            empty = pc.is_null(values)
        if nulls:
            first = int(pc.index(empty, True).as_py())
            raise DataError(f"{where}: {nulls} of {len(ds)} examples have no {kind} (null in column {column!r}, "
                            f"e.g. example {first}); remove them or fill them in")


def label_range(ds: datasets.Dataset, column: str) -> tuple[int, int]:
    """Smallest and largest label of a map-style dataset, read from the Arrow column in one pass."""
    import pyarrow.compute as pc

    result = pc.min_max(ds.with_format("arrow")[column])
    return int(result["min"].as_py()), int(result["max"].as_py())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return "".join(ch if ch.isprintable() else "?" for ch in line)  # parsers quote the raw bytes they met


def _root_cause(e: BaseException) -> str:
    """The first line of the innermost exception: datasets wraps the real failure in a generic one."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return _first_line(e)
