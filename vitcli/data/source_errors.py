"""A data source's failures as one line each: splits that do not exist or select nothing, loading scripts,
and the real cause under `datasets`' generic wrapper."""

from __future__ import annotations

import datasets

from vitcli.errors import DataError, did_you_mean, first_line, one_of

EMPTY = "corresponds to no data"  # how datasets says a split expression selects nothing
SCRIPTS = "Dataset scripts are no longer supported"  # how datasets (>= 4) refuses to run a loading script


def script_error(source: str, e: RuntimeError) -> DataError:
    # datasets >= 4 refuses loading scripts: it never runs them. Say so in one line.
    script = first_line(e).rpartition(" ")[2]
    return DataError(f"data.source {source!r} holds a dataset loading script ({script}), which vit never runs; "
                     "give parquet/arrow files, a save_to_disk directory or imagefolder:PATH")


def split_error(source: str, split: str, streaming: bool, e: ValueError, path: str, kwargs: dict) -> DataError:
    """Explain a split `load_dataset` refused, listing the splits that exist."""
    message = str(e)
    if EMPTY in message:
        return empty_split(source, split)
    if not ("split" in message.lower() or "instruction" in message.lower()):
        return DataError(f"data.source {source!r} split {split!r}: {first_line(e)}")
    try:
        available = datasets.get_dataset_split_names(path, **kwargs)
    except Exception:  # listing is a courtesy: the original message still explains the failure
        return DataError(f"data.source {source!r}: bad split {split!r} ({first_line(e)})")
    return bad_split(source, split, available, streaming)


def empty_split(source: str, split: str) -> DataError:
    return DataError(f"data.source {source!r} split {split!r} is empty; choose a split expression that "
                     "selects some examples")


def bad_split(source: str, split: str, available, streaming: bool) -> DataError:
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


def root_cause(e: BaseException) -> str:
    """The first line of the innermost exception: datasets wraps the real failure in a generic one."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return first_line(e)
