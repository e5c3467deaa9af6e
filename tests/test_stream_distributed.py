"""Streamed data under torchrun (2 processes, gloo on CPU, 2 DataLoader workers each): a run stopped at 70%
resumes reading at most the partial shard of each worker again, and every rank then trains on exactly the
batches the uninterrupted run did. Run with `pytest -m "distributed and slow"` (three torchrun launches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe
from test_stream import PER_SHARD, write_shards

from vitcli import recipe

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER = Path(__file__).with_name("stream_worker.py")
# 20 shards: 10 per rank, 5 per worker; 10 images per step (5 per rank): 8 batches per worker, 16 steps an epoch
STEPS, STOP = 16, 11  # 69%: the workers are 5 and 6 batches (25 and 30 images) in, inside their fourth shard


def vit(logdir: Path, stop_at: int, *args: str) -> subprocess.CompletedProcess:
    logdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER),
           str(logdir), str(stop_at), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def batches(logdir: Path, rank: int) -> list:
    return [json.loads(line) for line in (logdir / f"batches-{rank}.txt").read_text().splitlines()]


def rows_read(logdir: Path, rank: int) -> tuple[list[str], int]:
    lines = [line.split() for line in (logdir / f"reads-{rank}.txt").read_text().splitlines()]
    return [name for kind, name in lines if kind == "open"], sum(int(n) for kind, n in lines if kind == "rows")


def test_two_ranks_with_two_workers_each_resume_exactly_reading_one_shard_per_worker_again(tmp_path):
    shards = write_shards(tmp_path / "data")
    data = tiny_recipe(shards, data={"streaming": True, "workers": 2, "eval_split": None, "shuffle_buffer": 5,
                                     "train_crop": "inception", "flip": True},
                       train={"steps": STEPS, "batch_size": 10, "seed": 1}, model={"res": 8})
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml(recipe.from_data(data, "test")))
    full = vit(tmp_path / "log-full", 0, "pretrain", str(path), "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    cut = vit(tmp_path / "log-cut", STOP, "pretrain", str(path), "--out", str(tmp_path / "cut"))
    assert cut.returncode != 0 and "stopped by SIGTERM after step 11" in cut.stderr, cut.stderr[-3000:]
    resumed = vit(tmp_path / "log-resumed", 0, "pretrain", "--resume", "--out", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in (0, 1):
        before, after = batches(tmp_path / "log-cut", rank), batches(tmp_path / "log-resumed", rank)
        assert len(before) == STOP and len(after) == STEPS - STOP
        assert before + after == batches(tmp_path / "log-full", rank)  # the same examples, crops, order
        opened, rows = rows_read(tmp_path / "log-resumed", rank)
        again = rows - sum(len(labels) for labels, _ in after)  # rows read beyond those trained on
        assert 0 < again <= 2 * PER_SHARD and len(opened) == len(set(opened)) <= 10
