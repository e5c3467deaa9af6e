"""CIFAR-10 on a CPU: masked patch prediction against supervised training, and the position-embedding
ablation, both at the scale of recipes/cifar10/scratch.yaml (ViT 4 x 128, patch 4, 32 px, batch 128).

    .venv/bin/python benchmarks/mpp_posemb_cifar10.py mpp --data ../shared/data/cifar10
    .venv/bin/python benchmarks/mpp_posemb_cifar10.py posemb --data ../shared/data/cifar10 [--steps 120]
    .venv/bin/python benchmarks/mpp_posemb_cifar10.py where --data ../shared/data/cifar10 [--steps 120]

mpp     (1) the fine-tuning recipe from random initialisation (recipes/mpp/cifar10_finetune.yaml run
            by `vit pretrain`), `--ft-steps` steps
        (2) masked patch prediction on the training images, labels unused (recipes/mpp/cifar10_cpu.yaml),
            `--pre-steps` steps, then the same fine-tuning from it (`vit finetune`)
        (3) supervised from scratch for pre + fine-tuning steps (the recipe of (1), longer)
        plus the few-shot accuracy of the MPP backbone (of every model with --all-fewshot).
posemb  recipes/cifar10/scratch.yaml for `--steps` steps (warm-up 20) with each model.posemb, then its
        top-1 on 20% of the test split (2,000 images) and few-shot accuracy.
where   the same for Table 8's other rows: the learned table added before every block (model.posemb_where
        every_layer: a table per block; every_layer_shared: one table), and the default again with
        train.seed 1 (and seed 0 rerun), so the run-to-run noise of one seed is visible next to the
        differences.

Few-shot: recipes/fewshot/cifar10.yaml on 5% of the training split (2,500 images) and 20% of the test
split (2,000), 1/5/10/25 shots x 3 seeds, to keep each evaluation short on a shared CPU.

Each `vit` command runs under `flock /tmp/vit-heavy.lock nice -n 5` (the machine is shared), one at a
time (`--locked`: the caller already holds the lock for the whole benchmark, e.g.
`flock /tmp/vit-heavy.lock python benchmarks/mpp_posemb_cifar10.py where --locked ...`); results are kept in RUNS/bench-<part>.json so an interrupted benchmark continues where it stopped.
One seed (train.seed 0) unless a row says otherwise. Prints a markdown table for benchmarks/README.md.
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
LOCK = ["flock", "/tmp/vit-heavy.lock"]
VIT = ["nice", "-n", "5", sys.executable, "-m", "vitcli"]
KINDS = ("learned", "none", "learned_2d", "relative", "sincos2d")  # the five of Table 8 (relative_2d: an option)


class Bench:
    """Runs `vit` commands once each, remembering their JSON results and wall times."""

    def __init__(self, runs: Path, part: str, locked: bool = False):
        self.runs = runs
        self.vit = VIT if locked else [*LOCK, *VIT]
        self.path = runs / f"bench-{part}.json"
        self.state = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def step(self, key: str, args: list[str]) -> dict:
        shown = "vit " + shlex.join(args)
        if key in self.state and self.state[key]["command"] == shown:
            return self.state[key]["result"]
        out = Path(args[args.index("--out") + 1]) if "--out" in args else None
        if out is not None and (out / "results.json").is_file():  # finished by an interrupted benchmark
            result = json.loads((out / "results.json").read_text())
            self.state[key] = {"command": shown, "wall_s": None, "result": result}
            self.path.write_text(json.dumps(self.state, indent=1))
            return result
        print(f"[{key}] {shown}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run([*self.vit, *args, "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
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
                                        "--set", f"data.source={data}", "--set", "data.train_split=train[:5%]",
                                        "--set", "data.eval_split=test[:20%]"])
    return {shot: r["mean"] for shot, r in next(iter(out["results"].values())).items()}


def top1(result: dict) -> float:
    return result.get("top1", float("nan"))


def mpp(bench: Bench, data: str, runs: Path, pre_steps: int, ft_steps: int, all_fewshot: bool,
        scratch: bool = True) -> None:
    src = ["--set", f"data.source={data}"]
    ft_len, pre_len = ["--set", f"train.steps={ft_steps}"], ["--set", f"train.steps={pre_steps}"]
    rows = []
    random = bench.step("random-ft", ["pretrain", "recipes/mpp/cifar10_finetune.yaml", *src, *ft_len,
                                      "--out", str(runs / "random-ft")])
    few = (lambda key: fewshot(bench, key, runs / key, data)) if all_fewshot else (lambda key: None)
    rows.append((f"random init + {ft_steps} fine-tuning steps", ft_steps, top1(random), few("random-ft")))
    pre = bench.step("mpp", ["pretrain", "recipes/mpp/cifar10_cpu.yaml", *src, *pre_len,
                             "--out", str(runs / "mpp")])
    print(f"MPP pretraining: {pre}", file=sys.stderr)
    rows.append((f"MPP backbone ({pre_steps} steps), not fine-tuned", pre_steps, float("nan"),
                 fewshot(bench, "mpp", runs / "mpp", data)))
    ft = bench.step("mpp-ft", ["finetune", "recipes/mpp/cifar10_finetune.yaml", "--from", str(runs / "mpp"),
                               *src, *ft_len, "--out", str(runs / "mpp-ft")])
    rows.append((f"MPP {pre_steps} steps + {ft_steps} fine-tuning steps", pre_steps + ft_steps, top1(ft),
                 few("mpp-ft")))
    total = pre_steps + ft_steps
    if not scratch:
        rows.append((f"supervised from scratch, {total} steps (not run: --no-scratch)", total, float("nan"), None))
        return _print_mpp(rows)
    sup = bench.step("scratch", ["pretrain", "recipes/mpp/cifar10_finetune.yaml", *src,
                                 "--set", f"train.steps={total}", "--out", str(runs / "scratch")])
    rows.append((f"supervised from scratch, {total} steps", total, top1(sup), few("scratch")))
    _print_mpp(rows)


def _print_mpp(rows: list) -> None:
    print("| run | steps | test top-1 | 1-shot | 5-shot | 10-shot | 25-shot |\n|---|---|---|---|---|---|---|")
    for name, steps, acc, shots in rows:
        cells = " | ".join(f"{100 * shots[s]:.2f}%" if shots else "-" for s in ("1shot", "5shot", "10shot", "25shot"))
        print(f"| {name} | {steps} | {'-' if acc != acc else f'{100 * acc:.2f}%'} | {cells} |", flush=True)


def posemb(bench: Bench, data: str, runs: Path, steps: int) -> None:
    print("| model.posemb | test top-1 | 1-shot | 5-shot | 10-shot | 25-shot | wall |\n|---|---|---|---|---|---|---|")
    for kind in KINDS:
        _row(bench, kind, kind, ["--set", f"model.posemb={kind}"], data, runs, steps)


def _row(bench: Bench, name: str, key: str, extra: list[str], data: str, runs: Path, steps: int) -> None:
    """One scratch run at the ablation's budget (the recipe plus `extra`), its few-shot numbers, one table row."""
    out = runs / f"posemb-{key}"
    result = bench.step(key, ["pretrain", "recipes/cifar10/scratch.yaml", "--set", f"data.source={data}",
                              *extra, "--set", "train.epochs=null",
                              "--set", f"train.steps={steps}", "--set", "train.checkpoint_every=0",
                              "--set", "schedule.warmup_steps=20", "--set", "data.eval_split=test[:20%]",
                              "--out", str(out)])
    shots = fewshot(bench, key, out, data)
    cells = " | ".join(f"{100 * shots[s]:.2f}%" for s in ("1shot", "5shot", "10shot", "25shot"))
    wall = bench.state[key]["wall_s"]
    print(f"| {name} | {100 * top1(result):.2f}% | {cells} | "
          f"{'-' if wall is None else f'{wall / 60:.1f} min'} |", flush=True)


