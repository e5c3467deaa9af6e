"""Peak memory of training at a micro-batch of 32: resident set (VmHWM) on CPU, one subprocess per model.

    .venv/bin/python benchmarks/memory.py                 # S/16 and B/16, 224 px, bf16, batch 32
    .venv/bin/python benchmarks/memory.py --models S/16 --precision fp32
    .venv/bin/python benchmarks/memory.py --models B/16 L/16 --batch 8 --grad-checkpointing both

Each model is trained for a few real engine steps in its own process, so peaks never mix; the peak
is read after the steps, so it includes the interpreter, torch and the model build (reported too, as
`baseline_mb`: the resident set just before the first step). `step_s` is the median wall time of a timed
step, `cpu_s` the median CPU seconds the process spent in one (all threads): on a machine shared with other
jobs the wall time follows their load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, statistics, sys, time
from pathlib import Path
from vitcli import recipe
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train import bench as b
from vitcli.engine.train.step import TrainStep
name, res, batch, precision, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ckpt = sys.argv[6] == "on"
cfg = recipe.from_data({"model": {"name": name, "res": res}, "optim": {"name": "adamw"},
                        "train": {"precision": precision, "device": "cpu", "grad_checkpointing": ckpt}}, "memory")
cfg = b.bench_recipe(cfg, batch=batch)
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
rt = Runtime.create("cpu", precision, 0)
step = TrainStep(cfg, cfg.data.num_classes, rt, Reporter(enabled=False))
data = b.synthetic_batch(cfg, rt.device)
baseline = rss()
cpu, run = [], step.run
def counted(*args):  # CPU seconds of this process (all its threads) per step: what other jobs' load leaves alone
    begin = time.process_time()
    out = run(*args)
    cpu.append(time.process_time() - begin)
    return out
step.run = counted
times = b.time_steps(step, data, steps, warmup=1)
print(json.dumps({"model": name, "res": res, "batch": batch, "precision": precision, "grad_checkpointing": ckpt,
                  "peak_rss_mb": round(b.peak_memory_mb(rt.device)), "baseline_mb": round(baseline),
                  "step_s": round(statistics.median(times), 2), "cpu_s": round(statistics.median(cpu[1:]), 2)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["S/16", "B/16"])
    p.add_argument("--precision", nargs="+", default=["bf16"])
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--grad-checkpointing", choices=["off", "on", "both"], default="off",
                   help="train.grad_checkpointing; both: each model with and without, one process each")
    args = p.parse_args()
    modes = ["off", "on"] if args.grad_checkpointing == "both" else [args.grad_checkpointing]
    root = Path(__file__).resolve().parents[1]
    for model in args.models:
        for precision in args.precision:
            for mode in modes:
                cmd = [sys.executable, "-c", CHILD, model, str(args.res), str(args.batch), precision, str(args.steps),
                       mode]
                out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout
                print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
