"""Where images come from: one split of a Hugging Face `datasets` source, its columns and classes.

`load_split` accepts four kinds of source and hands back a `Split` that names the image and label
columns and knows how many classes there are:

- `builtin:digits`: scikit-learn's bundled UCI digits, a demo that needs no download;
- `imagefolder:PATH`: one folder per class, optionally under split folders (data/imagefolder.py);
- an existing local path: parquet/arrow files (the hub's layout), WebDataset .tar shards (`datasets`'
  webdataset builder: `x.jpg` + `x.cls` in a shard are the image and label of example x), one such
  file, or a `save_to_disk` directory;
- anything else: a Hugging Face hub id.

All reading goes through `datasets`; this module only chooses the call and turns failures into
one-line `DataError`s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from vitcli import hub
from vitcli.data import imagefolder
from vitcli.data.local import check_data_files
from vitcli.data.ref import SourceRef
from vitcli.data.source_errors import (EMPTY, SCRIPTS, bad_split, empty_split, root_cause, script_error,
                                       split_error)
from vitcli.errors import DataError, did_you_mean, first_line, one_of

log = logging.getLogger(__name__)

# The hub's usual names, then WebDataset's file extensions (a shard's "x.jpg" and "x.cls" are columns jpg, cls)
IMAGE_COLUMNS = ("img", "image", "jpg", "jpeg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "fine_label", "cls")
UNLABELLED = "__unlabelled__"  # the constant label column of a split loaded with labels=False
_DIGITS_SEED = 0  # fixes the builtin:digits train/test split for good
_DIGITS_TRAIN_FRACTION = 0.8


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
    # What the source holds, for the commands to print (an image folder: images per split and class).
    note: str | None = None

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

    Columns are detected when not given (IMAGE_COLUMNS, LABEL_COLUMNS: WebDataset's jpg.. and cls included).
    `num_classes` comes from the label column's ClassLabel feature, else the argument, else the
    largest label + 1. Raises DataError for unreachable sources, unknown splits, empty splits and
    missing columns. A hub id fails within seconds when the hub cannot be reached (a cached copy
    still loads); HF_HUB_OFFLINE=1 skips the reachability probe.

    `labels=False` (self-supervised training) ignores any label column: the split gets a constant one
    (`UNLABELLED`, all 0, one class), so an image folder without class folders loads as well.
    """
    ds, note = _open(source, split, streaming)
    where = f"data.source {source!r} split {split!r}"
    features = ds.features
    image = _pick_column(features, image_column, IMAGE_COLUMNS, datasets.Image, "image", where)
    if not labels:
        ds = _as_image_column(ds, image, features[image], where)
        return Split(dataset=_unlabelled(ds, image, streaming), image_column=image, label_column=UNLABELLED,
                     num_classes=1, class_names=None, num_examples=None if streaming else len(ds),
                     source=source, split=split, note=note)
    label = _pick_column(features, label_column, LABEL_COLUMNS, datasets.ClassLabel, "label", where)
    ds = _as_image_column(ds, image, features[image], where)
    if not streaming:
        _check_no_nulls(ds, {image: "image", label: "label"}, where)
    n, names = _classes(ds, label, features[label], num_classes, streaming, where)
    return Split(dataset=ds, image_column=image, label_column=label, num_classes=n, class_names=names,
                 num_examples=None if streaming else len(ds), source=source, split=split, note=note)


def _open(source: str, split: str, streaming: bool):
    """The split's rows, never empty and with their features known, and for an image folder the note
    saying what was read from it (None for other sources)."""
    if SourceRef.parse(source).kind == "imagefolder":
        ds, note = _image_folder(source, split, streaming)
    else:
        ds, note = _load(source, split, streaming), None
    if not streaming and len(ds) == 0:
        raise empty_split(source, split)
    if ds.features is None:  # some streaming sources only know their schema once read
        ds = ds._resolve_features()  # datasets' own way to learn it (reads the first example)
    return ds, note


def _load(source: str, split: str, streaming: bool):
    ref = SourceRef.parse(source)
    if ref.kind == "builtin":
        if ref.target != "digits":
            raise DataError(f"data.source {source!r} is not a builtin source; valid: 'builtin:digits'")
        return _from_parts(_digits(), source, split, streaming)
    if ref.kind == "local":
        return _from_path(source, existing(ref), split, streaming)
    return _hub(source, split, streaming)


