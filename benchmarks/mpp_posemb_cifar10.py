"""CIFAR-10 on a CPU: masked patch prediction against supervised training, and the position-embedding
ablation, both at the scale of recipes/cifar10/scratch.yaml (ViT 4 x 128, patch 4, 32 px, batch 128).

    .venv/bin/python benchmarks/mpp_posemb_cifar10.py mpp --data ../shared/data/cifar10
    .venv/bin/python benchmarks/mpp_posemb_cifar10.py posemb --data ../shared/data/cifar10 [--steps 300]

mpp     (1) fine-tuning recipe from random initialisation, 400 steps (recipes/mpp/cifar10_finetune.yaml)
        (2) masked patch prediction on the training images, labels unused, 968 steps
            (recipes/mpp/cifar10_cpu.yaml), then the same 400 fine-tuning steps from it
        (3) supervised from scratch for 968 + 400 = 1,368 steps: recipes/cifar10/scratch.yaml (with
            --scratch; otherwise its recorded result in benchmarks/README.md is quoted)
        plus the few-shot accuracy (recipes/fewshot/cifar10.yaml) of the MPP backbone and of each model.
posemb  recipes/cifar10/scratch.yaml for `--steps` steps with each model.posemb, then its test top-1 and
        few-shot accuracy.

Each `vit` command runs under `flock /tmp/vit-heavy.lock nice -n 5` (the machine is shared), one at a
time; results are kept in RUNS/bench-<part>.json so an interrupted benchmark continues where it stopped.
One seed (train.seed 0). Prints a markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIT = ["flock", "/tmp/vit-heavy.lock", "nice", "-n", "5", sys.executable, "-m", "vitcli"]
KINDS = ("learned", "none", "learned_2d", "relative", "relative_2d", "sincos2d")


class Bench:
    """Runs `vit` commands once each, remembering their JSON results and wall times."""

    def __init__(self, runs: Path, part: str):
        self.runs = runs
        self.path = runs / f"bench-{part}.json"
        self.state = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def step(self, key: str, args: list[str]) -> dict:
        shown = "vit " + shlex.join(args)
        if key in self.state and self.state[key]["command"] == shown:
            return self.state[key]["result"]
        print(f"[{key}] {shown}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run([*VIT, *args, "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"[{key}] failed with exit code {proc.returncode}: {shown}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result.pop("per_class_top1", None)
        self.state[key] = {"command": shown, "wall_s": round(time.perf_counter() - start, 1), "result": result}
        self.runs.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.state, indent=1))
        return result


def fewshot(bench: Bench, key: str, run: Path, data: str) -> dict:
    """Mean few-shot accuracy per shot count of a run's model on CIFAR-10 (the recipe's 20% of train)."""
    out = bench.step(f"{key}-fewshot", ["fewshot", "recipes/fewshot/cifar10.yaml", "--from", str(run),
                                        "--set", f"data.source={data}"])
    return {shot: r["mean"] for shot, r in next(iter(out["results"].values())).items()}


def top1(result: dict) -> float:
    return result.get("top1", float("nan"))


def mpp(bench: Bench, data: str, runs: Path, scratch: bool) -> None:
    src = ["--set", f"data.source={data}"]
    rows = []
    random = bench.step("random-ft", ["pretrain", "recipes/mpp/cifar10_finetune.yaml", *src,
                                      "--out", str(runs / "random-ft")])
    rows.append(("random init, 400 fine-tuning steps", 400, top1(random), fewshot(bench, "random-ft",
                                                                                  runs / "random-ft", data)))
    pre = bench.step("mpp", ["pretrain", "recipes/mpp/cifar10_cpu.yaml", *src, "--out", str(runs / "mpp")])
    print(f"MPP pretraining: {pre}", file=sys.stderr)
    rows.append(("MPP backbone (968 steps), no fine-tuning", 968, float("nan"),
                 fewshot(bench, "mpp", runs / "mpp", data)))
    ft = bench.step("mpp-ft", ["finetune", "recipes/mpp/cifar10_finetune.yaml", "--from", str(runs / "mpp"),
                               *src, "--out", str(runs / "mpp-ft")])
    rows.append(("MPP 968 steps + 400 fine-tuning steps", 1368, top1(ft), fewshot(bench, "mpp-ft",
                                                                                 runs / "mpp-ft", data)))
    if scratch:
        sup = bench.step("scratch", ["pretrain", "recipes/cifar10/scratch.yaml", *src,
                                     "--out", str(runs / "scratch")])
        rows.append(("supervised from scratch, 1,368 steps", 1368, top1(sup),
                     fewshot(bench, "scratch", runs / "scratch", data)))
    print("| run | steps | test top-1 | 1-shot | 5-shot | 10-shot | 25-shot |\n|---|---|---|---|---|---|---|")
    for name, steps, acc, shots in rows:
        cells = " | ".join(f"{100 * shots[s]:.2f}%" for s in ("1shot", "5shot", "10shot", "25shot"))
        print(f"| {name} | {steps} | {'-' if acc != acc else f'{100 * acc:.2f}%'} | {cells} |")


def posemb(bench: Bench, data: str, runs: Path, steps: int) -> None:
    print("| model.posemb | test top-1 | 1-shot | 5-shot | 10-shot | 25-shot | wall |\n|---|---|---|---|---|---|---|")
    for kind in KINDS:
        out = runs / f"posemb-{kind}"
        result = bench.step(kind, ["pretrain", "recipes/cifar10/scratch.yaml", "--set", f"data.source={data}",
                                   "--set", f"model.posemb={kind}", "--set", "train.epochs=null",
                                   "--set", f"train.steps={steps}", "--set", "train.checkpoint_every=0",
                                   "--out", str(out)])
        shots = fewshot(bench, kind, out, data)
        cells = " | ".join(f"{100 * shots[s]:.2f}%" for s in ("1shot", "5shot", "10shot", "25shot"))
        wall = bench.state[kind]["wall_s"]
        print(f"| {kind} | {100 * top1(result):.2f}% | {cells} | {wall / 60:.1f} min |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["mpp", "posemb"])
    parser.add_argument("--data", required=True, help="CIFAR-10 source, e.g. ../shared/data/cifar10")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-mpp")
    parser.add_argument("--steps", type=int, default=300, help="posemb: training steps per choice")
    parser.add_argument("--scratch", action="store_true", help="mpp: also rerun the 1,368-step scratch recipe")
    args = parser.parse_args()
    bench = Bench(args.runs, args.part)
    if args.part == "mpp":
        mpp(bench, args.data, args.runs, args.scratch)
    else:
        posemb(bench, args.data, args.runs, args.steps)


if __name__ == "__main__":
    main()