WHERE_ROWS = (("learned, stem, seed 1", "learned-seed1", ["--set", "train.seed=1"]),
              ("learned, stem, seed 0 again", "learned-seed0", []),  # `posemb`'s learned row, rerun here
              ("learned, every_layer", "learned-every_layer", ["--set", "model.posemb_where=every_layer"]),
              ("learned, every_layer_shared", "learned-every_layer_shared",
               ["--set", "model.posemb_where=every_layer_shared"]))


def where(bench: Bench, data: str, runs: Path, steps: int) -> None:
    """Table 8's every-layer rows and a second seed of the default, at the budget of `posemb`."""
    print("| model.posemb, posemb_where | test top-1 | 1-shot | 5-shot | 10-shot | 25-shot | wall |\n"
          "|---|---|---|---|---|---|---|")
    for name, key, extra in WHERE_ROWS:
        _row(bench, name, key, extra, data, runs, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["mpp", "posemb", "where"])
    parser.add_argument("--data", required=True, help="CIFAR-10 source, e.g. ../shared/data/cifar10")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-mpp")
    parser.add_argument("--steps", type=int, default=120, help="posemb: training steps per choice")
    parser.add_argument("--pre-steps", type=int, default=200, help="mpp: masked-patch pretraining steps")
    parser.add_argument("--ft-steps", type=int, default=200, help="mpp: fine-tuning steps")
    parser.add_argument("--no-scratch", action="store_true", help="mpp: leave out the from-scratch row")
    parser.add_argument("--all-fewshot", action="store_true", help="mpp: few-shot every model, not just the backbone")
    parser.add_argument("--locked", action="store_true", help="the caller holds /tmp/vit-heavy.lock: take it no more")
    args = parser.parse_args()
    bench = Bench(args.runs, args.part, args.locked)
    if args.part == "mpp":
        mpp(bench, args.data, args.runs, args.pre_steps, args.ft_steps, args.all_fewshot, not args.no_scratch)
    elif args.part == "where":
        where(bench, args.data, args.runs, args.steps)
    else:
        posemb(bench, args.data, args.runs, args.steps)


if __name__ == "__main__":
    main()
