"""CIFAR-10 on a CPU: a ViT trained from scratch at 32 px, then the same extra compute spent three ways.

    .venv/bin/python benchmarks/finetune_cifar10.py --data ../shared/data/cifar10

  scratch  `vit pretrain recipes/cifar10/scratch.yaml` at 32 px (also the issue-3 benchmark: test top-1
           and wall time of a from-scratch run on this machine)
  eval@48  the scratch model at 48 px right after resampling its position embeddings, no training step
  (a)      fine-tuned further at 32 px             } recipes/finetune/cifar10_48.yaml; (a) runs more steps
  (b)      fine-tuned at 48 px, interpolated posemb } so that (a), (b) and (c) cost the same multiply-adds
  (c)      as (b), patch position embeddings re-initialised (trunc. normal, std 0.02) instead

Every step is a `vit` command (printed before it runs, progress on stderr); their JSON results and wall
times are kept in RUNS/bench-finetune.json, so an interrupted benchmark continues where it stopped
(`--again` reruns everything). Prints a markdown table for benchmarks/README.md. Commands run with
OMP_WAIT_POLICY=PASSIVE unless set. Wall times depend on what else runs on the machine: on a shared CPU
they are approximate.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIT = [sys.executable, "-m", "vitcli"]
SCRATCH_RECIPE = "recipes/cifar10/scratch.yaml"
FINETUNE_RECIPE = "recipes/finetune/cifar10_48.yaml"


class Bench:
    """Runs `vit` commands once each, remembering their results in a JSON file."""

    def __init__(self, runs: Path, again: bool):
        self.runs = runs
        self.state_path = runs / "bench-finetune.json"
        self.state = {} if again or not self.state_path.is_file() else json.loads(self.state_path.read_text())

    def step(self, key: str, args: list[str]) -> dict:
        """Run `vit ARGS --json` (unless recorded already); return its JSON result, wall time and command."""
        shown = "vit " + shlex.join(args)
        if key in self.state and self.state[key]["command"] == shown:
            print(f"[{key}] done earlier: {shown}", file=sys.stderr)
            return self.state[key]
        print(f"[{key}] {shown}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run([*VIT, *args, "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"[{key}] failed with exit code {proc.returncode}: {shown}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result.pop("per_class_top1", None)
        self.state[key] = {"command": shown, "wall_s": round(wall, 1), "result": result}
        self.runs.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(self.state, indent=1))
        return self.state[key]


def matched_steps(run: Path, steps_48: int) -> int:
    """Steps at 32 px that cost the multiply-adds of `steps_48` steps at 48 px (same batch)."""
    from vitcli.recipe.config import ModelCfg
    from vitcli.models import macs, resolve_variant

    desc = json.loads((run / "config.json").read_text())["vit_model"]
    keys = ("name", "width", "depth", "heads", "mlp_dim", "patch")
    variant = resolve_variant(ModelCfg(**{k: desc[k] for k in keys}))
    return round(steps_48 * macs(variant, (48, 48), 10) / macs(variant, (32, 32), 10))


def reinit_posemb(run: Path, out: Path, res: int, seed: int = 0) -> Path:
    """A copy of `run`'s final weights for `res` px whose patch position embeddings are drawn afresh.

    A class token's embedding is kept (it marks no position); the patch positions get timm's
    initialisation (truncated normal, std 0.02), at the new grid, so nothing is resampled on loading.
    """
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / "model.safetensors"))
    config = json.loads((run / "config.json").read_text())
    patch, dim = config["vit_model"]["patch"], state["pos_embed"].shape[-1]
    prefix = 1 if "cls_token" in state else 0  # global-average-pooling models have no class token
    fresh = torch.empty(1, (res // patch) ** 2, dim)
    torch.nn.init.trunc_normal_(fresh, std=0.02, generator=torch.Generator().manual_seed(seed))
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :prefix], fresh], dim=1)
    config["vit_model"]["res"] = [res, res]
    config["model_args"]["img_size"] = [res, res]
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def finetune_steps() -> int:
    """train.steps of the 48 px fine-tuning recipe."""
    from vitcli import recipe

    return recipe.load(ROOT / FINETUNE_RECIPE).train.steps


def run_all(bench: Bench, data: str, runs: Path) -> list[dict]:
    """Every step of the benchmark, in order; returns one table row per step."""
    scratch = runs / "bench-scratch"
    rows = []
    s = bench.step("scratch", ["pretrain", SCRATCH_RECIPE, "--set", f"data.source={data}", "--out", str(scratch)])
    rows.append(_row("from scratch, 32 px (issue 3)", 32, s, s["result"]["steps"]))
    e = bench.step("eval48", ["eval", "--from", str(scratch), "--res", "48", "--split", "test"])
    rows.append(_row("scratch model at 48 px, posemb interpolated, no fine-tuning", 48, e, 0))
    steps_48 = finetune_steps()
    steps_32 = matched_steps(scratch, steps_48)
    a = bench.step("a", ["finetune", FINETUNE_RECIPE, "--from", str(scratch), "--res", "32",
                         "--set", f"train.steps={steps_32}", "--out", str(runs / "bench-a-32px")])
    rows.append(_row("(a) + fine-tune at 32 px", 32, a, steps_32))
    b = bench.step("b", ["finetune", FINETUNE_RECIPE, "--from", str(scratch), "--out", str(runs / "bench-b-48px")])
    rows.append(_row("(b) + fine-tune at 48 px, posemb interpolated", 48, b, steps_48))
    reinit = reinit_posemb(scratch, runs / "bench-posemb-reinit", 48)
    c = bench.step("c", ["finetune", FINETUNE_RECIPE, "--from", str(reinit), "--out", str(runs / "bench-c-48px")])
    rows.append(_row("(c) + fine-tune at 48 px, posemb re-initialised", 48, c, steps_48))
    return rows


def _row(what: str, res: int, step: dict, steps: int) -> dict:
    result = step["result"]
    return {"what": what, "res": res, "steps": steps, "wall_s": step["wall_s"], "top1": result["top1"],
            "command": step["command"]}


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table, commands in a numbered list below it."""
    lines = ["| run | res | steps | wall time | CIFAR-10 test top-1 |", "|---|---:|---:|---:|---:|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i}. {r['what']} | {r['res']} | {r['steps']} | {r['wall_s'] / 60:.1f} min "
                     f"| {100 * r['top1']:.2f}% |")
    lines.append("")
    lines += [f"{i}. `{r['command']}`" for i, r in enumerate(rows, 1)]
    return "\n".join(lines)


def main() -> None:
    """Parse options, run (or reuse) every step, print the markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/cifar10", help="CIFAR-10: hub id or local copy")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where the run directories go (relative "
                   "paths: to the repository root)")
    p.add_argument("--again", action="store_true", help="rerun every step (their --out must not exist)")
    args = p.parse_args()
    data = os.path.relpath(Path(args.data).resolve(), ROOT) if Path(args.data).exists() else args.data
    os.chdir(ROOT)  # relative paths in the printed commands are relative to the repository root
    # Spinning OpenMP threads lose ~10x on a CPU shared with other jobs (benchmarks/README.md, issue 8).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    rows = run_all(Bench(args.runs, args.again), data, args.runs)
    print(markdown(rows))


if __name__ == "__main__":
    main()
