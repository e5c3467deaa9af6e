"""What resuming a streamed data set costs before its first batch: before (the stream read again from the
start of the epoch and the examples already used discarded, what `vit` did until issue 26 and still does
for a checkpoint without a saved position) against after (the saved position: datasets' state at the start
of the shard being read, that shard read again to refill the shuffle buffer), in one process.

    .venv/bin/python benchmarks/stream_resume.py                      # 20 shards of 200, stopped at 70%
    .venv/bin/python benchmarks/stream_resume.py --shards 40 --per-shard 500 --rounds 5

The shards are parquet files of small JPEGs written to a temporary folder; the run is one process with
workers=0 (what one DataLoader worker does). Each round times both resumes one after the other, counting the
rows `datasets` reads until the first batch comes out; the table shows medians and their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
from datasets.packaged_modules.parquet.parquet import Parquet
from PIL import Image

from vitcli.data.loader import train_loader
from vitcli.data.source import load_split
from vitcli.recipe.config import DataCfg

ROWS = [0]


def _counting():
    original = Parquet._generate_tables

    def counted(self, files, row_groups_list):
        for key, table in original(self, files, row_groups_list):
            ROWS[0] += len(table)
            yield key, table

    Parquet._generate_tables = counted


def write(folder: Path, shards: int, per_shard: int) -> None:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    rng = np.random.default_rng(0)
    for s in range(shards):
        images = []
        for _ in range(per_shard):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
            images.append({"bytes": buffer.getvalue(), "path": None})
        labels = rng.integers(0, 10, per_shard).tolist()
        datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
            str(folder / f"train-{s:05d}-of-{shards:05d}.parquet"))


def first_batch(make) -> tuple[float, int]:
    """Seconds and rows read until a freshly made loader gives its first batch."""
    ROWS[0] = 0
    start = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start, ROWS[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--per-shard", type=int, default=200)
    parser.add_argument("--at", type=float, default=0.7, help="where the run stopped, as a fraction of the epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    _counting()
    cfg = DataCfg(source="x", train_crop="inception", workers=0)  # data.shuffle_buffer: its default
    batch = 32
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), args.shards, args.per_shard)
        split = load_split(tmp, "train", streaming=True)
        used = int(args.at * args.shards * args.per_shard) // batch
        loader = train_loader(split, cfg, (32, 32), batch, seed=0)
        for _ in zip(range(used), loader):
            pass
        state = json.loads(json.dumps(loader.stream_state()))
        del loader
        sides = {"before: read again from the epoch's start": lambda: train_loader(
                     split, cfg, (32, 32), batch, seed=0, start=used * batch),
                 "after: saved position": lambda: train_loader(split, cfg, (32, 32), batch, seed=0, resume=state)}
        times = {name: [] for name in sides}
        rows = {}
        for _ in range(args.rounds):
            for name, make in sides.items():
                seconds, rows[name] = first_batch(make)
                times[name].append(seconds)
    base = statistics.median(times[next(iter(sides))])
    print(f"{args.shards} shards of {args.per_shard} ({args.shards * args.per_shard} examples), stopped after "
          f"{used * batch} ({args.at:.0%}); medians of {args.rounds} rounds")
    print("| resume | rows read before the first batch | seconds to the first batch | speed-up |")
    print("|---|---|---|---|")
    for name in sides:
        median = statistics.median(times[name])
        print(f"| {name} | {rows[name]:,} | {median:.3f} | {base / median:.1f}x |")


if __name__ == "__main__":
    main()
