"""Streamed data resumes in O(1): a run stopped at 70% reads at most one shard again per reader (each DataLoader
worker of each rank), and the examples after the resume are the ones the uninterrupted run saw, in its order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_recipe, write_webdataset
from PIL import Image
from stream_worker import logging_reads

from vitcli import recipe
from vitcli.data.loader import ImageLoader, train_loader
from vitcli.data.source import load_split
from vitcli.data.stream import shard_cursor
from vitcli.engine.runtime.signals import Interrupted
from vitcli.recipe.config import DataCfg

SHARDS, PER_SHARD, CLASSES = 20, 8, ["a", "b", "c", "d"]


def write_shards(folder: Path, shards: int = SHARDS, per_shard: int = PER_SHARD, size: int = 8) -> Path:
    """`shards` parquet files of `per_shard` distinct noise images each (the hub's file names)."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(per_shard)]
        labels = [(s * per_shard + i) % len(CLASSES) for i in range(per_shard)]
        ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        ds.to_parquet(str(folder / f"train-{s:05d}-of-{shards:05d}.parquet"))
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("stream") / "data")


def count_reads(monkeypatch, log: Path) -> None:
    """Log every parquet shard `datasets` opens and every table of rows it reads from it, to `log` (workers are
    forked, so they inherit the patch and write to the same file)."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    monkeypatch.setattr(Parquet, "_generate_tables", logging_reads(Parquet._generate_tables, log, len))


def reads(log: Path) -> tuple[list[str], int]:
    """The shards opened and the rows read, as logged by `count_reads`."""
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [name for kind, name in lines if kind == "open"], sum(int(n) for kind, n in lines if kind == "rows")


def fingerprint(batch) -> tuple:
    images, labels = batch
    return tuple(labels.tolist()), hashlib.sha1(images.numpy().tobytes()).hexdigest()


def _cfg(**kw) -> DataCfg:
    return DataCfg(source="x", train_crop="inception", flip=True, min_area=0.3, **{"shuffle_buffer": 5, **kw})


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_stopped_at_70_percent_resumes_reading_at_most_one_shard_again(shards, tmp_path, monkeypatch,
                                                                                 workers):
    log = tmp_path / "reads.txt"
    count_reads(monkeypatch, log)
    split = load_split(str(shards), "train", streaming=True)
    log.unlink(missing_ok=True)  # (learning the features may read the first rows)

    def loader(resume=None):
        return train_loader(split, _cfg(workers=workers), (8, 8), 4, seed=3, epoch=1, resume=resume)

    full = [fingerprint(b) for b in loader()]
    assert len(full) == SHARDS * PER_SHARD // 4 and reads(log) [1] == SHARDS * PER_SHARD
    log.unlink()
    cut = int(0.7 * len(full)) - 1  # 27 of 40 batches: every worker is inside a shard
    first = loader()
    taken = [fingerprint(b) for _, b in zip(range(cut), first)]
    state = json.loads(json.dumps(first.stream_state()))  # a checkpoint holds plain data
    del first
    log.unlink()
    rest = [fingerprint(b) for b in loader(resume=state)]
    assert taken + rest == full
    opened, rows = reads(log)
    # What the resumed run reads beyond the examples it hands out: the part of its shard each reader (one per
    # worker) had handed out, read again to refill the shuffle buffer as it was; never more than that shard.
    again = rows - len(rest) * 4
    assert 0 < again <= PER_SHARD * max(workers, 1)
    assert len(opened) == len(set(opened)) <= SHARDS - (cut * 4 - again) // PER_SHARD


def count_tar_reads(monkeypatch, log: Path) -> None:
    """`count_reads` for WebDataset shards: the tars opened and the examples read from them."""
    from datasets.packaged_modules.webdataset.webdataset import WebDataset

    monkeypatch.setattr(WebDataset, "_generate_examples",
                        logging_reads(WebDataset._generate_examples, log, lambda example: 1))


def test_a_webdataset_source_resumes_the_same_way(tmp_path, monkeypatch):
    """20 tar shards of `KEY.png` + `KEY.cls`: the columns are found without naming them, and a stop at 70%
    resumes as parquet shards do."""
    log = tmp_path / "reads.txt"
    count_tar_reads(monkeypatch, log)
    source = write_webdataset(tmp_path / "wds", SHARDS, PER_SHARD)
    split = load_split(str(source), "train", streaming=True, num_classes=len(CLASSES))
    assert (split.image_column, split.label_column) == ("png", "cls")
    log.unlink(missing_ok=True)

    def loader(resume=None):
        return train_loader(split, _cfg(workers=2), (8, 8), 4, seed=3, resume=resume)

    full = [fingerprint(b) for b in loader()]
    assert len(full) == SHARDS * PER_SHARD // 4
    assert [labels for labels, _ in full] != [labels for labels, _ in [fingerprint(b) for b in train_loader(
        split, _cfg(workers=2, shuffle_buffer=0), (8, 8), 4, seed=3)]]  # the buffer shuffles
    cut = int(0.7 * len(full)) - 1
    first = loader()
    taken = [fingerprint(b) for _, b in zip(range(cut), first)]
    state = json.loads(json.dumps(first.stream_state()))
    del first
    log.unlink()
    rest = [fingerprint(b) for b in loader(resume=state)]
    assert taken + rest == full
    opened, rows = reads(log)
    assert 0 < rows - len(rest) * 4 <= PER_SHARD * 2 and len(opened) == len(set(opened))


def test_shards_that_ranks_do_not_divide_and_old_checkpoints_still_resume_exactly(shards, caplog):
    """20 shards among 3 processes: datasets strides examples over every shard, no shard start to go back
    to, so the position is counted from the stream's start (O(n), but exact). A checkpoint without positions
    (from before they were saved) gives only the examples used: each worker skips its share."""
    split = load_split(str(shards), "train", streaming=True)
    loader = lambda **kw: train_loader(split, _cfg(workers=2), (8, 8), 4, seed=3, rank=1, world=3, **kw)
    with caplog.at_level("WARNING", logger="vitcli.data"):
        full = [fingerprint(b) for b in loader()]
    assert not caplog.records  # (said once, by rank 0)
    first = loader()
    taken = [fingerprint(b) for _, b in zip(range(7), first)]
    state = first.stream_state()
    assert state["at"]["0"]["state"] is None and state["at"]["0"]["taken"] in (12, 16)
    assert taken + [fingerprint(b) for b in loader(resume=state)] == full
    assert [fingerprint(b) for b in loader(start=7 * 4)] == full[7:]
    with caplog.at_level("WARNING", logger="vitcli.data"):
        train_loader(split, _cfg(workers=2), (8, 8), 4, seed=3, rank=0, world=3)
    assert "its 20 shards do not divide among 3 processes" in caplog.text


def test_the_shuffle_mixes_within_shards_and_changes_with_the_epoch(shards):
    split = load_split(str(shards), "train", streaming=True)
    order = lambda epoch, buffer: [tuple(y.tolist()) for _, y in train_loader(
        split, DataCfg(source="x", train_crop="resize", flip=False, shuffle_buffer=buffer), (8, 8), 8, seed=3,
        epoch=epoch)]
    in_order = order(0, 0)
    assert in_order[0] == (0, 1, 2, 3, 0, 1, 2, 3)  # shard 0 as written
    shuffled = order(0, 6)
    assert shuffled != in_order and shuffled == order(0, 6)
    again = train_loader(split, _cfg(workers=2), (8, 8), 4, seed=3)
    assert [fingerprint(b) for b in again] == [fingerprint(b) for b in again]  # a loader iterated twice
    # batches of 8 from shards of 8: each batch is one shard, shuffled, never mixed with the next
    assert [sorted(b) for b in shuffled] == [sorted(b) for b in in_order]
    assert order(1, 6) != shuffled


def test_the_saved_position_is_datasets_own_state_at_a_shard_start(shards):
    split = load_split(str(shards), "train", streaming=True)
    loader = train_loader(split, _cfg(workers=0), (8, 8), 4, seed=3)
    for _, _ in zip(range(9), loader):
        pass
    at = loader.stream_state()["at"]["0"]
    assert shard_cursor(at["state"]) == {"shard_idx": 4, "shard_example_idx": 0, "type": "ArrowExamplesIterable"}
    assert (at["taken"], at["batches"]) == (4, 9)  # 36 examples: shards 0-3 and 4 of shard 4


def test_a_position_from_a_checkpoint_of_another_world_size_is_refused(tmp_path):
    from vitcli.engine.runtime.process import Runtime
    from vitcli.engine.train import stream_position
    from vitcli.errors import CheckpointError

    rt = Runtime.create("cpu", "fp32", 0)
    saved = [{"epoch": 0, "workers": 2, "next": 0, "at": {}}] * 2
    with pytest.raises(CheckpointError, match="holds the stream positions of 2 processes.*resume it with 2"):
        stream_position.restored(saved, rt, 0, tmp_path / "step_3.pt")
    assert stream_position.restored(saved[:1], rt, 1, tmp_path / "x") is None  # saved as its epoch ended


def served_batches(monkeypatch) -> list:
    """Every training batch the trainer takes, as fingerprints, in order."""
    seen = []
    original = ImageLoader.__iter__

    def recording(self):
        for batch in original(self):
            if self.order is not None:
                seen.append(fingerprint(batch))
            yield batch

    monkeypatch.setattr(ImageLoader, "__iter__", recording)
    return seen


class Killed(Exception):
    """The process dying at once (SIGKILL, a lost node): no checkpoint of its own; the last periodic one counts."""


@pytest.mark.parametrize("end", ["stopped", "killed"])
def test_a_streamed_training_run_stopped_at_70_percent_resumes_exactly(shards, tmp_path, monkeypatch, end):
    """`stopped`: a SIGTERM after step 18 of 26 (70%) saves a checkpoint there; `killed`: the run dies after
    step 18, and resumes from its periodic checkpoint of step 15."""
    from test_train import run_trainer  # the trainer as jobs.train drives it, stopped by a "SIGTERM" at a step

    from vitcli.engine.train.trainer import Trainer

    log = tmp_path / "reads.txt"
    count_reads(monkeypatch, log)
    seen = served_batches(monkeypatch)
    data = tiny_recipe(shards, data={"streaming": True, "workers": 2, "eval_split": None, "shuffle_buffer": 5,
                                     "train_crop": "inception", "flip": True},
                       train={"steps": 26, "batch_size": 6, "seed": 1, "checkpoint_every": 5},  # 26: one epoch
                       model={"res": 8})
    cfg = recipe.from_data(data, "test")
    full = run_trainer(cfg, tmp_path / "full")
    uninterrupted, seen[:] = list(seen), []
    log.unlink()
    if end == "stopped":
        with pytest.raises(Interrupted):
            run_trainer(cfg, tmp_path / "cut", stop_at=18)
    else:
        after = Trainer._after_step

        def dying(self, timer):
            timer = after(self, timer)
            if self.pos.step == 18:
                raise Killed
            return timer

        monkeypatch.setattr(Trainer, "_after_step", dying)
        with pytest.raises(Killed):
            run_trainer(cfg, tmp_path / "cut")
        monkeypatch.setattr(Trainer, "_after_step", after)
    assert len(seen) == 18  # 70%: 108 examples, 54 from each worker, each inside its seventh shard
    cut = 18 if end == "stopped" else 15  # (killed: steps 16-18 are trained again from step 15's checkpoint)
    log.unlink()
    resumed = run_trainer(cfg, tmp_path / "cut", resume=True)
    assert seen[:cut] + seen[18:] == uninterrupted
    opened, rows = reads(log)
    again = rows - sum(len(labels) for labels, _ in seen[18:])  # read beyond what the resumed run trained on
    assert 0 < again <= PER_SHARD * 2 and len(opened) == len(set(opened))  # the partial shard of each worker
    for name, tensor in full.setup.raw_state_dict().items():
        assert torch.equal(tensor, resumed.setup.raw_state_dict()[name]), name
