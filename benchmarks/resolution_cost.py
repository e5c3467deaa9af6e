"""Cost against work: training step time at 224 px and 384 px against the ratio of their FLOPs.

    .venv/bin/python benchmarks/resolution_cost.py               # S/16, batch 8, bf16
    .venv/bin/python benchmarks/resolution_cost.py --model B/16 --batch 8

Sequence length grows from 197 to 577 tokens (patch 16); attention grows with its square, so the FLOP
ratio (vitcli.models.macs, exact) is above the 2.94x token ratio. The two resolutions alternate in one
process; the target is a time ratio within 10% of the FLOP ratio. `--attention timm` builds the models
with timm's own attention instead of vit's (which trains in fp32 on CPU, vitcli/models/attention.py), so
the change can be measured before/after in one sitting.
"""

from __future__ import annotations

import argparse
import json
import statistics

from vitcli import recipe
from vitcli.engine.jobs import bench
from vitcli.models import macs, resolve_variant


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="S/16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--attention", choices=["vit", "timm"], default="vit")
    args = p.parse_args()
    if args.attention == "timm":
        import timm.layers

        import vitcli.models.vit

        vitcli.models.vit.Attention = timm.layers.Attention
    cfg = recipe.from_data({"model": {"name": args.model}, "optim": {"name": "adamw"},
                            "train": {"device": "cpu"}}, "resolution")
    times = {224: [], 384: []}
    for _ in range(args.rounds):
        for res in times:
            r = bench(cfg, steps=args.steps, warmup=1, batch=args.batch, res=(res, res),
                      precision=args.precision, peak=False)
            times[res].append(r["step_s"])
    variant = resolve_variant(cfg.model)
    flop_ratio = macs(variant, (384, 384), 1000) / macs(variant, (224, 224), 1000)
    time_ratio = statistics.median(times[384]) / statistics.median(times[224])
    print(json.dumps({"model": args.model, "batch": args.batch, "precision": args.precision,
                      "attention": args.attention,
                      "step_s_224": round(statistics.median(times[224]), 3),
                      "step_s_384": round(statistics.median(times[384]), 3),
                      "time_ratio": round(time_ratio, 3), "flop_ratio": round(flop_ratio, 3),
                      "time_over_flops": round(time_ratio / flop_ratio, 3)}))


if __name__ == "__main__":
    main()
