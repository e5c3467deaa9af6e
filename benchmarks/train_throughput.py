"""Training throughput of vit's engine against a bare timm loop, and MFU against the measured matmul peak.

    .venv/bin/python benchmarks/train_throughput.py                      # Ti/16 and S/16, 224 px, bf16
    .venv/bin/python benchmarks/train_throughput.py --models S/16 --precision fp32 bf16 --compile
    .venv/bin/python benchmarks/train_throughput.py --recipe recipes/demo.yaml --precision fp32

Both loops train the same timm ViT on the same in-memory tensors (data excluded) with the same
batch, dtype and optimiser (fused AdamW, clip 1.0, EMA off). The engine side is the real
`TrainStep.run` that training uses. Timings on a shared CPU are noisy, so the two loops alternate in one process after a
warm-up and the median of each is compared: the ratio is what matters, not the absolute figure.

MFU = 6 x forward MACs (vitcli.models.macs) x images/s / measured dense matmul peak in the same dtype:
6 = 2 FLOPs per multiply-accumulate x 3 (the forward matmuls, plus two of the same size in backward).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import timm
import torch
import torch.nn.functional as F

from vitcli import recipe
from vitcli.recipe.config import ModelCfg
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train.bench import matmul_peak
from vitcli.engine.train.step import TrainStep
from vitcli.models import build_model, macs, resolve_variant

TIMM = {"Ti/16": "vit_tiny_patch16_224", "S/16": "vit_small_patch16_224", "B/16": "vit_base_patch16_224"}
CLASSES = 1000
SHAPE = ("name", "width", "depth", "heads", "mlp_dim", "patch")


def engine_step(model: ModelCfg, batch: int, precision: str, compile: bool):
    """A closure running one real engine step (`TrainStep.run`) on fixed in-memory tensors."""
    shape = {k: v for k, v in dataclasses.asdict(model).items() if k in SHAPE and v is not None}
    res = model.res[0]
    cfg = recipe.from_data({
        "model": {**shape, "res": res},
        "data": {"num_classes": CLASSES},
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "clip_norm": 1.0},
        "train": {"batch_size": batch, "micro_batch": batch, "precision": precision, "compile": compile,
                  "device": "cpu"},
    }, "bench")
    rt = Runtime.create("cpu", precision, 0)
    step = TrainStep(cfg, CLASSES, rt, Reporter(enabled=False))
    data = [(torch.randn(batch, 3, res, res), torch.randint(0, CLASSES, (batch,)))]
    return lambda: step.run(data, step.peak_lr, 0)


def bare_step(model_cfg: ModelCfg, batch: int, precision: str, compile: bool):
    """The fastest plain loop we know how to write with the same pieces."""
    res = model_cfg.res[0]
    if model_cfg.name in TIMM and model_cfg.width is None:
        model = timm.create_model(TIMM[model_cfg.name], num_classes=CLASSES, img_size=res)
    else:  # a recipe's custom shape: vit's model is a timm VisionTransformer with those dimensions
        model = build_model(model_cfg, CLASSES)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    fwd = torch.compile(model) if compile else model
    images, labels = torch.randn(batch, 3, res, res), torch.randint(0, CLASSES, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = fwd(images)
        F.cross_entropy(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def alternate(steps: dict, rounds: int, per_round: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step of each closure, interleaved round by round so drifts in load hit all alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for key, fn in steps.items():
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[key].append((time.perf_counter() - start) / per_round)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["Ti/16", "S/16"])
    p.add_argument("--recipe", help="time this recipe's model, resolution and batch instead of --models")
    p.add_argument("--precision", nargs="+", default=["bf16"])
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time both loops under torch.compile")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {pr: matmul_peak(torch.device("cpu"), pr, seconds=2.0) for pr in args.precision}
    print(json.dumps({"threads": torch.get_num_threads(), "matmul_peak_gflops":
                      {k: round(v / 1e9, 1) for k, v in peaks.items()}}))
    if args.recipe:
        cfg = recipe.load(args.recipe)
        models = [cfg.model]
        args.batch = cfg.train.micro_batch or cfg.train.batch_size
    else:
        models = [ModelCfg(name=name, res=(args.res, args.res)) for name in args.models]
    for model in models:
        for precision in args.precision:
            for compile in ([False, True] if args.compile else [False]):
                run_one(model, precision, compile, args, peaks[precision])


def run_one(model: ModelCfg, precision: str, compile: bool, args, peak: float) -> None:
    torch.manual_seed(0)
    steps = {"engine": engine_step(model, args.batch, precision, compile),
             "bare": bare_step(model, args.batch, precision, compile)}
    times = alternate(steps, args.rounds, args.per_round, args.warmup)
    peak = matmul_peak(torch.device("cpu"), precision, seconds=2.0)  # again: the load on a shared CPU drifts
    variant = resolve_variant(model)
    flops = 6 * macs(variant, model.res, CLASSES)
    row = {"model": variant.name, "res": model.res[0], "batch": args.batch, "precision": precision,
           "compile": compile, "threads": torch.get_num_threads()}
    for key, ts in times.items():
        img_s = args.batch / statistics.median(ts)
        row[f"{key}_img_s"] = round(img_s, 2)
        row[f"{key}_mfu"] = round(flops * img_s / peak, 3)
    # Ratio of medians, and the median of per-round ratios (robust to a load spike in one round).
    row["ratio"] = round(row["engine_img_s"] / row["bare_img_s"], 3)
    row["ratio_rounds"] = round(statistics.median(b / e for e, b in zip(times["engine"], times["bare"])), 3)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
