"""Images/s that vit's training loader delivers (decode, augmentation, collation), against what the
model of the matching CPU recipe trains per second.

    .venv/bin/python benchmarks/data_pipeline.py             # digits (demo) and CIFAR-10 at 32 and 224 px
    .venv/bin/python benchmarks/data_pipeline.py --path pil  # the per-image PIL path, for comparison

Small data sets are decoded once into a uint8 tensor and augmented a batch at a time (the "cached"
path); `--path pil` disables that cache to show the per-image path the loader uses for large data.
The first epoch includes building the cache; later epochs are what the rest of a run sees.
CIFAR-10 is read from /work/shared/data/cifar10 and skipped, with a message, when absent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vitcli import recipe
from vitcli.data import load_split, train_loader
from vitcli.data import readers
from vitcli.engine.jobs import bench

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"


def epochs_img_s(split, data_cfg, res, batch: int, epochs: int) -> list[float]:
    """Images/s of each of `epochs` full passes of `train_loader`, as the trainer builds it per epoch."""
    rates = []
    for epoch in range(epochs):
        start, n = time.perf_counter(), 0
        for _, labels in train_loader(split, data_cfg, res, batch, seed=0, epoch=epoch):
            n += len(labels)
        rates.append(n / (time.perf_counter() - start))
    return rates


def case(name: str, recipe_path: str, source: str | None, res: int | None, epochs: int, steps: int,
         model: str | None = None) -> dict:
    cfg = recipe.load(ROOT / recipe_path, [f"data.source={source}"] if source else [])
    res_t = (res, res) if res else cfg.model.res
    split = load_split(cfg.data.source, cfg.data.train_split)
    batch = cfg.train.micro_batch or cfg.train.batch_size
    rates = epochs_img_s(split, cfg.data, res_t, batch, epochs)
    model = bench(cfg, steps=steps, warmup=1, batch=batch, res=res_t, model=model, peak=False)
    return {"case": name, "res": res_t[0], "batch": batch, "workers": cfg.data.workers,
            "loader_img_s_first_epoch": round(rates[0]), "loader_img_s": round(max(rates[1:] or rates)),
            "model_train_img_s": round(model["img_s"], 1),
            "loader_over_model": round(max(rates[1:] or rates) / model["img_s"], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", choices=["cached", "pil"], default="cached")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="model training steps timed per case")
    args = p.parse_args()
    if args.path == "pil":
        readers.CACHE_BYTES = 0  # every data set takes the per-image path
    print(json.dumps({"path": args.path, **case("digits (demo)", "recipes/demo.yaml", None, None,
                                                 args.epochs, args.steps)}), flush=True)
    if not CIFAR10.exists():
        print(f"CIFAR-10 not found at {CIFAR10}: skipping the CIFAR-10 cases")
        return
    for res in (32, 224):
        # 224 px: one epoch is 50,000 upsampled images; two epochs show the cached steady state.
        epochs = args.epochs if res == 32 else min(args.epochs, 2)
        # At 224 px the recipe's patch-4 model would see 3,137 tokens; a 224 px run trains Ti/16.
        row = case(f"cifar10 scratch @{res}", "recipes/cifar10/scratch.yaml", str(CIFAR10), res, epochs,
                   args.steps if res == 32 else 1, None if res == 32 else "Ti/16")
        print(json.dumps({"path": args.path, **row}), flush=True)


if __name__ == "__main__":
    main()