def _image_folder(source: str, split: str, streaming: bool):
    """An image folder's split and the line that counts its images: built from the listed files, never by
    datasets' imagefolder builder, which sorts files into splits by words in their names (imagefolder.py)."""
    listing = imagefolder.scan(source)
    ds = _from_parts(imagefolder.to_datasets(listing), source, split, streaming)
    named = [name for name in listing.splits if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", split)]
    return ds, imagefolder.counts(listing, named)


def existing(ref: SourceRef) -> Path:
    """The path of a local source, or the one line saying it does not exist."""
    if not ref.path.exists():
        raise DataError(
            f"data.source {ref.text!r}: no such file or directory; give an existing local path, "
            "imagefolder:PATH, builtin:digits or a Hugging Face hub id such as 'uoft-cs/cifar10'"
        )
    return ref.path


def _from_path(source: str, path: Path, split: str, streaming: bool):
    if (path / "dataset_dict.json").exists():  # written by DatasetDict.save_to_disk
        return _from_parts(datasets.load_from_disk(str(path)), source, split, streaming)
    if (path / "state.json").exists():  # written by Dataset.save_to_disk: one unnamed split
        ds = datasets.load_from_disk(str(path))
        return _from_parts(datasets.DatasetDict({str(ds.split or "train"): ds}), source, split, streaming)
    if path.is_file():
        builder = {".parquet": "parquet", ".arrow": "arrow", ".tar": "webdataset"}.get(path.suffix)
        if builder is None:
            raise DataError(f"data.source {source!r}: cannot read {path.suffix!r} files; valid: .parquet, .arrow, "
                            ".tar (WebDataset)")
        if builder != "arrow":
            check_data_files(source, path)
        return _local(source, split, streaming, builder, data_files={"train": str(path)})
    check_data_files(source, path)
    return _local(source, split, streaming, str(path))


def _local(source: str, split: str, streaming: bool, path: str, **kwargs):
    """`datasets.load_dataset` on local data, with its failures turned into DataErrors."""
    try:
        return datasets.load_dataset(path, split=split, streaming=streaming, **kwargs)
    except ValueError as e:
        raise split_error(source, split, streaming, e, path, kwargs) from e
    except FileNotFoundError as e:  # also datasets' DataFilesNotFoundError / EmptyDatasetError
        raise DataError(
            f"data.source {source!r}: no data files found ({first_line(e)}); expected parquet/arrow "
            "files in the hub's layout, a save_to_disk directory, or imagefolder:PATH"
        ) from e
    except (OSError, datasets.exceptions.DatasetsError) as e:
        # A corrupt file fails while datasets prepares the split; its own message is in the cause.
        raise DataError(f"data.source {source!r}: cannot read the data files ({root_cause(e)})") from e
    except RuntimeError as e:
        if SCRIPTS not in str(e):
            raise
        raise script_error(source, e) from e


def _hub(source: str, split: str, streaming: bool):
    # When a quick probe cannot reach the hub, the same call runs in offline mode (vitcli/hub.py).
    offline = datasets.config.HF_HUB_OFFLINE or not hub.reachable()
    mode = _offline_mode if offline else contextlib.nullcontext
    try:
        with mode():
            return datasets.load_dataset(source, split=split, streaming=streaming)
    except ValueError as e:
        with mode():
            raise split_error(source, split, streaming, e, source, {}) from e
    except datasets.exceptions.DatasetGenerationError as e:
        raise DataError(f"data.source {source!r}: cannot read the data files ({root_cause(e)})") from e
    except RuntimeError as e:
        if SCRIPTS not in str(e):
            raise
        raise script_error(source, e) from e
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


def _from_parts(parts: datasets.DatasetDict, source: str, split: str, streaming: bool):
    """Apply a split expression to in-memory splits with datasets' own split-expression parser."""
    try:
        instruction = datasets.ReadInstruction.from_spec(split)
        pieces = instruction.to_absolute({name: len(ds) for name, ds in parts.items()})
    except (ValueError, AssertionError) as e:
        if EMPTY in str(e):
            raise empty_split(source, split) from e
        raise bad_split(source, split, list(parts), False) from e
    selected = [parts[p.splitname].select(range(p.from_, p.to)) for p in pieces]
    ds = selected[0] if len(selected) == 1 else datasets.concatenate_datasets(selected)
    return ds.to_iterable_dataset() if streaming else ds


MAX_CLASSES = 1_000_000  # a larger label is an id, not a class index: its head would not fit in memory


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


def _unlabelled(ds, image: str, streaming: bool):
    """`ds` with its label column replaced by a constant one, so loaders need no special case."""
    if streaming:
        # A stream's map hands each example over decoded: the images are left as bytes first (the loader's
        # bounded decoder reads them, not datasets'), and the features are kept (a map that drops them
        # leaves the loader's cast_column a TypeError).
        ds = ds.cast_column(image, datasets.Image(decode=False))
        features = datasets.Features({**ds.features, UNLABELLED: datasets.Value("int64")})
        return ds.map(lambda _: {UNLABELLED: 0}, features=features)
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
