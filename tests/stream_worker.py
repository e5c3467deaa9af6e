"""A torchrun worker that records what a streamed run reads and trains on, then runs `vit` as usual
(tests/test_stream_distributed.py).

    torchrun ... tests/stream_worker.py LOGDIR STOP_AT vit-arguments...

Each rank appends to LOGDIR/reads-RANK.txt every parquet shard `datasets` opens and every table of rows it
reads (its DataLoader workers are forked and inherit the patch), and to LOGDIR/batches-RANK.txt every
training batch it takes (labels and a hash of the pixels). STOP_AT > 0 sends this process a SIGTERM right
after that optimiser step, as a cluster's preemption would (every rank gets one). The product code is
untouched: all of it is done from outside.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path


def logging_reads(generate: Callable, log: Path, rows: Callable[[object], int]) -> Callable:
    """`generate` (a `datasets` builder's `_generate_tables` / `_generate_examples`: self, then the shard
    paths) wrapped to append to `log` "open NAME" for every shard it is given and "rows N" for every
    item it yields (`rows(item)` rows); forked DataLoader workers inherit it and write to the same file."""

    signature = inspect.signature(generate)  # datasets calls it by keyword (files=, tar_paths=, ...)
    shards = list(signature.parameters)[1]  # the one after self

    def counted(*args, **kwargs):
        with open(log, "a") as out:
            out.writelines(f"open {Path(f).name}\n" for f in signature.bind(*args, **kwargs).arguments[shards])
        for key, item in generate(*args, **kwargs):
            with open(log, "a") as out:
                out.write(f"rows {rows(item)}\n")
            yield key, item

    return counted


def record(logdir: Path, rank: str) -> None:
    from datasets.packaged_modules.parquet.parquet import Parquet

    from vitcli.data.loader import ImageLoader

    reads, batches = logdir / f"reads-{rank}.txt", logdir / f"batches-{rank}.txt"
    counted = logging_reads(Parquet._generate_tables, reads, len)
    iterate = ImageLoader.__iter__

    def recording(self):
        for images, labels in iterate(self):
            if self.order is not None and self.dataset.seed is not None:  # a training stream
                with open(batches, "a") as out:
                    out.write(json.dumps([labels.tolist(), hashlib.sha1(images.numpy().tobytes()).hexdigest()]) + "\n")
            yield images, labels

    Parquet._generate_tables, ImageLoader.__iter__ = counted, recording


def stop_after(step: int) -> None:
    from vitcli.engine.train.trainer import Trainer

    after = Trainer._after_step

    def stopping(self, timer):
        timer = after(self, timer)
        if self.pos.step == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return timer

    Trainer._after_step = stopping


def main() -> None:
    logdir, stop_at, *args = sys.argv[1:]
    record(Path(logdir), os.environ.get("RANK", "0"))
    if int(stop_at):
        stop_after(int(stop_at))
    from vitcli.cli import main as vit

    sys.argv = ["vit", *args]
    vit()


if __name__ == "__main__":
    main()
