"""Evaluation and few-shot feature-extraction throughput against a bare timm forward loop.

    .venv/bin/python benchmarks/eval_throughput.py                  # Ti/16 and S/16, 224 px, bf16, batch 64
    .venv/bin/python benchmarks/eval_throughput.py --models S/16 --precision fp32

"evaluator" is the real `ClassificationEvaluator.run` (loader, autocast forward, metrics) on a stand-in
split of random images already decoded into the loader's in-memory cache, so data costs next to
nothing; "features" is the real few-shot `extract_features` on in-memory batches; "bare" is
`torch.inference_mode()` + autocast + `model(x)` on the same tensors. The loops alternate in one
process after a warm-up; medians of several rounds are compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import timm
import torch

from vitcli.recipe.config import DataCfg
from vitcli.data import load_split
from vitcli.engine.evaluate.evaluators import ClassificationEvaluator
from vitcli.engine.evaluate.fewshot import extract_features
from vitcli.engine.runtime.process import Runtime

TIMM = {"Ti/16": "vit_tiny_patch16_224", "S/16": "vit_small_patch16_224", "B/16": "vit_base_patch16_224"}


def stand_in_split(folder: Path, n: int, res: int):
    """`n` random res x res images saved locally, loaded as a vit Split."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (res, res, 3), dtype=np.uint8) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000)})
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"image": images, "label": [0] * n}, features=features).save_to_disk(str(folder))
    return load_split(str(folder), "train")


def run_model(name: str, precision: str, args, tmp: Path) -> dict:
    rt = Runtime.create("cpu", precision, 0)
    model = timm.create_model(TIMM[name], num_classes=1000).eval()
    split = stand_in_split(tmp / name.replace("/", ""), args.batch * args.batches, args.res)
    evaluator = ClassificationEvaluator(split, DataCfg(source="stand-in", train_crop="resize"),
                                        (args.res, args.res), args.batch, rt, channels=3)
    evaluator.run(model)  # builds the decode-once cache, untimed
    x = torch.randn(args.batch, 3, args.res, args.res)
    batches = [(x, torch.zeros(args.batch, dtype=torch.long))] * args.batches
    dtype = torch.bfloat16 if precision == "bf16" else None

    def bare():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            for images, _ in batches:
                model(images)

    loops = {"evaluator": lambda: evaluator.run(model),
             "features": lambda: extract_features(model, batches, device="cpu", autocast_dtype=dtype),
             "bare": bare}
    times = {k: [] for k in loops}
    for fn in loops.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for key, fn in loops.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    n = args.batch * args.batches
    row = {"model": name, "res": args.res, "batch": args.batch, "precision": precision}
    for key, ts in times.items():
        row[f"{key}_img_s"] = round(n / statistics.median(ts), 1)
    row["evaluator_ratio"] = round(row["evaluator_img_s"] / row["bare_img_s"], 3)
    row["features_ratio"] = round(row["features_img_s"] / row["bare_img_s"], 3)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["Ti/16", "S/16"])
    p.add_argument("--precision", nargs="+", default=["bf16"])
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=2, help="batches per timed pass")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for precision in args.precision:
                print(json.dumps(run_model(name, precision, args, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
